"""Bake loop: native images from an Image's recipe, per credential and region in use.

Called by the Image's resolve loop (``handlers/images.py``) for Images with ``spec.build``;
every decision is ``reconcile/bake.py``'s. Each pass, per target (a credential and region a
Deployment boots the Image on, plus ``copyToRegions``): look at the cloud, ask ``next_step``,
persist the status it returns *before* the cloud call it names, make the call, persist what the
call answered. A SIGKILL anywhere leaves a status that resumes: a launch whose answer was lost
is adopted by the builder's deterministic owner tags, an image request by its bake key.

After the targets: record new generations, deregister those beyond ``keep`` that no Instance
boots, delete stray builders, and publish ``status.resolved`` (the baked id and bake key per
target) that Deployments boot from. Deleting the Image deregisters what it made (finalizer,
``deletionPolicy``). Console output and user data never leave this module: a failed recipe is
reported as such, with its reason, not with the console's content.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from skyfleet.api.image import BakeTarget, BuilderCloud, Image, ImageBuild, ImageStatus, ResolvedImage
from skyfleet.connectors import (
    BakedImage,
    Connector,
    ConnectorError,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    NodeState,
    NotFound,
    OwnershipMismatch,
    OwnerTags,
    Unsupported,
)
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of, now
from skyfleet.handlers.indexes import inline_index
from skyfleet.handlers.status import write_status
from skyfleet.reconcile import bake
from skyfleet.reconcile.bake import Do, Observed, Step
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.images import EffectiveImage, ImageError, effective_image, image_uses, select_source
from skyfleet.reconcile.messages import error_message, safe_message

__all__ = ["bake_cleanup", "bake_once", "images_in_use"]

log = logging.getLogger("skyfleet.bake")

# Steps one target may take in one pass before the loop looks at the other targets again.
MAX_STEPS = 8
# Events per phase a target enters: (type, reason).
_ENTERED = {
    "Launching": ("Normal", "BakeStarted"),
    "Provisioning": ("Normal", "BuilderLaunched"),
    "Snapshotting": ("Normal", "Snapshotting"),
    "Available": ("Normal", "BakeSucceeded"),
    "Failed": ("Warning", "BakeFailed"),
}


@inline_index("instances")
def images_in_use(*, namespace: str | None, body: kopf.Body, **_: Any) -> dict[str, tuple[str, ...]]:
    """Native image ids Instances boot (or are about to): retention and deletion spare them."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    # Interned: a fleet boots a handful of images, 10,000 Instances share their ids.
    return {
        namespace or "": tuple(
            sys.intern(i) for i in (spec.get("imageId"), status.get("imageId")) if i and isinstance(i, str)
        )
    }


def _in_use(index: kopf.Index[Any, Any] | None, namespace: str) -> set[str]:
    return {i for ids in (index.get(namespace, []) if index is not None else []) for i in ids}


class _SubnetUnsupported(ImageError):
    """builder.clouds[].subnet on a provider whose connector cannot apply it."""


@dataclass
class _Target:
    credential: str
    region: str
    connector: Connector
    key: str
    owner: ImageOwnerTags
    user_data: str = ""
    base_image_id: str | None = None
    source_region: str | None = None  # a copy target: the region its image comes from


class _Status:
    """The Image's status as this pass last wrote it; ``save`` writes only what changed."""

    def __init__(self, ctx: Context, namespace: str, name: str, body: kopf.Body, raw: Mapping[str, Any]) -> None:
        self.ctx, self.namespace, self.name, self.body = ctx, namespace, name, body
        self.raw: dict[str, Any] = dict(raw)
        self.status = ImageStatus.model_validate(self.raw) if self.raw else ImageStatus()

    def bake(self, credential: str, region: str) -> BakeTarget | None:
        return next((b for b in self.status.bakes or [] if (b.credential, b.region) == (credential, region)), None)

    async def put(self, target: BakeTarget | None, *, credential: str, region: str) -> None:
        before = self.bake(credential, region)
        others = [b for b in self.status.bakes or [] if (b.credential, b.region) != (credential, region)]
        bakes = sorted([*others, *([target] if target is not None else [])], key=lambda b: (b.credential, b.region))
        update: dict[str, Any] = {"bakes": bakes or None}
        if target is not None and target.phase == "Available":
            # The baked image is a generation from the write that shows it Available: no reader
            # (a deletion with deletionPolicy Orphan, retention) sees one without the other.
            gens = bake.add_generation(self.status.generations or [], target)
            if gens != list(self.status.generations or []):
                update["generations"] = gens
        self.status = self.status.model_copy(update=update)
        await self.save()
        if target is not None and (
            before is None or before.phase != target.phase or before.bake_key != target.bake_key
        ):
            kind, reason = _ENTERED[target.phase]
            what = f"{credential}/{region}"
            if target.phase == "Failed":
                message = f"{what}: {target.reason}: {target.message or ''}"
            elif target.phase == "Available":
                message = f"{what}: baked image {target.image_id} is available (key {target.bake_key[:12]})"
            else:
                message = f"{what}: {target.phase.lower()} (key {target.bake_key[:12]}, attempt {target.attempt})"
            self.ctx.event(self.body, kind, reason, message)

    async def save(self) -> None:
        # The Ready change is announced by the pass's end (``_finish``), not by every step's save.
        self.raw = await write_status(self.ctx, self.body, self.raw, self.status, announce=False)


# -- one pass ---------------------------------------------------------------------------------


async def bake_once(
    *,
    ctx: Context,
    namespace: str,
    name: str,
    body: kopf.Body,
    images: kopf.Index[Any, Any],
    deployments: kopf.Index[Any, Any],
    credentials: kopf.Index[Any, Any],
    in_use: kopf.Index[Any, Any] | None,
) -> float:
    """One pass of the bake loop for a baked Image; returns when to look again (seconds)."""
    resync = ctx.settings.resync_period
    # Read, not the watched body: the status this pass resumes from must include the last
    # pass's writes, which the watch may not have brought back yet (every target's record is
    # written as one list, so a stale copy would set another target back).
    fresh = await ctx.kube.get("images", namespace, name)
    if fresh is None:
        return resync
    image = Image.model_validate(fresh)
    build = image.spec.build
    if build is None or image.metadata.deletion_timestamp is not None:
        return resync
    st = _Status(ctx, namespace, name, body, fresh.get("status") or {})
    problems: list[tuple[str, str]] = []
    try:
        eff = effective_image(name, lambda n: next(iter(images.get((namespace, n), [])), None))
    except ImageError as exc:
        reason = "ParentNotFound" if "not found" in str(exc) else "InvalidImage"
        await _finish(st, image, [], [(reason, error_message(exc))], set())
        return resync
    regions = {key[1]: view.region for key, store in credentials.items() if key[0] == namespace for view in store}
    uses = [(c, r or "") for c, r in image_uses(name, deployments.get(namespace, []), regions)]
    targets: list[_Target] = []
    for credential, region in uses:
        if credential not in regions:
            problems.append(("CredentialNotFound", f"CloudCredential {credential!r} does not exist"))
            continue
        try:
            targets.append(await _prepare(ctx, image=image, eff=eff, build=build, credential=credential, region=region))
        except CredentialUnavailable as exc:
            problems.append(("CredentialNotReady", f"{credential}: {exc.message}"))
        except ConnectorError as exc:
            reason = "NoMatch" if isinstance(exc, NotFound) else "ResolutionFailed"
            problems.append((reason, f"{credential}/{region}: {error_message(exc)}"))
        except ImageError as exc:
            reason = "UnsupportedProvider" if isinstance(exc, _SubnetUnsupported) else "NoMatch"
            problems.append((reason, error_message(exc)))
    targets += await _copies(ctx, image, build, targets, problems)

    requeue = resync
    for t in targets:
        requeue = min(requeue, await _advance(st, t, build))
        requeue = min(requeue, await _share(st, t, build) or requeue)
    # A target that could not be prepared this pass (a credential not ready, a lookup that
    # failed) is still wanted: its bake waits, it is not torn down.
    wanted = {*uses, *((c, r) for c, _ in uses for r in build.copy_to_regions or [])}
    for stale in [b for b in st.status.bakes or [] if (b.credential, b.region) not in wanted]:
        # No Deployment uses this target any more: finish its clean-up, then forget it.
        requeue = min(requeue, await _retire(ctx, st, image, stale))
    await _retention(ctx, st, image, build, _in_use(in_use, namespace))
    await _sweep_builders(ctx, st, image, targets)
    await _finish(st, image, uses, problems, wanted)
    providers = {(t.credential, t.region): t.connector.config.provider for t in targets}
    builders: dict[str, int] = {}
    for b in st.status.bakes or []:
        if b.builder_id and (b.credential, b.region) in providers:
            builders[providers[(b.credential, b.region)]] = builders.get(providers[(b.credential, b.region)], 0) + 1
    ctx.metrics.set_builders(namespace, name, builders)
    return max(1.0, requeue)


async def _prepare(
    ctx: Context, *, image: Image, eff: EffectiveImage, build: ImageBuild, credential: str, region: str
) -> _Target:
    namespace = image.metadata.namespace
    connector = await ctx.clouds.connector(namespace, credential, region or None)
    provider = connector.config.provider
    place = _builder_cloud(build, credential, provider, region)
    if place is not None and place.subnet and not connector.capabilities.subnet:
        # Not launched into the provider's default network instead: the user chose where it runs.
        raise _SubnetUnsupported(
            f"{credential}/{region}: {provider} cannot place a VM in a subnet; remove builder.clouds[].subnet "
            "for it to bake in the default network"
        )
    source = select_source(eff.sources, credential=credential, provider=provider, region=region)
    if source is None:
        raise ImageError(f"no entry for credential {credential!r} in region {region}")
    async with ctx.clouds.single_flight(connector, "images"):
        base = await connector.resolve_image(
            image_id=source.id,
            name_pattern=source.lookup.name_pattern if source.lookup else None,
            owner=source.lookup.owner if source.lookup else None,
        )
    user_data = bake.builder_user_data(eff.recipe)
    key = bake.bake_key(user_data=user_data, base_image_id=base.id, build=build, provider=provider)
    return _Target(credential, region, connector, key, _owner(ctx, image, key), user_data, base.id)


async def _copies(
    ctx: Context, image: Image, build: ImageBuild, baked: list[_Target], problems: list[tuple[str, str]]
) -> list[_Target]:
    """Copy targets: each further region of ``copyToRegions`` no Deployment bakes in directly."""
    direct = {(t.credential, t.region) for t in baked}
    out: list[_Target] = []
    for t in baked:
        for region in build.copy_to_regions or []:
            if (t.credential, region) in direct or any((o.credential, o.region) == (t.credential, region) for o in out):
                continue
            try:
                connector = await ctx.clouds.connector(image.metadata.namespace, t.credential, region)
            except (CredentialUnavailable, ConnectorError) as exc:
                problems.append(("CredentialNotReady", f"{t.credential}/{region}: {error_message(exc)}"))
                continue
            out.append(_Target(t.credential, region, connector, t.key, t.owner, source_region=t.region))
    return out


def _owner(ctx: Context, image: Image, key: str) -> ImageOwnerTags:
    return ImageOwnerTags(
        cluster_id=ctx.cluster_id,
        image_uid=image.metadata.uid,
        bake_key=key,
        namespace=image.metadata.namespace,
        image=image.metadata.name,
    )


async def _observe(t: _Target, current: BakeTarget | None, source: BakeTarget | None) -> Observed:
    conn = t.connector
    caps = conn.capabilities
    supported = caps.image_copy if t.source_region else caps.bake
    if not supported:
        return Observed(supported=False)
    builder = await conn.describe(current.builder_id) if current is not None and current.builder_id else None
    image = None
    if current is not None and current.image_id:
        owner = ImageOwnerTags(
            t.owner.cluster_id, t.owner.image_uid, current.bake_key, t.owner.namespace, t.owner.image
        )
        image = await conn.get_image(current.image_id, owner.to_tags())
    existing = None
    if current is None or current.bake_key != t.key or (current.phase == "Available" and image is None):
        existing = _best(await conn.find_images(t.owner.lookup()))
    line = None
    running = builder is not None and builder.state is NodeState.RUNNING
    if current is not None and current.phase == "Provisioning" and builder is not None and running:
        try:
            # Only the marker line, rebuilt: the rest of the console never leaves this call.
            line = bake.failure_line(await conn.console_output(builder.provider_id))
        except Unsupported:
            line = None
    return Observed(
        builder=builder,
        image=image,
        existing=existing,
        recipe_failed=line is not None,
        failure_line=line,
        supported=True,
    )


def _best(found: list[BakedImage]) -> BakedImage | None:
    """Of several images with one bake key, an available one first, then the newest."""
    if not found:
        return None
    order = {ImageState.AVAILABLE: 0, ImageState.PENDING: 1, ImageState.FAILED: 2}
    return sorted(found, key=lambda i: (order[i.state], -(i.created_at.timestamp() if i.created_at else 0), i.id))[0]


async def _advance(st: _Status, t: _Target, build: ImageBuild, *, deleting: bool = False) -> float:
    """Take the target's steps until it has to wait; returns when to look again."""
    for _ in range(MAX_STEPS):
        current = st.bake(t.credential, t.region)
        source = st.bake(t.credential, t.source_region) if t.source_region else None
        try:
            obs = await _observe(t, current, source)
        except ConnectorError as exc:
            _log_retry(t, "looking at the bake", exc)
            return 30.0
        step = bake.next_step(
            current,
            obs,
            now(),
            credential=t.credential,
            region=t.region,
            key=t.key,
            build=build,
            source=source,
            deleting=deleting,
        )
        if step.status is not None:
            await st.put(step.status, credential=t.credential, region=t.region)
            current = step.status
            if step.action is not Do.REUSE:
                _count(st, t, current)
        try:
            await _execute(st, t=t, build=build, step=step, current=current, source=source)
        except ConnectorError as exc:
            failed = (
                bake.failure(current, step.action, exc.outcome, error_message(exc, redact=[t.user_data]), now())
                if current is not None
                else None
            )
            if failed is None:
                _log_retry(t, step.action.value, exc)
                return 30.0
            await st.put(failed, credential=t.credential, region=t.region)
            _count(st, t, failed)
            continue
        if step.action in (Do.WAIT_BUILDER, Do.WAIT_IMAGE) or (step.action is Do.NOTHING and step.status is None):
            return step.requeue or st.ctx.settings.resync_period
    return 1.0


def _log_retry(t: _Target, what: str, exc: ConnectorError) -> None:
    # The error is already bounded and cleaned by the connector; no event: it is retried.
    log.warning("%s/%s: %s failed, retrying: %s", t.credential, t.region, what, error_message(exc))


def _count(st: _Status, t: _Target, target: BakeTarget) -> None:
    """Metrics for a bake that just ended."""
    if target.phase not in ("Available", "Failed") or target.finished_at is None:
        return
    provider = t.connector.config.provider
    outcome = "success" if target.phase == "Available" else (target.reason or "Failed")
    st.ctx.metrics.image_builds.labels(provider, outcome).inc()
    if target.started_at is not None and target.phase == "Available":
        st.ctx.metrics.image_build_duration.labels(provider).observe(
            (target.finished_at - target.started_at).total_seconds()
        )


async def _execute(
    st: _Status, *, t: _Target, build: ImageBuild, step: Step, current: BakeTarget | None, source: BakeTarget | None
) -> None:
    conn, put = t.connector, st.put
    where = {"credential": t.credential, "region": t.region}
    if step.action is Do.LAUNCH_BUILDER:
        assert current is not None
        await _launch(st, t, build, current)
    elif step.action is Do.SNAPSHOT:
        assert current is not None
        assert current.builder_id is not None
        image_req = ImageRequest(
            name=bake.image_name(t.owner.image or "image", t.owner.image_uid, t.key),
            source_id=current.builder_id,
            tags=t.owner.to_tags(),
            description=f"Skyfleet bake of Image {t.owner.namespace}/{t.owner.image}",
        )
        made = await conn.create_image(image_req)
        await put(bake.image_requested(current, made), **where)
    elif step.action is Do.COPY_IMAGE:
        assert current is not None
        assert source is not None
        assert source.image_id is not None
        name = bake.image_name(t.owner.image or "image", t.owner.image_uid, t.key)
        made = await conn.copy_image(source.region, source.image_id, name, t.owner.to_tags())
        await put(bake.image_requested(current, made), **where)
    elif step.action is Do.DELETE_BUILDER:
        assert current is not None
        assert step.builder_id is not None
        owner = ImageOwnerTags(t.owner.cluster_id, t.owner.image_uid, current.bake_key, t.owner.namespace)
        try:
            await conn.destroy(step.builder_id, bake.builder_owner(owner, t.credential, t.region, current.attempt))
        except NotFound:
            pass
        except OwnershipMismatch as exc:
            st.ctx.event(st.body, "Warning", "OwnershipMismatch", f"{t.credential}/{t.region}: {error_message(exc)}")
        await put(bake.builder_deleted(current), **where)
        st.ctx.event(
            st.body, "Normal", "BuilderDeleted", f"{t.credential}/{t.region}: builder VM {step.builder_id} deleted"
        )
    elif step.action is Do.DELETE_IMAGE:
        assert step.image_id is not None
        key = current.bake_key if current is not None else t.key
        owner = ImageOwnerTags(t.owner.cluster_id, t.owner.image_uid, key, t.owner.namespace)
        await conn.deregister_image(step.image_id, owner)
        if current is not None and current.image_id == step.image_id:
            await put(bake.image_deleted(current), **where)
        st.ctx.event(
            st.body, "Normal", "PartialImageDeleted", f"{t.credential}/{t.region}: image {step.image_id} deregistered"
        )
    elif step.action is Do.REUSE:
        assert current is not None
        st.ctx.event(
            st.body, "Normal", "BakedImageReused", f"{t.credential}/{t.region}: image {current.image_id} already baked"
        )


async def _launch(st: _Status, t: _Target, build: ImageBuild, current: BakeTarget) -> None:
    """Launch the builder (or adopt the one a lost answer made: same owner tags and token)."""
    conn, put = t.connector, st.put
    where = {"credential": t.credential, "region": t.region}
    assert t.base_image_id is not None
    problem = bake.user_data_problem(
        t.user_data, conn.capabilities.max_user_data_bytes, accepted=conn.capabilities.user_data
    )
    if problem is not None:
        failed = current.model_copy(
            update={
                "phase": "Failed",
                "reason": bake.Reason.INVALID_RECIPE.value,
                "message": problem,
                "finished_at": now(),
            }
        )
        await put(failed, **where)
        return
    place = _builder_cloud(build, t.credential, conn.config.provider, t.region)
    size = build.builder.size
    cloud_size = await conn.resolve_size(
        cpu=size.cpu,
        memory_mib=size.memory_mib,
        disk_gib=size.disk_gib,
        instance_type=(size.instance_types or {}).get(conn.config.provider),
    )
    req = bake.builder_request(
        owner=t.owner,
        credential=t.credential,
        region=t.region,
        attempt=current.attempt,
        base_image_id=t.base_image_id,
        size_id=cloud_size.id,
        user_data=t.user_data,
        zone=place.zone if place else None,
        subnet=place.subnet if place else None,
    )
    node = await conn.create(req)
    await put(bake.launched(current, node), **where)


async def _share(st: _Status, t: _Target, build: ImageBuild) -> float | None:
    """Share the target's image with the shareWith accounts status does not list yet; retried
    every pass until done (a crash or a failed call after Available is no lost share)."""
    current = st.bake(t.credential, t.region)
    accounts = bake.to_share(current, build.share_with)
    if current is None or current.image_id is None or not accounts:
        return None
    where = f"{t.credential}/{t.region}"
    if not t.connector.capabilities.image_share:
        if st.ctx.announce_once(f"image-share:{where}", st.namespace, st.name, "ShareUnsupported"):
            st.ctx.event(st.body, "Warning", "ShareUnsupported", f"{where}: the provider does not share images")
        return None
    try:
        await t.connector.share_image(current.image_id, accounts, t.owner)
    except ConnectorError as exc:
        _log_retry(t, "sharing the image", exc)
        return 30.0
    await st.put(bake.shared(current, accounts), credential=t.credential, region=t.region)
    st.ctx.event(st.body, "Normal", "ImageShared", f"{where}: {current.image_id} shared with {len(accounts)} accounts")
    return None


def _builder_cloud(build: ImageBuild, credential: str, provider: str, region: str) -> BuilderCloud | None:
    for c in build.builder.clouds or []:
        if c.credential not in (None, credential) or c.provider not in (None, provider):
            continue
        if c.region not in (None, region):
            continue
        return c
    return None


async def _retire(ctx: Context, st: _Status, image: Image, stale: BakeTarget) -> float:
    """A target no Deployment uses: delete its builder and partial image, then drop it from status."""
    try:
        connector = await ctx.clouds.connector(image.metadata.namespace, stale.credential, stale.region or None)
    except (CredentialUnavailable, ConnectorError):
        return 60.0
    t = _Target(stale.credential, stale.region, connector, stale.bake_key, _owner(ctx, image, stale.bake_key))
    assert image.spec.build is not None
    await _advance(st, t, image.spec.build, deleting=True)
    left = st.bake(stale.credential, stale.region)
    if left is not None and left.builder_id is None:
        await st.put(None, credential=stale.credential, region=stale.region)
    return 30.0 if left is not None and left.builder_id else ctx.settings.resync_period


async def _retention(ctx: Context, st: _Status, image: Image, build: ImageBuild, used: set[str]) -> None:
    gens = list(st.status.generations or [])
    for b in st.status.bakes or []:
        gens = bake.add_generation(gens, b)
    if gens != list(st.status.generations or []):
        st.status = st.status.model_copy(update={"generations": gens})
        await st.save()
    current = {(b.credential, b.region): b.bake_key for b in st.status.bakes or []}
    doomed = bake.retention(gens, current, keep=build.keep or bake.DEFAULT_KEEP, in_use=used)
    for g in doomed:
        try:
            connector = await ctx.clouds.connector(image.metadata.namespace, g.credential, g.region or None)
            await connector.deregister_image(g.image_id, _owner(ctx, image, g.bake_key))
        except OwnershipMismatch as exc:
            st.ctx.event(st.body, "Warning", "OwnershipMismatch", f"{g.credential}/{g.region}: {error_message(exc)}")
        except (CredentialUnavailable, ConnectorError):
            continue
        gens = [x for x in gens if x.image_id != g.image_id or (x.credential, x.region) != (g.credential, g.region)]
        st.status = st.status.model_copy(update={"generations": gens or None})
        await st.save()
        st.ctx.event(
            st.body,
            "Normal",
            "ImageDeregistered",
            f"{g.credential}/{g.region}: generation {g.image_id} deregistered with its snapshots "
            f"(keep {build.keep or bake.DEFAULT_KEEP}, no Instance uses it)",
        )


async def _sweep_builders(ctx: Context, st: _Status, image: Image, targets: list[_Target]) -> None:
    """Builder VMs of this Image no bake refers to (a status write lost in a crash): delete them."""
    referenced = {b.builder_id for b in st.status.bakes or [] if b.builder_id}
    launching = {(b.credential, b.region) for b in st.status.bakes or [] if b.phase == "Launching"}
    seen: set[tuple[int, str]] = set()
    for t in targets:
        if (
            (t.credential, t.region) in launching
            or (id(t.connector), t.region) in seen
            or not t.connector.capabilities.bake
        ):
            continue
        seen.add((id(t.connector), t.region))
        tags = {**t.owner.identity(), ImageOwnerTags.ROLE: ImageOwnerTags.BUILDER}
        try:
            builders = await t.connector.find_by_tags(tags)
            for node in bake.stray_builders(builders, referenced, now=now()):
                uid = node.tags.get(OwnerTags.INSTANCE_UID, "")
                await t.connector.destroy(node.provider_id, OwnerTags(ctx.cluster_id, uid, image.metadata.namespace))
                st.ctx.event(
                    st.body,
                    "Normal",
                    "StrayBuilderDeleted",
                    f"{t.credential}/{t.region}: builder VM {node.provider_id}",
                )
        except (NotFound, OwnershipMismatch):
            continue
        except ConnectorError as exc:
            _log_retry(t, "sweeping builders", exc)


async def _finish(
    st: _Status,
    image: Image,
    uses: list[tuple[str, str]],
    problems: list[tuple[str, str]],
    wanted: set[tuple[str, str]],
) -> None:
    """status.resolved (what VMs boot per target), conditions, phase; one write when anything changed."""
    gen = image.metadata.generation or None
    ts = now()
    status = st.status
    resolved: list[ResolvedImage] = []
    for credential, region in uses:
        source = bake.boot_source(status, baked=True, credential=credential, region=region, base_image_id=None)
        if source.image_id is not None:
            resolved.append(
                ResolvedImage(credential=credential, region=region, id=source.image_id, bake_key=source.bake_key)
            )
    bakes = [b for b in status.bakes or [] if (b.credential, b.region) in wanted]
    summary = bake.bake_conditions(status.conditions, bakes, now=ts, generation=gen)
    conds, phase, message = summary.conditions, summary.phase, None
    if problems:
        reason, _ = problems[0]
        message = safe_message("; ".join(m for _, m in problems), limit=1024)
        conds = set_condition(conds, "Ready", False, reason, message, now=ts, generation=gen)
        phase = "Unresolved"
    elif not uses:
        conds = set_condition(
            conds, "Ready", True, "NotInUse", "not used by any Deployment yet", now=ts, generation=gen
        )
        phase = "Baked"
    before = next((c.reason for c in status.conditions if c.type == "Ready"), None)
    st.status = status.model_copy(
        update={
            "observed_generation": gen,
            "phase": phase,
            "conditions": conds,
            "resolved": resolved or None,
            "message": message,
        }
    )
    await st.save()
    after = next((c for c in conds if c.type == "Ready"), None)
    if (
        after is not None
        and after.reason != before
        and st.ctx.announce_once("image", st.namespace, st.name, after.reason)
    ):
        st.ctx.event(
            st.body, "Normal" if after.status == "True" else "Warning", after.reason, after.message or after.reason
        )


# -- deletion -----------------------------------------------------------------------------------


def _has_bakes(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return bool(spec.get("build") or status.get("bakes") or status.get("generations"))


@kopf.on.delete(GROUP, VERSION, "images", id="bake-cleanup", when=_has_bakes)
async def bake_cleanup(*, namespace: str | None, name: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """Delete builders and partial images always; baked images too (deletionPolicy Delete, the
    default) once no Instance boots them. The finalizer stays until all of that is done."""
    assert namespace is not None
    ctx = ctx_of(memo)
    image = Image.model_validate(dict(body))
    status = image.status or ImageStatus()
    build = image.spec.build
    orphan = build is not None and build.deletion_policy == "Orphan"
    used = _in_use(kwargs.get("images_in_use"), namespace)
    places = {(b.credential, b.region) for b in status.bakes or []} | {
        (g.credential, g.region) for g in status.generations or []
    }
    waiting: list[str] = []
    gone: list[str] = []
    kept: list[str] = []
    identity = ImageOwnerTags(ctx.cluster_id, image.metadata.uid, "-", namespace, name)
    for credential, region in sorted(places):
        where = f"{credential}/{region}"
        try:
            conn = await ctx.clouds.connector(namespace, credential, region or None)
            await _clean_place(conn, identity, orphan=orphan, used=used, gone=gone, waiting=waiting, kept=kept)
        except CredentialUnavailable as exc:
            ctx.event(body, "Warning", "CannotDeleteBakedImages", f"{where}: {exc.message}")
            raise kopf.TemporaryError(exc.message, delay=30) from None
        except ConnectorError as exc:
            message = f"{where}: {error_message(exc)}"
            ctx.event(body, "Warning", "CannotDeleteBakedImages", message)
            raise kopf.TemporaryError(message, delay=15) from None
    ctx.metrics.set_builders(namespace, name, {})
    if gone:
        ctx.event(
            body,
            "Normal",
            "BakedImagesDeleted",
            f"deleted {len(gone)} builders and baked images: {', '.join(gone[:10])}",
        )
    if waiting:
        message = f"waiting for Instances booting {', '.join(sorted(waiting)[:5])} to go before deregistering them"
        if ctx.announce_once("image-deletion", namespace, name, "WaitingForInstances"):
            ctx.event(body, "Normal", "WaitingForInstances", message)
        raise kopf.TemporaryError(message, delay=10)
    if kept:
        # Counted from the cloud's listing, not the status: a bake that finished just before the
        # deletion may not be in the status yet, and its image stays all the same.
        ctx.event(
            body,
            "Normal",
            "BakedImagesOrphaned",
            f"deletionPolicy Orphan: {len(kept)} baked images stay: {', '.join(sorted(kept)[:10])}",
        )


async def _clean_place(
    conn: Connector,
    identity: ImageOwnerTags,
    *,
    orphan: bool,
    used: set[str],
    gone: list[str],
    waiting: list[str],
    kept: list[str],
) -> None:
    """One credential and region of a deleted Image: builders and partial images always go,
    baked images unless orphaned; an image an Instance still boots waits."""
    owner = OwnerTags(identity.cluster_id, "-", identity.namespace)
    for node in await conn.find_by_tags({**identity.identity(), ImageOwnerTags.ROLE: ImageOwnerTags.BUILDER}):
        if node.state is NodeState.TERMINATED:
            continue
        uid = node.tags.get(OwnerTags.INSTANCE_UID, "")
        try:
            await conn.destroy(node.provider_id, OwnerTags(owner.cluster_id, uid, owner.namespace))
        except (NotFound, OwnershipMismatch):
            continue
        gone.append(node.provider_id)
    for img in await conn.find_images(identity.identity()):
        partial = img.state is not ImageState.AVAILABLE
        if img.id in used and not orphan:
            waiting.append(img.id)
            continue
        if orphan and not partial:
            kept.append(img.id)
            continue
        key = img.tags.get(ImageOwnerTags.BAKE_KEY, "-")
        try:
            await conn.deregister_image(
                img.id, ImageOwnerTags(identity.cluster_id, identity.image_uid, key, identity.namespace)
            )
        except (NotFound, OwnershipMismatch):
            continue
        gone.append(img.id)
