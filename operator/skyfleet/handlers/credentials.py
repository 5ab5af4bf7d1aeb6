"""CloudCredential: verify, report capabilities, hold its deletion while Instances need it.

Its Secret is kept by an admission policy (api/policy.py, the chart's secret-protection.yaml),
not by anything here: the operator never writes Secrets.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import kopf

from skyfleet.api.cloudcredential import Capabilities, CloudCredential, CloudCredentialStatus
from skyfleet.connectors import ConnectorError, Unsupported
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, ctx_of, now
from skyfleet.handlers.indexes import Lookup, by_credential
from skyfleet.handlers.loop import LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.credentials import verdict_for
from skyfleet.reconcile.messages import error_message

RETRY_SOON = 30.0


def _in_use(index: Lookup, namespace: str, name: str) -> int:
    return len(index.get((namespace, name), ()))


@kopf.daemon(GROUP, VERSION, "cloudcredentials", id="verify", cancellation_timeout=5.0)
async def verify_loop(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """Verify now, then every verifyIntervalSeconds, and whenever the spec changes."""
    assert namespace is not None  # every skyfleet.io kind is namespaced
    ctx = ctx_of(memo)
    spec = LoopSpec("cloudcredential", namespace, name, period=ctx.settings.verify_period, retry=RETRY_SOON)
    await run_loop(
        ctx,
        spec,
        body=body,
        stopped=stopped,
        logger=logger,
        once=lambda: verify_once(namespace, name, body, memo, logger),
    )


@kopf.on.update(GROUP, VERSION, "cloudcredentials", field="spec")
async def spec_changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    ctx_of(memo).wake("cloudcredential", namespace or "", name)


async def verify_once(namespace: str, name: str, body: kopf.Body, memo: Any, logger: kopf.Logger) -> float:
    ctx = ctx_of(memo)
    cred = CloudCredential.model_validate(dict(body))
    old_raw = dict(body.get("status") or {})
    old = cred.status or CloudCredentialStatus()
    period = float(cred.spec.verify_interval_seconds or ctx.settings.verify_period)
    error: BaseException | None = None
    secret_found = True
    capabilities: Capabilities | None = old.capabilities
    message = ""
    try:
        _, config = await ctx.clouds.load(namespace, name)
        connector = await ctx.clouds.connector(namespace, name)
        await connector.verify()
        caps = connector.capabilities
        if not caps.tags:
            # Ownership, adoption after a lost answer, orphans and cleanup all read owner tags.
            raise Unsupported(
                "this connector cannot tag VMs, and Skyfleet knows the VMs it owns only by their tags",
                provider=config.provider,
            )
        # Only what the status schema shows (the connector may know more, e.g. size limits).
        capabilities = Capabilities(
            **{k: v for k, v in dataclasses.asdict(caps).items() if k in Capabilities.model_fields}
        )
        message = f"{config.provider} accepted the credentials"
    except CredentialUnavailable as exc:
        secret_found = exc.reason != "SecretNotFound"
        error, message = exc, error_message(exc)
    except ConnectorError as exc:
        error, message = exc, error_message(exc)
    except Exception as exc:  # a refused connection below the connector is still "unreachable"
        logger.warning("verifying %s/%s failed: %s", namespace, name, type(exc).__name__)
        error, message = exc, f"{type(exc).__name__}: {error_message(exc)}"
    verdict = verdict_for(error, secret_found=secret_found)
    gen = cred.metadata.generation or None
    status = old.model_copy(
        update={
            "phase": verdict.phase,
            "conditions": set_condition(
                old.conditions, "Ready", verdict.ready, verdict.reason, message, now=now(), generation=gen
            ),
            "capabilities": capabilities,
        }
    )
    # The observe loop writes this status too (its own conditions): write only over what was read.
    await write_status(ctx, body, old_raw, status, resource_version=body.metadata.get("resourceVersion"))
    return min(RETRY_SOON, period) if verdict.retry_soon else period


@kopf.on.delete(GROUP, VERSION, "cloudcredentials")
async def deleting(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Hold the deletion while Instances still need this credential to destroy their VMs."""
    instances_by_credential = by_credential(kwargs)
    assert namespace is not None
    ctx = ctx_of(memo)
    in_use = _in_use(instances_by_credential, namespace, name)
    if in_use:
        raise kopf.TemporaryError(f"{in_use} Instances still use this credential", delay=5)
    await ctx.clouds.forget(namespace, name)
    ctx.metrics.forget_credential(namespace, name)
    await asyncio.sleep(0)
