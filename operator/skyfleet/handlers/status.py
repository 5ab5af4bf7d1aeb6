"""The one status writer: every kind's status goes through ``write_status``.

It makes every status say the same things the same way:
- ``observedGeneration`` is the generation of the object the status was computed from (Argo CD,
  kstatus and ``kubectl wait`` treat a status without it as not yet looked at);
- kstatus's ``Reconciling`` and ``Stalled`` stand beside ``Ready`` (reconcile/conditions.py);
- only what differs is patched, so a converged object gets no write at all;
- a change of the Ready reason is announced by exactly one event (``announce``), even when two
  passes race on a status the watch has not brought back yet.

A new kind (ScalingPolicy, image bakes) builds its status model and calls::

    await write_status(ctx, body, body.get("status"), new_status)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from skyfleet.api.common import Condition, ConditionStatus
from skyfleet.handlers.context import Context, now
from skyfleet.reconcile.conditions import READY, find_condition, stalled_by, with_progress
from skyfleet.reconcile.patches import merge_patch

__all__ = ["StatusModel", "plural_of", "write_status"]

_PLURALS = {"ScalingPolicy": "scalingpolicies"}


class StatusModel(Protocol):
    """What every kind's status model has (CloudCredentialStatus, DeploymentStatus, ...)."""

    observed_generation: int | None
    conditions: list[Condition]

    def to_api(self) -> dict[str, Any]: ...

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Any: ...


def plural_of(kind: str) -> str:
    return _PLURALS.get(kind) or kind.lower() + "s"


async def write_status(
    ctx: Context,
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    new: StatusModel,
    *,
    resource_version: str | None = None,
    announce: bool = True,
    observes_spec: bool = True,
) -> dict[str, Any]:
    """Write ``new`` as the status of ``obj`` (a body, or apiVersion/kind/metadata with name,
    namespace, uid and generation), where it differs from ``old`` (the status as read).

    ``resource_version``: writers that share one object's conditions (the credential's verify
    and observe loops) pass the version ``old`` was read at; a merge patch replaces the whole
    list, so a write from a stale copy would drop the other loop's condition: ``Conflict``.
    ``observes_spec``: False for a writer that reports figures without acting on the spec (the
    credential's observation loop): the status keeps the observedGeneration it had.
    Returns the status as it stands now (written, or already so): the ``old`` of a next write.
    """
    kind = str(obj.get("kind"))
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    generation = meta.get("generation") or None if observes_spec else new.observed_generation
    ready = find_condition(new.conditions, READY)
    conditions = with_progress(
        new.conditions,
        stalled=stalled_by(kind, getattr(new, "phase", None), new.conditions),  # ScalingPolicy has none
        now=now(),
        generation=ready.observed_generation if ready is not None else None,
    )
    new = new.model_copy(update={"observed_generation": generation, "conditions": conditions})
    wanted = new.to_api()
    patch = merge_patch(old, wanted)
    if not patch:
        return wanted
    await ctx.kube.patch_status(plural_of(kind), namespace, name, patch, resource_version=resource_version)
    if announce:
        _announce(ctx, obj, old, find_condition(conditions, READY))
    return wanted


def _announce(ctx: Context, obj: Mapping[str, Any], old: Mapping[str, Any] | None, ready: Condition | None) -> None:
    """One event per change of the Ready reason: Normal when Ready, Warning otherwise."""
    if ready is None:
        return
    before = [c.get("reason") for c in (old or {}).get("conditions") or [] if c.get("type") == READY]
    if before == [ready.reason]:
        return
    meta = obj.get("metadata") or {}
    if ctx.announce_once(str(obj.get("kind")).lower(), str(meta.get("namespace")), str(meta.get("name")), ready.reason):
        type_ = "Normal" if ready.status == ConditionStatus.TRUE else "Warning"
        ctx.event(obj, type_, ready.reason, ready.message)
