"""Deployment: turn the plan into Instance objects and a status, in a loop per Deployment.

The loop wakes on the Deployment's own changes, on any event of its Instances, on a change of
what placement reads of a credential it places on (all in-process, no API writes) and otherwise
every resync period. It reads kopf's in-memory indexes, so an idle Deployment costs no API calls
at all; and it writes status only when status changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import kopf

from skyfleet.api.common import API_VERSION
from skyfleet.api.deployment import Deployment, DeploymentStatus
from skyfleet.api.instance import InstanceStatus
from skyfleet.handlers.context import FINALIZER, GROUP, VERSION, Context, ctx_of
from skyfleet.handlers.context import now as utcnow
from skyfleet.handlers.indexes import Lookup, by_credential, by_deployment, credential_view
from skyfleet.handlers.kube import Refused
from skyfleet.handlers.loop import LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.handlers.storage import MARKER
from skyfleet.reconcile.deployment import NewInstance, plan_deployment, refused_status
from skyfleet.reconcile.images import EffectiveImage, ImageError, effective_image
from skyfleet.reconcile.messages import error_message
from skyfleet.reconcile.scaling import effective_deployment, governed_status
from skyfleet.reconcile.views import ORPHAN_ANNOTATION, CredentialView, InstanceView

# After acting, give the watch a moment to bring our own writes back before planning again.
SETTLE = 0.5
# How long a delete of ours counts as in flight when the index has not shown it yet.
RECENT = 30.0


@kopf.daemon(GROUP, VERSION, "deployments", id="reconcile", cancellation_timeout=2.0)
async def reconcile_loop(
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
    indexes = Indexes(
        instances_by_deployment=by_deployment(kwargs),
        instances_by_credential=by_credential(kwargs),
        credentials=kwargs["credentials"],
        images=kwargs["images"],
        scaling_policies=kwargs.get("scaling_policies"),
    )

    async def once() -> float:
        acted = await reconcile_once(ctx=ctx, namespace=namespace, name=name, body=body, indexes=indexes)
        return SETTLE if acted else ctx.settings.resync_period

    spec = LoopSpec("deployment", namespace, name, period=ctx.settings.resync_period, error_event="ReconcileError")
    await run_loop(ctx, spec, body=body, stopped=stopped, logger=logger, once=once)


@dataclass(frozen=True)
class Indexes:
    """kopf's in-memory indexes a Deployment pass reads (handlers/indexes.py)."""

    instances_by_deployment: Lookup
    instances_by_credential: Lookup
    credentials: kopf.Index[Any, Any]
    images: kopf.Index[Any, Any]
    # ScalingPolicies by governed Deployment (absent in handler tests that do not need it)
    scaling_policies: kopf.Index[Any, Any] | None = None


@kopf.on.event(GROUP, VERSION, "deployments")
async def wake_on_change(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    ctx = ctx_of(memo)
    ctx.metrics.watch_event("deployments")
    ctx.wake("deployment", namespace or "", name)


@kopf.on.event(GROUP, VERSION, "cloudcredentials")
async def wake_on_credential(*, namespace: str | None, name: str, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
    """A credential turning Ready (or not, or changing its limit) changes where Deployments
    may place: the ones placing on it plan now, not at the next resync."""
    ctx = ctx_of(memo)
    ns = namespace or ""
    view = credential_view(name, body)
    if not ctx.announce_once("credential-view", ns, name, repr(view)):
        return
    deployments: kopf.Index[Any, Any] = kwargs["deployments"]
    for dep in deployments.get(ns, []):
        if dep.uses_credential(name):
            ctx.wake("deployment", ns, dep.name)


def _first(index: kopf.Index[Any, Any], key: Any) -> Any:
    return next(iter(index.get(key, [])), None)


async def reconcile_once(*, ctx: Context, namespace: str, name: str, body: kopf.Body, indexes: Indexes) -> bool:
    """One pass: plan, create and delete Instances, post the plan's events, write status.
    True when it acted (the loop then looks again soon)."""
    dep = Deployment.model_validate(dict(body))
    if dep.metadata.deletion_timestamp is not None:
        return False
    # Groups a ScalingPolicy governs run with its decision (from its status); the spec stays Git's.
    policies = list(indexes.scaling_policies.get((namespace, name), [])) if indexes.scaling_policies is not None else []
    dep, governed = effective_deployment(dep, policies)
    views = _current_views(ctx, namespace, indexes.instances_by_deployment.get((namespace, name), []))
    creds, imgs = _references(dep, namespace, indexes)
    plan = plan_deployment(dep, views, creds, imgs, now=utcnow())
    changed: set[str] = set()
    refused = await _create_instances(
        ctx, namespace, creates=plan.creates, owner=_owner(dep), indexed={v.name for v in views}, changed=changed
    )
    status = governed_status(plan.status, governed)
    if refused is not None:
        group = next(n.spec.group for n in plan.creates if (namespace, n.name) not in ctx.recent_creates)
        status = refused_status(
            status,
            refused.reason,
            f"group {group}: creating Instance refused: {error_message(refused)}",
            now=utcnow(),
            generation=dep.metadata.generation or None,
        )
    await _delete_instances(ctx, namespace, plan.deletes, views, changed)
    await _update_drift_policies(ctx, namespace, plan.drift_policies, changed)
    for e in plan.events:
        if not e.names or changed.intersection(e.names):
            ctx.event(body, e.type, e.reason, e.message)
    await write_status(ctx, body, body.get("status"), status)
    # A refusal stays until a person acts: plan again at the resync period, not at once.
    return bool(plan.deletes or plan.drift_policies) or bool(plan.creates and refused is None)


def _current_views(ctx: Context, namespace: str, indexed: Iterable[InstanceView]) -> list[InstanceView]:
    """The Deployment's Instances as the index shows them, with our own deletes of the last
    moments marked: they reach the index a moment later, and until then a pass must neither
    delete a second victim nor count a failure twice."""
    recent = ctx.recent_deletes
    _forget_older(recent, time.monotonic() - RECENT)
    # Keyed by UID, not name: a scale-out soon after a scale-in reuses the freed name, and the new
    # Instance must not count as the old one being deleted (it would be replaced by a second VM).
    return [dataclasses.replace(v, deleting=True) if (namespace, v.uid or v.name) in recent else v for v in indexed]


def _owner(dep: Deployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "name": dep.metadata.name,
        "uid": dep.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def _delete_instances(
    ctx: Context, namespace: str, victims: list[str], views: list[InstanceView], changed: set[str]
) -> None:
    already_deleting = {v.name for v in views if v.deleting}
    uids = {v.name: v.uid or v.name for v in views}
    for victim in victims:
        if await ctx.kube.delete("instances", namespace, victim) and victim not in already_deleting:
            changed.add(victim)
        _remember(ctx.recent_deletes, (namespace, uids.get(victim, victim)))


async def _update_drift_policies(ctx: Context, namespace: str, policies: dict[str, str], changed: set[str]) -> None:
    """Set the group's driftPolicy on existing Instances in place (the one spec field that may
    change). The spec change is their next generation, and nothing the status reports depends
    on it: the status records that generation as observed, or Argo CD and kstatus would show
    the Instance progressing until its VM next changes."""
    for name, policy in policies.items():
        await ctx.kube.patch("instances", namespace, name, {"spec": {"driftPolicy": policy}})
        obj = await ctx.kube.get("instances", namespace, name)
        raw = (obj or {}).get("status") or {}
        generation = ((obj or {}).get("metadata") or {}).get("generation")
        seen = raw.get("observedGeneration")
        if obj is None or seen is None or generation is None or seen >= generation:
            continue  # gone, not looked at yet (its first status takes the generation), or done
        await write_status(ctx, obj, raw, InstanceStatus.model_validate(raw), announce=False)
        changed.add(name)


async def _create_instances(
    ctx: Context,
    namespace: str,
    *,
    creates: list[NewInstance],
    owner: dict[str, Any],
    indexed: set[str],
    changed: set[str],
) -> Refused | None:
    """Create what the plan asks for; the first refusal (quota, policy) stops the rest.

    Our own creates reach the index a moment later; until then the plan asks for the same
    names again. Sending them would only earn 409s (hundreds while a large fleet is created).
    """
    created = ctx.recent_creates
    _forget_older(created, time.monotonic() - RECENT)
    for name in indexed:
        created.pop((namespace, name), None)
    sent = 0
    for new in creates:
        if (namespace, new.name) in created:
            continue
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Instance",
            "metadata": {
                "name": new.name,
                "namespace": namespace,
                "labels": dict(new.labels),
                "ownerReferences": [owner],
                # Created with the finalizer kopf would add first (deletion destroys the VM):
                # kopf then runs the create handler on the first event instead of patching the
                # finalizer and waiting for the next one (a write and a round trip less, on the
                # way to every VM's create).
                "finalizers": [FINALIZER],
                # kopf's marker, which it would patch on after the first handler (storage.py).
                "annotations": dict([MARKER]),
            },
            "spec": new.spec.to_api(),
        }
        try:
            # Ranked by how many this pass sent before: see handlers/kube.py, PROVISION.
            if await ctx.kube.create("instances", namespace, manifest, rank=sent):
                changed.add(new.name)
        except Refused as exc:
            return exc
        sent += 1
        _remember(created, (namespace, new.name))
    return None


def _remember(recent: dict[tuple[str, str], float], key: tuple[str, str]) -> None:
    """Record ``key`` as of now, at the end: the dict stays ordered by time (_forget_older)."""
    recent.pop(key, None)
    recent[key] = time.monotonic()


def _forget_older(recent: dict[tuple[str, str], float], cutoff: float) -> None:
    """Drop the entries recorded before ``cutoff``: only those, from the oldest, so a pass costs
    what it drops, not the size of the whole dict (thousands while a large fleet is created,
    and every Deployment's pass would walk them all)."""
    while recent:
        key, at = next(iter(recent.items()))
        if at >= cutoff:
            return
        del recent[key]


def _references(
    dep: Deployment, namespace: str, indexes: Indexes
) -> tuple[dict[str, CredentialView], dict[str, EffectiveImage | str]]:
    """The credentials and Images the Deployment refers to, as the planner wants them."""
    creds: dict[str, CredentialView] = {}
    for group in dep.spec.node_groups:
        for target in group.placement.targets:
            view = _first(indexes.credentials, (namespace, target.credential))
            if view is not None:
                # The index keeps the count: len() of its store, not a walk over every Instance
                # of the credential (that made each round O(Deployments x Instances)).
                in_use = len(indexes.instances_by_credential.get((namespace, target.credential), ()))
                creds[target.credential] = dataclasses.replace(view, in_use=in_use)
    imgs: dict[str, EffectiveImage | str] = {}
    for group in dep.spec.node_groups:
        try:
            imgs[group.image_ref] = effective_image(group.image_ref, lambda n: _first(indexes.images, (namespace, n)))
        except ImageError as exc:
            imgs[group.image_ref] = str(exc)

    return creds, imgs


@kopf.on.delete(GROUP, VERSION, "deployments", id="cleanup")
async def cleanup(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    **kwargs: Any,
) -> None:
    """Delete every Instance (their finalizers destroy the VMs) and wait until all are gone."""
    instances_by_deployment = by_deployment(kwargs)
    assert namespace is not None
    ctx = ctx_of(memo)
    dep = Deployment.model_validate(dict(body))
    views = list(instances_by_deployment.get((namespace, name), []))
    if not views:
        return
    orphan = dep.spec.deletion_policy == "Orphan"
    for view in views:
        if view.deleting:
            continue
        if orphan:
            await ctx.kube.patch(
                "instances", namespace, view.name, {"metadata": {"annotations": {ORPHAN_ANNOTATION: "true"}}}
            )
        await ctx.kube.delete("instances", namespace, view.name)
    old = dict(body.get("status") or {})
    if old.get("phase") != "Deleting":
        status = DeploymentStatus.model_validate(old).model_copy(update={"phase": "Deleting"})
        await write_status(ctx, body, old, status, announce=False)
        ctx.event(
            body,
            "Normal",
            "Deleting",
            f"deleting {len(views)} Instances ({'orphaning' if orphan else 'destroying'} their VMs)",
        )
    await asyncio.sleep(0)
    raise kopf.TemporaryError(f"waiting for {len(views)} Instances to be deleted", delay=2)
