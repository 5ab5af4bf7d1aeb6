"""Conditions that only move their timestamp when their status moves.

GitOps tools diff whole objects; a ``lastTransitionTime`` refreshed on every pass would make a
converged object look changed forever. Reason and message may change without a transition.

Beside ``Ready`` every kind carries kstatus's two abnormal-true conditions (sigs.k8s.io/cli-utils
kstatus, read by Flux, ``kubectl wait``-style tools and ``helm --wait`` with kstatus):
``Reconciling`` True while Skyfleet works towards Ready, ``Stalled`` True when it cannot get
there without a person (the same cases the shipped Argo CD health checks call Degraded).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from skyfleet.api.common import Condition, ConditionStatus
from skyfleet.reconcile.messages import safe_message

__all__ = ["READY", "RECONCILING", "STALLED", "find_condition", "set_condition", "stalled_by", "with_progress"]

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; order is kept, a new type goes last.

    The message is made safe here (bounded, one line, no encoded payloads), so no caller can
    write a status the schema refuses or copy a response body into it.
    """
    message = safe_message(message)
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = find_condition(conditions, type_)
    transition = now if old is None or old.status != status else old.last_transition_time
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=transition,
    )
    out = [new if c.type == type_ else c for c in conditions]
    if old is None:
        out.append(new)
    return out


# Phases that wait for a person, per kind (Ready False in them is Stalled, not Reconciling).
_STALLED_PHASES: dict[str, frozenset[str]] = {
    "Deployment": frozenset({"Degraded"}),
    "Instance": frozenset({"Failed", "Lost", "Stopped"}),
    "Image": frozenset({"Unresolved"}),
    "CloudCredential": frozenset({"Failed"}),
}
# Reasons that clear by themselves even in a stalled phase: the cloud is retried soon.
_TRANSIENT_REASONS = frozenset({"Unreachable", "MetricUnavailable"})
# Kinds without a phase whose every other Ready=False waits for a person (a conflict, a missing
# target, a bad query): the Argo CD check calls them Degraded too.
_STALLED_WHEN_NOT_READY = frozenset({"ScalingPolicy"})


def stalled_by(kind: str, phase: str | None, conditions: Sequence[Condition]) -> Condition | None:
    """The condition that says the object cannot become (or stay) Ready without a person (a
    spec, a Secret or the cloud account must change), or None; the same rules as the Degraded
    verdict of the Argo CD health checks in charts/skyfleet/argocd."""
    degraded = find_condition(conditions, "Degraded")
    if degraded is not None and degraded.status == ConditionStatus.TRUE:
        return degraded
    ready = find_condition(conditions, READY)
    if ready is None or ready.status == ConditionStatus.TRUE or ready.reason in _TRANSIENT_REASONS:
        return None
    if kind in _STALLED_WHEN_NOT_READY:
        return ready
    return ready if phase in _STALLED_PHASES.get(kind, frozenset()) else None


def with_progress(
    conditions: Sequence[Condition], *, stalled: Condition | None, now: datetime, generation: int | None = None
) -> list[Condition]:
    """``conditions`` with kstatus's Reconciling and Stalled set: Stalled True with the reason
    of ``stalled`` (see ``stalled_by``); else Reconciling True while Ready is not True (or not
    there yet); both False once Ready is True. Never both True."""
    ready = find_condition(conditions, READY) or Condition(
        type=READY, status=ConditionStatus.UNKNOWN, reason="Pending", message="", last_transition_time=now
    )
    reconciling = stalled is None and ready.status != ConditionStatus.TRUE
    out = set_condition(
        conditions,
        RECONCILING,
        reconciling,
        ready.reason,
        ready.message if reconciling else "",
        now=now,
        generation=generation,
    )
    cause = stalled or ready
    return set_condition(
        out,
        STALLED,
        stalled is not None,
        cause.reason,
        cause.message if stalled is not None else "",
        now=now,
        generation=generation,
    )
