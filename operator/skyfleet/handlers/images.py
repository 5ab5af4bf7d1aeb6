"""Image: resolve the native id for every credential and region a Deployment uses it with."""

from __future__ import annotations

import time
from typing import Any

import kopf

from skyfleet.api.image import Image, ImageStatus, ResolvedImage
from skyfleet.connectors import ConnectorError
from skyfleet.handlers.bake import bake_once
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of, event, now, wait_or_wake
from skyfleet.reconcile.conditions import find_condition, set_condition
from skyfleet.reconcile.images import ImageError, effective_image, image_uses, select_source
from skyfleet.reconcile.messages import error_message, safe_message


@kopf.daemon(GROUP, VERSION, "images", id="resolve", cancellation_timeout=2.0)
async def resolve_loop(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    images: kopf.Index[Any, Any] = kwargs["images"]
    deployments: kopf.Index[Any, Any] = kwargs["deployments"]
    credentials: kopf.Index[Any, Any] = kwargs["credentials"]
    assert namespace is not None  # every skyfleet.io kind is namespaced
    ctx = ctx_of(memo)
    wake = ctx.wakeup("image", namespace, name)
    while not stopped:
        wake.clear()
        started = time.monotonic()
        period = ctx.settings.resync_period
        try:
            if (body.get("spec") or {}).get("build"):
                # A baked Image: the bake loop resolves (and bakes) instead; see handlers/bake.py.
                period = await bake_once(
                    ctx=ctx,
                    namespace=namespace,
                    name=name,
                    body=body,
                    images=images,
                    deployments=deployments,
                    credentials=credentials,
                    in_use=kwargs.get("images_in_use"),
                )
            else:
                await resolve_once(
                    ctx=ctx,
                    namespace=namespace,
                    name=name,
                    body=body,
                    images=images,
                    deployments=deployments,
                    credentials=credentials,
                )
        except Exception:
            ctx.metrics.reconciled("image", started, error=True)
            logger.exception("resolving image %s/%s failed", namespace, name)
        else:
            ctx.metrics.reconciled("image", started)
        await wait_or_wake(wake, period, stopped)


@kopf.on.event(GROUP, VERSION, "images")
async def wake_image(*, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    """Resolve again, and let Deployments booting this Image (or a child of it) plan again."""
    ctx = ctx_of(memo)
    ctx.metrics.watch_event("images")
    ctx.wake("image", namespace or "", name)
    deployments: kopf.Index[Any, Any] = kwargs["deployments"]
    for dep in deployments.get(namespace or "", []):
        ctx.wake("deployment", namespace or "", dep.metadata.name)


@kopf.on.event(GROUP, VERSION, "deployments")
async def wake_images_of_deployment(*, namespace: str | None, spec: kopf.Spec, memo: Any, **_: Any) -> None:
    """A Deployment may start using an Image on a new cloud: resolve it there now."""
    ctx = ctx_of(memo)
    for group in spec.get("nodeGroups") or []:
        if isinstance(group, dict) and group.get("imageRef"):
            ctx.wake("image", namespace or "", group["imageRef"])


async def resolve_once(
    *,
    ctx: Context,
    namespace: str,
    name: str,
    body: kopf.Body,
    images: kopf.Index[Any, Any],
    deployments: kopf.Index[Any, Any],
    credentials: kopf.Index[Any, Any],
) -> None:
    image = Image.model_validate(dict(body))
    old = image.status or ImageStatus()
    gen = image.metadata.generation or None
    ts = now()
    resolved: list[ResolvedImage] = []
    problems: list[tuple[str, str]] = []
    try:
        eff = effective_image(name, lambda n: next(iter(images.get((namespace, n), [])), None))
    except ImageError as exc:
        eff = None
        problems.append(("ParentNotFound" if "not found" in str(exc) else "InvalidImage", error_message(exc)))
    if eff is not None:
        regions = {key[1]: view.region for key, store in credentials.items() if key[0] == namespace for view in store}
        uses = image_uses(name, deployments.get(namespace, []), regions)
        for credential, region in uses:
            view = regions.get(credential, "?")
            if view == "?":
                problems.append(("CredentialNotFound", f"CloudCredential {credential!r} does not exist"))
                continue
            try:
                connector = await ctx.clouds.connector(namespace, credential, region)
                source = select_source(
                    eff.sources, credential=credential, provider=connector.config.provider, region=region
                )
                if source is None:
                    problems.append(("NoMatch", f"no entry for credential {credential!r} in region {region}"))
                    continue
                found = await connector.resolve_image(
                    image_id=source.id,
                    name_pattern=source.lookup.name_pattern if source.lookup else None,
                    owner=source.lookup.owner if source.lookup else None,
                )
                resolved.append(ResolvedImage(credential=credential, region=region or "", id=found.id, name=found.name))
            except CredentialUnavailable as exc:
                problems.append(("CredentialNotReady", f"{credential}: {exc.message}"))
            except ConnectorError as exc:
                reason = "NoMatch" if type(exc).__name__ == "NotFound" else "ResolutionFailed"
                problems.append((reason, f"{credential}/{region}: {error_message(exc)}"))
    if problems:
        reason, _ = problems[0]
        message = safe_message("; ".join(m for _, m in problems), limit=1024)
        conds = set_condition(old.conditions, "Ready", False, reason, message, now=ts, generation=gen)
        phase = "Unresolved"
    else:
        message = (
            f"resolved on {len(resolved)} credential/region pairs" if resolved else "not used by any Deployment yet"
        )
        conds = set_condition(old.conditions, "Ready", True, "Resolved", message, now=ts, generation=gen)
        phase = "Resolved"
    status = ImageStatus(
        observed_generation=gen,
        phase=phase,
        conditions=conds,
        resolved=resolved or None,
        message=message if problems else None,
        # An Image whose spec.build was removed keeps the record of what it baked (finalizer).
        bakes=old.bakes,
        generations=old.generations,
    )
    before = find_condition(old.conditions, "Ready")
    if await ctx.write_status("images", namespace, name, dict(body.get("status") or {}), status.to_api()):
        after = find_condition(conds, "Ready")
        changed = before is None or before.reason != (after.reason if after else None)
        if after is not None and changed and ctx.announce_once("image", namespace, name, after.reason):
            event(body, "Normal" if not problems else "Warning", after.reason, message)
