"""Instance: create (or adopt) the VM the Instance records, and destroy it on deletion.

The Instance object is the intent, written before any cloud call. Creation looks the VM up by
owner tags first and passes the Instance UID as idempotency token, so a crash at any point
followed by a restart adopts the VM instead of making a second one. After creation the VM is
watched by the batched observer (``observe.py``), not polled here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kopf

from skyfleet.api.instance import Instance, InstanceSpec, InstanceStatus
from skyfleet.connectors import Connector, ConnectorError, CreateRequest, NodeState, OwnershipMismatch, OwnerTags
from skyfleet.contract.errors import NotFound, Unsupported
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of, now
from skyfleet.handlers.status import write_status
from skyfleet.logs import about
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.images import ImageError, current_resolution, effective_image, select_source
from skyfleet.reconcile.instances import (
    classify_create_error,
    create_settled,
    never_called_the_cloud,
    observed_status,
    unseen_vm_may_exist,
    user_data_too_large,
    user_data_unsupported,
)
from skyfleet.reconcile.messages import error_message
from skyfleet.reconcile.views import ORPHAN_ANNOTATION


def owner_tags(ctx: Context, inst: Instance) -> OwnerTags:
    return OwnerTags(
        cluster_id=ctx.cluster_id,
        instance_uid=inst.metadata.uid,
        namespace=inst.metadata.namespace,
        deployment=inst.spec.deployment,
        instance=inst.metadata.name,
    )


def _with_ready(
    status: InstanceStatus, ready: bool, reason: str, message: str, *, phase: str, generation: int | None
) -> InstanceStatus:
    """``status`` with phase and Ready set, from the spec at ``generation`` (an Instance's spec
    changes only in its driftPolicy, which the Deployment updates in place)."""
    status = status.model_copy(deep=True)
    status.phase = phase
    status.message = message or None
    status.conditions = set_condition(
        status.conditions, "Ready", ready, reason, message, now=now(), generation=generation
    )
    return status


async def _resolve_image(
    *, ctx: Context, inst: Instance, connector: Connector, images: kopf.Index[Any, Any]
) -> tuple[str | None, str]:
    """(image id, reason when there is none)."""
    if inst.spec.image_id:
        return inst.spec.image_id, ""
    ns = inst.metadata.namespace
    # The Image handler already resolved the id for every credential and region in use; a
    # catalogue listing per VM would cost one large cloud call each (1,000+ images on EC2).
    # (The planner records that id in the spec when it knows it: this is for an Instance planned
    # before the Image was resolved on its target.)
    own = next(iter(images.get((ns, inst.spec.image_ref), [])), None)
    known = current_resolution(own).get((inst.spec.credential, connector.config.region or "")) if own else None
    if known:
        return known, ""
    try:
        image = effective_image(inst.spec.image_ref, lambda n: next(iter(images.get((ns, n), [])), None))
    except ImageError as exc:
        return None, error_message(exc)
    source = select_source(
        image.sources,
        credential=inst.spec.credential,
        provider=connector.config.provider,
        region=connector.config.region,
    )
    if source is None:
        return None, f"Image {inst.spec.image_ref!r} has no entry for credential {inst.spec.credential!r}"
    async with ctx.clouds.single_flight(connector, "images"):
        found = await connector.resolve_image(
            image_id=source.id,
            name_pattern=source.lookup.name_pattern if source.lookup else None,
            owner=source.lookup.owner if source.lookup else None,
        )
    return found.id, ""


@kopf.on.create(GROUP, VERSION, "instances", id="provision")
@kopf.on.resume(GROUP, VERSION, "instances", id="provision", when=lambda status, **_: not create_settled(status))
async def provision(*, body: kopf.Body, memo: Any, logger: kopf.Logger, retry: int, **kwargs: Any) -> None:
    with about(body):
        await _provision(ctx_of(memo), body, retry, kwargs["images"])


async def _provision(ctx: Context, body: kopf.Body, retry: int, images: kopf.Index[Any, Any]) -> None:
    inst = Instance.model_validate(dict(body))
    meta, spec = inst.metadata, inst.spec
    status = inst.status or InstanceStatus()
    if meta.deletion_timestamp is not None or status.provider_id or status.phase == "Failed":
        return
    raw = dict(body.get("status") or {})

    async def write(new: InstanceStatus) -> None:
        nonlocal raw
        # Instance events say what happened to the VM, not every Ready reason.
        raw = await write_status(ctx, body, raw, new, announce=False)

    def safe(exc: BaseException) -> str:
        return error_message(exc, redact=[spec.user_data])

    connector = await _usable_connector(ctx, body, inst, status, write)
    if connector is None:
        return

    try:
        # Resolved once and recorded before the create: a retry, or a restart, creates from the
        # same image and size even when the Image or the catalogue changed meanwhile.
        image_id, why = (
            (status.image_id, "")
            if status.image_id
            else await _resolve_image(ctx=ctx, inst=inst, connector=connector, images=images)
        )
        if image_id is None:
            status = _with_ready(status, False, "ImageNotFound", why, phase="Failed", generation=meta.generation)
            await write(status)
            ctx.event(body, "Warning", "ImageNotFound", why)
            return
        size_id = status.instance_type or await _resolve_size(ctx, connector, spec)
        # Creating without a provider id: a create may have gone out whose answer nobody recorded
        # (a restart, or a failure after sending). Clouds without idempotency tokens get no second
        # one until lookups have missed the VM for the settle window, counted from now: the
        # Ready condition's transition time can precede the last send by many retries.
        unknown_since = now().timestamp() if status.phase == "Creating" else None
        # The cloud may create a VM from here on: say so (and from what) before asking it to.
        status = _with_ready(status, False, "Creating", "creating the VM", phase="Creating", generation=meta.generation)
        status.provider, status.image_id, status.instance_type = connector.config.provider, image_id, size_id
        await write(status)
        node = await connector.create(
            CreateRequest(
                name=meta.name,
                image_id=image_id,
                size_id=size_id,
                region=spec.region,
                zone=spec.zone,
                user_data=spec.user_data,
                owner=owner_tags(ctx, inst),
                idempotency_token=meta.uid,
                disk_gib=spec.size.disk_gib if spec.size else None,
                unknown_since=unknown_since,
                settle=ctx.settings.create_settle,
            )
        )
    except ConnectorError as exc:
        failure = classify_create_error(exc)
        ctx.metrics.create_failures.labels(connector.config.provider, failure.reason).inc()
        message = safe(exc)
        ctx.event(body, "Warning", failure.reason, message)
        if failure.retry:
            status = _with_ready(status, False, failure.reason, message, phase="Creating", generation=meta.generation)
            await write(status)
            raise kopf.TemporaryError(message, delay=min(60, 5 * (retry + 1))) from None
        status = _with_ready(status, False, failure.reason, message, phase="Failed", generation=meta.generation)
        status.provisioning_failures = (status.provisioning_failures or 0) + 1
        await write(status)
        return
    # Record the provider id at once: from here on, deletion knows exactly what to destroy.
    status = observed_status(status, node, provider=connector.config.provider, now=now(), generation=meta.generation)
    status.instance_type = status.instance_type or size_id
    status.image_id = status.image_id or image_id
    await write(status)
    ctx.metrics.vm_created(connector.config.provider, meta.creation_timestamp, running=status.phase == "Running")
    ctx.event(body, "Normal", "VMCreated", f"VM {node.provider_id} ({size_id}) on {spec.credential}")


async def _resolve_size(ctx: Context, connector: Connector, spec: InstanceSpec) -> str:
    """The native size: the explicit type, or the smallest that fits ``spec.size``."""
    size = spec.size
    async with ctx.clouds.single_flight(connector, "sizes"):
        found = await connector.resolve_size(
            cpu=size.cpu if size else None,
            memory_mib=size.memory_mib if size else None,
            disk_gib=size.disk_gib if size else None,
            instance_type=spec.instance_type,
        )
    return found.id


async def _usable_connector(
    ctx: Context, body: kopf.Body, inst: Instance, status: InstanceStatus, write: Any
) -> Connector | None:
    """The connector to create with, after what can be checked without a create call:
    None when the Instance failed for good, TemporaryError when it must wait."""
    meta, spec = inst.metadata, inst.spec

    def safe(exc: BaseException) -> str:
        return error_message(exc, redact=[spec.user_data])

    try:
        connector = await ctx.clouds.connector(meta.namespace, spec.credential, spec.region)
    except CredentialUnavailable as exc:
        await write(
            _with_ready(status, False, "CredentialNotReady", exc.message, phase="Pending", generation=meta.generation)
        )
        raise kopf.TemporaryError(safe(exc), delay=15) from None
    except ConnectorError as exc:
        await write(
            _with_ready(status, False, "CredentialNotReady", safe(exc), phase="Pending", generation=meta.generation)
        )
        raise kopf.TemporaryError(safe(exc), delay=30) from None

    # Checked before the cloud is ever called, so neither costs a failed create.
    caps = connector.capabilities
    for reason, why in (
        ("UserDataUnsupported", user_data_unsupported(spec.user_data, caps.user_data)),
        ("UserDataTooLarge", user_data_too_large(spec.user_data, caps.max_user_data_bytes)),
    ):
        if why:
            await write(_with_ready(status, False, reason, why, phase="Failed", generation=meta.generation))
            ctx.event(body, "Warning", reason, why)
            return None
    region = await ctx.regions.check(connector)
    if not region.known:
        # Waits without spending the failure budget: the region may be fixed or opted into.
        await write(
            _with_ready(status, False, "RegionUnknown", region.message, phase="Pending", generation=meta.generation)
        )
        raise kopf.TemporaryError(region.message, delay=60)
    return connector


@kopf.on.event(GROUP, VERSION, "instances")
async def wake_deployment(*, namespace: str | None, spec: kopf.Spec, memo: Any, **_: Any) -> None:
    """Any change to an Instance may change its Deployment's plan: wake that loop, no API call."""
    ctx = ctx_of(memo)
    ctx.metrics.watch_event("instances")
    deployment = spec.get("deployment")
    if namespace and deployment:
        ctx.wake("deployment", namespace, deployment)


@kopf.on.delete(GROUP, VERSION, "instances", id="destroy")
async def destroy(*, body: kopf.Body, memo: Any, logger: kopf.Logger, runtime: timedelta, **_: Any) -> None:
    """Destroy the VM (only if it carries our owner tags) and wait until the cloud says it is gone."""
    with about(body):
        await _destroy_or_release(ctx_of(memo), body, runtime)


async def _destroy_or_release(ctx: Context, body: kopf.Body, runtime: timedelta) -> None:
    inst = Instance.model_validate(dict(body))
    meta, spec = inst.metadata, inst.spec
    status = inst.status or InstanceStatus()
    orphan = meta.annotations.get(ORPHAN_ANNOTATION) == "true"
    if never_called_the_cloud(status.phase, has_provider_id=bool(status.provider_id)):
        return  # no create was ever sent: there is no VM to look for
    try:
        connector = await ctx.clouds.connector(meta.namespace, spec.credential, spec.region)
    except (CredentialUnavailable, ConnectorError) as exc:
        message = error_message(exc, redact=[spec.user_data])
        # Kept VMs wait too: one still tagged as ours after its Instance is gone is an orphan.
        ctx.event(
            body,
            "Warning",
            "CannotReleaseVM" if orphan else "CannotDestroyVM",
            f"waiting for the credential: {message}",
        )
        raise kopf.TemporaryError(message, delay=15) from None
    unknown = None if status.provider_id else ctx.regions.unknown(connector)
    if unknown is not None:
        return  # no VM can exist in a region the cloud does not know
    owner = owner_tags(ctx, inst)
    if orphan:
        await _release(ctx, body, connector, owner, status)
    else:
        await _destroy(body, ctx, connector, owner, status, waited=runtime.total_seconds())


async def _destroy(
    body: kopf.Body, ctx: Context, connector: Connector, owner: OwnerTags, status: InstanceStatus, *, waited: float
) -> None:
    try:
        ids = {status.provider_id} if status.provider_id else set()
        # A create that was in flight when deletion began leaves a VM only the tags know about.
        seen = {n.provider_id for n in await connector.find_by_tags(owner.identity())}
        ids |= seen
        for provider_id in sorted(ids):
            try:
                await connector.destroy(provider_id, owner)
            except OwnershipMismatch as exc:
                ctx.event(body, "Warning", "OwnershipMismatch", error_message(exc))
                ids.discard(provider_id)
            except NotFound:
                ids.discard(provider_id)
        remaining = []
        for provider_id in sorted(ids):
            node = await connector.describe(provider_id)
            if node is not None:
                seen.add(provider_id)
                if node.state is not NodeState.TERMINATED:
                    remaining.append(provider_id)
    except ConnectorError as exc:
        ctx.event(body, "Warning", "DestroyFailed", error_message(exc))
        raise kopf.TemporaryError(error_message(exc), delay=10) from None
    if remaining:
        raise kopf.TemporaryError(f"waiting for {', '.join(remaining)} to terminate", delay=3)
    if (
        not seen
        and unseen_vm_may_exist(status.phase, has_provider_id=bool(status.provider_id))
        and waited < ctx.settings.lost_grace
    ):
        # Releasing the finalizer now could leave a VM running that nothing tracks.
        what = status.provider_id or "a VM created moments ago"
        raise kopf.TemporaryError(f"the cloud does not list {what} yet; looking again", delay=3)
    if ids:
        ctx.metrics.vms_destroyed.labels(connector.config.provider).inc(len(seen or ids))
        ctx.event(body, "Normal", "VMDestroyed", f"VM {', '.join(sorted(seen or ids))} is gone")


async def _release(
    ctx: Context, body: kopf.Body, connector: Connector, owner: OwnerTags, status: InstanceStatus
) -> None:
    """deletionPolicy Orphan: the VM stays running, untagged, so no orphan sweep ever deletes it."""
    try:
        ids = {status.provider_id} if status.provider_id else set()
        ids |= {n.provider_id for n in await connector.find_by_tags(owner.identity())}
        for provider_id in sorted(ids):
            try:
                await connector.release(provider_id, owner)
            except (NotFound, OwnershipMismatch):
                ids.discard(provider_id)
    except Unsupported:
        ctx.event(
            body,
            "Warning",
            "VMNotReleased",
            f"the VM stays, still tagged as ours: {connector.config.provider} cannot remove tags",
        )
        return
    except ConnectorError as exc:
        ctx.event(body, "Warning", "ReleaseFailed", error_message(exc))
        raise kopf.TemporaryError(error_message(exc), delay=10) from None
    what = ", ".join(sorted(ids)) or "no VM"
    ctx.event(body, "Normal", "VMOrphaned", f"deletionPolicy Orphan: {what} keeps running, no longer tracked or tagged")
