"""VM observation and the orphan sweep: one tag-filtered list per credential and region per period.

Every Instance of the credential is updated from that one answer, so the cost in cloud calls
is per credential and region, not per VM. The same list shows VMs tagged with our cluster id
whose Instance no longer exists: orphans, reported (event, metric, status condition) and,
where the CloudCredential opts in, deleted after a grace period (reconcile/orphans.py decides).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import kopf

from skyfleet.api.cloudcredential import CloudCredential, CloudCredentialStatus
from skyfleet.api.common import API_VERSION
from skyfleet.api.instance import InstanceStatus
from skyfleet.connectors import CloudNode, ConnectorError, NodeState, OwnerTags
from skyfleet.handlers.clouds import CredentialUnavailable
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of, now
from skyfleet.handlers.indexes import Lookup, ObservedInstance, by_credential, uids
from skyfleet.handlers.kube import Conflict
from skyfleet.handlers.loop import LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.reconcile.bake import is_builder
from skyfleet.reconcile.conditions import find_condition, set_condition
from skyfleet.reconcile.instances import lost_for_good, observed_status
from skyfleet.reconcile.messages import error_message
from skyfleet.reconcile.orphans import OrphanPlan, plan_orphans
from skyfleet.reconcile.regions import RegionFailure, regions_condition


def instance_ref(m: ObservedInstance) -> dict[str, Any]:
    """Enough of an Instance to address an event to it and write its status."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Instance",
        "metadata": {"name": m.name, "namespace": m.namespace, "uid": m.uid, "generation": m.generation},
    }


@dataclass
class LoopState:
    """What one credential's observation loop remembers between periods (lost on restart,
    which only delays a verdict)."""

    reported_orphans: int | None = None
    # Instance UID -> when listings first missed its VM (monotonic seconds).
    missing: dict[str, float] = field(default_factory=dict)
    # Orphan provider id -> when it was first seen without an Instance (monotonic seconds).
    orphans_seen: dict[str, float] = field(default_factory=dict)
    # Instance UID -> (its status as read, its generation, its VM as listed) when the last
    # period found nothing to write: the same three again need no decoding and no comparing
    # (at 10,000 Instances that was most of a quiet period's work).
    settled: dict[str, tuple[str | None, int | None, tuple[Any, ...]]] = field(default_factory=dict)


@kopf.daemon(GROUP, VERSION, "cloudcredentials", id="observe", cancellation_timeout=5.0)
async def observe_loop(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    instances_by_credential = by_credential(kwargs)
    instance_uids = uids(kwargs)
    assert namespace is not None  # every skyfleet.io kind is namespaced
    ctx = ctx_of(memo)
    state = LoopState()

    async def once() -> None:
        await observe_once(
            ctx=ctx,
            namespace=namespace,
            name=name,
            body=body,
            logger=logger,
            instances_by_credential=instances_by_credential,
            instance_uids=instance_uids,
            state=state,
        )

    # The verify loop reports the credential's state; observation skips a pass until it works.
    quiet = (CredentialUnavailable, ConnectorError)
    spec = LoopSpec("observe", namespace, name, period=ctx.settings.observe_period, quiet=quiet)
    try:
        await run_loop(ctx, spec, body=body, stopped=stopped, logger=logger, once=once)
    finally:
        # Deleted (or the operator stopping): its figures leave the metrics, not linger there.
        ctx.metrics.forget_credential(namespace, name)


async def observe_once(
    *,
    ctx: Context,
    namespace: str,
    name: str,
    body: kopf.Body,
    logger: kopf.Logger,
    instances_by_credential: Lookup,
    instance_uids: Lookup,
    state: LoopState,
) -> None:
    """One period: list every region once, update the Instances from the listing, deal with
    orphans, write the credential's observation status."""
    cred = CloudCredential.model_validate(dict(body))
    members: list[ObservedInstance] = list(instances_by_credential.get((namespace, name), []))
    home = cred.spec.region or ""
    regions = {m.region or home for m in members} | {home}
    nodes, region_of, failing = await _list_regions(ctx, namespace, name, regions, home)
    provider = cred.spec.provider
    ts = now()
    clock = time.monotonic()
    observed = [m for m in members if (m.region or home) not in failing]
    await _observe_members(ctx=ctx, cred=cred, members=observed, nodes=nodes, state=state, ts=ts, clock=clock)

    orphans = _orphans(nodes, namespace, set(instance_uids.get(namespace, [])))
    plan = _orphan_plan(ctx, cred, orphans, state, clock)
    doomed = [n for n in orphans if n.provider_id in set(plan.delete)]
    deleted = await _delete_orphans(
        ctx=ctx, namespace=namespace, name=name, body=body, cred=cred, doomed=doomed, region_of=region_of
    )
    remaining = len(orphans) - len(deleted)
    ctx.metrics.set_orphans(namespace, name, provider, remaining)
    ctx.metrics.set_instance_phases(namespace, name, provider, Counter(m.phase or "Pending" for m in members))
    if len(orphans) > (state.reported_orphans or 0):
        ctx.event(body, "Warning", "OrphanedVMs", plan.message)
    state.reported_orphans = len(orphans)
    await _write_credential_status(
        ctx,
        body,
        cred,
        plan=plan,
        failing=failing,
        regions=regions,
        members=len(members),
        remaining=remaining,
        logger=logger,
    )


def _orphans(nodes: list[CloudNode], namespace: str, known: set[str]) -> list[CloudNode]:
    """VMs of this namespace (by their tags) whose Instance no longer exists."""
    return [
        n
        for n in nodes
        if n.tags.get(OwnerTags.NAMESPACE) == namespace
        and n.tags.get(OwnerTags.INSTANCE_UID) not in known
        # Builder VMs belong to the bake loop, which deletes them itself (handlers/bake.py).
        and not is_builder(n.tags)
    ]


def _orphan_plan(
    ctx: Context, cred: CloudCredential, orphans: list[CloudNode], state: LoopState, clock: float
) -> OrphanPlan:
    """What to do about the orphans (reconcile/orphans.py decides); remembers when each was first seen."""
    policy = cred.spec.orphans
    plan = plan_orphans(
        [n.provider_id for n in orphans],
        state.orphans_seen,
        now=clock,
        delete=bool(policy and policy.delete),
        can_release=bool(cred.status and cred.status.capabilities and cred.status.capabilities.release),
        grace=float(
            policy.grace_period_seconds if policy and policy.grace_period_seconds else ctx.settings.orphan_grace
        ),
        provider=cred.spec.provider,
    )
    state.orphans_seen = plan.first_seen
    return plan


async def _write_credential_status(
    ctx: Context,
    body: kopf.Body,
    cred: CloudCredential,
    *,
    plan: OrphanPlan,
    failing: dict[str, RegionFailure],
    regions: set[str],
    members: int,
    remaining: int,
    logger: kopf.Logger,
) -> None:
    """The credential's observation figures and its OrphanedVMs and RegionsObserved conditions;
    an event when the regions verdict changes."""
    namespace, name = cred.metadata.namespace, cred.metadata.name
    old_raw = dict(body.get("status") or {})
    old = CloudCredentialStatus.model_validate(old_raw)
    ts, gen = now(), cred.metadata.generation or None
    conditions = set_condition(
        old.conditions, "OrphanedVMs", plan.found, plan.reason, plan.message, now=ts, generation=gen
    )
    verdict = regions_condition(failing, observed=sorted(set(regions) - set(failing)))
    before = find_condition(old.conditions, "RegionsObserved")
    conditions = set_condition(
        conditions, "RegionsObserved", verdict.ok, verdict.reason, verdict.message, now=ts, generation=gen
    )
    status = old.model_copy(update={"instances": members, "orphaned_vms": remaining, "conditions": conditions})
    try:
        # Shared with the verify loop: written only over the version read; Ready is its to announce.
        await write_status(
            ctx,
            body,
            old_raw,
            status,
            resource_version=body.metadata.get("resourceVersion"),
            announce=False,
            observes_spec=False,
        )
    except Conflict:
        logger.info("status of %s/%s changed meanwhile; writing it next period", namespace, name)
        return
    if (before is None or before.reason != verdict.reason) and ctx.announce_once(
        "regions", namespace, name, verdict.message
    ):
        if not verdict.ok:
            ctx.event(body, "Warning", verdict.reason, verdict.message)
        elif before is not None:
            ctx.event(body, "Normal", verdict.reason, verdict.message)


async def _list_regions(
    ctx: Context, namespace: str, name: str, regions: set[str], home: str
) -> tuple[list[CloudNode], dict[str, str], dict[str, RegionFailure]]:
    """Every node of this cluster per region, which region each is in, and the regions that
    failed. Each region on its own: one that fails (misspelt, not opted into, down) is
    reported and skipped, and every other region is observed as usual."""
    nodes: list[CloudNode] = []
    region_of: dict[str, str] = {}
    failing: dict[str, RegionFailure] = {}
    for region in sorted(regions):
        try:
            connector = await ctx.clouds.connector(namespace, name, region or None)
            listed = await connector.list_cluster(ctx.cluster_id)
        except ConnectorError as exc:
            if region == home and len(regions) == 1:
                raise  # the credential's own region alone: the verify loop reports it
            failing[region] = await _region_failure(ctx, namespace, name, region, exc)
            continue
        nodes += listed
        region_of.update((n.provider_id, region) for n in listed)
    return nodes, region_of, failing


async def _region_failure(ctx: Context, namespace: str, name: str, region: str, exc: ConnectorError) -> RegionFailure:
    try:
        connector = await ctx.clouds.connector(namespace, name, region or None)
        check = await ctx.regions.check(connector)
    except (CredentialUnavailable, ConnectorError):
        check = None
    if check is not None and not check.known:
        return RegionFailure("RegionUnknown", check.message)
    return RegionFailure("RegionUnavailable", f"region {region or '(default)'}: {error_message(exc)}")


async def _observe_members(
    *,
    ctx: Context,
    cred: CloudCredential,
    members: list[ObservedInstance],
    nodes: list[CloudNode],
    state: LoopState,
    ts: datetime,
    clock: float,
) -> None:
    """Bring every Instance's status in line with the listing."""
    missing, settled = state.missing, state.settled
    by_uid = _by_uid(nodes)
    uids = {m.uid for m in members}
    for memory in (missing, settled):
        for uid in set(memory) - uids:
            del memory[uid]
    for m in members:
        if m.deleting or m.phase == "Failed":
            continue  # deletion owns this Instance right now
        listed = by_uid.get(m.uid)
        seen = (m.status_json, m.generation, _as_listed(listed, cred.spec.provider)) if listed is not None else None
        if seen is not None and settled.get(m.uid) == seen:
            missing.pop(m.uid, None)
            continue  # as it was when the last period found nothing to change
        settled.pop(m.uid, None)
        status = m.status()
        if status is None or not status.provider_id or status.phase == "Failed":
            continue  # provisioning owns this Instance right now
        node: CloudNode | None = listed
        if node is not None:
            missing.pop(m.uid, None)
        elif status.phase != "Lost":
            # Listings are eventually consistent: a VM launched a moment ago (however old its
            # Instance is) can be missing for a while. It is declared gone only after listings
            # have missed it for the whole grace period and a direct look confirms it.
            first = missing.setdefault(m.uid, clock)
            if not lost_for_good(first, clock, ctx.settings.lost_grace):
                continue
            namespace, name = m.namespace, cred.metadata.name
            connector = await ctx.clouds.connector(namespace, name, m.region or cred.spec.region)
            node = await connector.describe(status.provider_id)
            if node is not None and node.state is not NodeState.TERMINATED:
                missing.pop(m.uid, None)
                continue
            node = None
        changed = await _update(ctx=ctx, m=m, status=status, node=node, provider=cred.spec.provider, ts=ts)
        if not changed and seen is not None:
            settled[m.uid] = seen


def _by_uid(nodes: list[CloudNode]) -> dict[str, CloudNode]:
    """The listed VMs by the Instance UID they are tagged with (a live one over a terminated one)."""
    by_uid: dict[str, CloudNode] = {}
    for listed in nodes:
        uid = listed.tags.get(OwnerTags.INSTANCE_UID)
        if uid and (uid not in by_uid or by_uid[uid].state is NodeState.TERMINATED):
            by_uid[uid] = listed
    return by_uid


def _as_listed(node: CloudNode, provider: str) -> tuple[Any, ...]:
    """What of a listed VM an Instance's status is made from (reconcile/instances.observed_status)."""
    return (provider, node.provider_id, node.state, node.public_ips, node.private_ips, node.size_id, node.image_id)


async def _delete_orphans(
    *,
    ctx: Context,
    namespace: str,
    name: str,
    body: kopf.Body,
    cred: CloudCredential,
    doomed: list[CloudNode],
    region_of: dict[str, str],
) -> list[str]:
    """Destroy each orphan (the connector checks our owner tags again); return what went."""
    deleted: list[str] = []
    for node in doomed:
        owner = OwnerTags.from_tags(node.tags)
        if owner is None:
            continue
        connector = await ctx.clouds.connector(namespace, name, region_of.get(node.provider_id) or None)
        try:
            await connector.destroy(node.provider_id, owner)
        except ConnectorError as exc:
            ctx.event(body, "Warning", "OrphanDeleteFailed", f"orphaned VM {node.provider_id}: {error_message(exc)}")
            continue
        deleted.append(node.provider_id)
        ctx.metrics.orphans_deleted.labels(cred.spec.provider).inc()
        ctx.event(
            body,
            "Normal",
            "OrphanDeleted",
            f"deleted VM {node.provider_id} (was {owner.namespace}/{owner.instance or '?'}): no Instance for it",
        )
    return deleted


async def _update(
    *, ctx: Context, m: ObservedInstance, status: InstanceStatus, node: CloudNode | None, provider: str, ts: datetime
) -> bool:
    """Write what the listing says of one Instance; False when its status already says it."""
    new = observed_status(status, node, provider=provider, now=ts, generation=m.generation)
    if new == status:
        return False
    # Instance events say what happened to the VM (below), not every Ready reason.
    await write_status(ctx, instance_ref(m), m.status_raw, new, announce=False)
    if new.phase != status.phase:
        if new.phase == "Running" and status.phase in (None, "Pending", "Creating"):
            ctx.metrics.instance_ready(provider, m.created)
        kind = "Normal" if new.phase == "Running" else "Warning"
        reason = {"Running": "VMRunning", "Lost": "VMLost", "Stopped": "VMStopped"}.get(
            new.phase or "", "VMStateChanged"
        )
        ctx.event(instance_ref(m), kind, reason, new.message or f"VM {new.provider_id} is {new.phase}")
    ctx.wake("deployment", m.namespace, m.deployment)
    return True
