"""CloudCredential: verify, report capabilities, keep the Secret while Instances need it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import kopf

from skyfleet.api.cloudcredential import Capabilities, CloudCredential, CloudCredentialStatus
from skyfleet.connectors import ConnectorError
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, ctx_of, event, now, wait_or_wake
from skyfleet.handlers.kube import Conflict
from skyfleet.reconcile.conditions import find_condition, set_condition
from skyfleet.reconcile.credentials import verdict_for
from skyfleet.reconcile.messages import error_message

RETRY_SOON = 30.0
CONFLICT_DELAY = 1.0


def _in_use(index: kopf.Index[Any, Any], namespace: str, name: str) -> int:
    return sum(1 for _ in index.get((namespace, name), []))


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
    wake = ctx.wakeup("cloudcredential", namespace, name)
    while not stopped:
        started = time.monotonic()
        try:
            delay = await verify_once(namespace, name, body, memo, logger)
        except Conflict:
            # The observation loop wrote meanwhile; verify again from the fresh object.
            ctx.metrics.reconciled("cloudcredential", started)
            delay = CONFLICT_DELAY
        except Exception:
            ctx.metrics.reconciled("cloudcredential", started, error=True)
            logger.exception("verifying %s/%s failed", namespace, name)
            delay = RETRY_SOON
        else:
            ctx.metrics.reconciled("cloudcredential", started)
        await wait_or_wake(wake, delay, stopped)


@kopf.on.update(GROUP, VERSION, "cloudcredentials", field="spec")
async def spec_changed(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    ctx_of(memo).wake("cloudcredential", namespace or "", name)


async def verify_once(namespace: str, name: str, body: kopf.Body, memo: Any, logger: kopf.Logger) -> float:
    ctx = ctx_of(memo)
    cred = CloudCredential.model_validate(dict(body))
    old_raw = dict(body.get("status") or {})
    version = body.metadata.get("resourceVersion")
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
    ts = now()
    gen = cred.metadata.generation or None
    before = find_condition(old.conditions, "Ready")
    status = CloudCredentialStatus(
        observed_generation=gen,
        phase=verdict.phase,
        conditions=set_condition(
            old.conditions, "Ready", verdict.ready, verdict.reason, message, now=ts, generation=gen
        ),
        capabilities=capabilities,
        instances=old.instances,
        orphaned_vms=old.orphaned_vms,
    )
    written = await ctx.write_status(
        "cloudcredentials", namespace, name, old_raw, status.to_api(), resource_version=version
    )
    changed = before is None or before.reason != verdict.reason
    if written and changed and ctx.announce_once("cloudcredential", namespace, name, verdict.reason):
        event(body, "Normal" if verdict.ready else "Warning", verdict.reason, message)
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
    instances_by_credential: kopf.Index[Any, Any] = kwargs["instances_by_credential"]
    assert namespace is not None
    ctx = ctx_of(memo)
    in_use = _in_use(instances_by_credential, namespace, name)
    if in_use:
        raise kopf.TemporaryError(f"{in_use} Instances still use this credential", delay=5)
    await ctx.clouds.forget(namespace, name)
    ctx.metrics.forget_credential(namespace, name)
    await asyncio.sleep(0)
