"""Image: resolve the native id for every credential and region a Deployment uses it with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kopf

from skyfleet.api.image import Image, ImageStatus, ResolvedImage
from skyfleet.connectors import ConnectorError
from skyfleet.contract.errors import NotFound
from skyfleet.handlers.bake import bake_once
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of, now
from skyfleet.handlers.loop import LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.images import (
    EffectiveImage,
    ImageError,
    effective_image,
    image_uses,
    select_source,
)
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
    assert namespace is not None  # every skyfleet.io kind is namespaced
    ctx = ctx_of(memo)

    async def once() -> float:
        if (body.get("spec") or {}).get("build"):
            # A baked Image: the bake loop resolves (and bakes) instead; see handlers/bake.py.
            return await bake_once(
                ctx=ctx,
                namespace=namespace,
                name=name,
                body=body,
                images=kwargs["images"],
                deployments=kwargs["deployments"],
                credentials=kwargs["credentials"],
                in_use=kwargs.get("images_in_use"),
            )
        await resolve_once(
            ctx=ctx,
            namespace=namespace,
            name=name,
            body=body,
            images=kwargs["images"],
            deployments=kwargs["deployments"],
            credentials=kwargs["credentials"],
        )
        return ctx.settings.resync_period

    spec = LoopSpec("image", namespace, name, period=ctx.settings.resync_period)
    await run_loop(ctx, spec, body=body, stopped=stopped, logger=logger, once=once)


@kopf.on.event(GROUP, VERSION, "images")
async def wake_image(*, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    """Resolve again, and let Deployments booting this Image (or a child of it) plan again."""
    ctx = ctx_of(memo)
    ctx.metrics.watch_event("images")
    ctx.wake("image", namespace or "", name)
    deployments: kopf.Index[Any, Any] = kwargs["deployments"]
    for dep in deployments.get(namespace or "", []):
        ctx.wake("deployment", namespace or "", dep.name)


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
    """Resolve the Image on every (credential, region) a Deployment uses it with; write status."""
    image = Image.model_validate(dict(body))
    old = image.status or ImageStatus()
    generation = image.metadata.generation or None
    # What the last pass resolved for this very spec: kept through a failure that says nothing
    # about the image (the cloud or the credential unavailable for a moment), so a hiccup during
    # a resync neither flips the Image to not Ready nor stops Deployments from placing there.
    last = {(r.credential, r.region): r for r in old.resolved or []} if old.observed_generation == generation else {}
    resolved: list[ResolvedImage] = []
    problems: list[tuple[str, str]] = []
    kept: list[str] = []
    try:
        eff = effective_image(name, lambda n: next(iter(images.get((namespace, n), [])), None))
    except ImageError as exc:
        problems.append((exc.reason, error_message(exc)))
    else:
        regions = {key[1]: view.region for key, store in credentials.items() if key[0] == namespace for view in store}
        for credential, region in image_uses(name, deployments.get(namespace, []), regions):
            if credential not in regions:
                problems.append(("CredentialNotFound", f"CloudCredential {credential!r} does not exist"))
                continue
            found = await _resolve_on(ctx, namespace, eff, credential, region)
            if isinstance(found, ResolvedImage):
                resolved.append(found)
            elif isinstance(found, Unavailable) and (credential, region or "") in last:
                resolved.append(last[(credential, region or "")])
                kept.append(found.message)
            else:
                problems.append((found.reason, found.message))
    status = _status(old, resolved, problems, kept, generation=generation)
    await write_status(ctx, body, body.get("status"), status)


@dataclass(frozen=True)
class Problem:
    """Why there is no native image on one credential and region."""

    reason: str
    message: str


class Unavailable(Problem):
    """The cloud or the credential could not answer now: says nothing about the image itself."""


async def _resolve_on(
    ctx: Context, namespace: str, eff: EffectiveImage, credential: str, region: str | None
) -> ResolvedImage | Problem:
    """The native image on one credential and region, or why there is none."""
    try:
        connector = await ctx.clouds.connector(namespace, credential, region)
        source = select_source(eff.sources, credential=credential, provider=connector.config.provider, region=region)
        if source is None:
            return Problem("NoMatch", f"no entry for credential {credential!r} in region {region}")
        found = await connector.resolve_image(
            image_id=source.id,
            name_pattern=source.lookup.name_pattern if source.lookup else None,
            owner=source.lookup.owner if source.lookup else None,
        )
    except CredentialUnavailable as exc:
        return Unavailable("CredentialNotReady", f"{credential}: {exc.message}")
    except NotFound as exc:
        return Problem("NoMatch", f"{credential}/{region}: {error_message(exc)}")
    except ConnectorError as exc:
        message = f"{credential}/{region}: {error_message(exc)}"
        if exc.retryable:
            return Unavailable("ResolutionFailed", message)
        # OwnerRequired: a name lookup on a public catalogue (EC2) that names no publisher.
        return Problem("OwnerRequired" if exc.code == "OwnerRequired" else "ResolutionFailed", message)
    return ResolvedImage(credential=credential, region=region or "", id=found.id, name=found.name)


def _status(
    old: ImageStatus,
    resolved: list[ResolvedImage],
    problems: list[tuple[str, str]],
    kept: list[str],
    *,
    generation: int | None,
) -> ImageStatus:
    ts = now()
    if problems:
        reason, _ = problems[0]
        message = safe_message("; ".join(m for _, m in problems), limit=1024)
        conds = set_condition(old.conditions, "Ready", False, reason, message, now=ts, generation=generation)
        phase = "Unresolved"
    else:
        message = (
            f"resolved on {len(resolved)} credential/region pairs" if resolved else "not used by any Deployment yet"
        )
        if kept:
            message += safe_message("; the last resolved id kept where it could not be refreshed: " + "; ".join(kept))
        conds = set_condition(old.conditions, "Ready", True, "Resolved", message, now=ts, generation=generation)
        phase = "Resolved"
    return old.model_copy(
        update={
            "phase": phase,
            "conditions": conds,
            "resolved": resolved or None,
            "message": message if problems else None,
        }
    )
