"""kstatus's status rules for custom resources, ported from sigs.k8s.io/cli-utils
(pkg/kstatus/status: ``Compute``, ``checkGenericProperties``, ``checkGeneration``).

kstatus is what Flux, ``helm --wait`` (kstatus mode) and ``kubectl``-style tooling read. For a
kind it has no special rules for (every skyfleet.io kind), it decides in this order:
1. ``metadata.deletionTimestamp`` set: Terminating;
2. ``status.observedGeneration`` present and not ``metadata.generation``: InProgress;
3. the first condition, in list order, that is ``Reconciling`` True (InProgress) or ``Stalled``
   True (Failed);
4. otherwise Current (a ``Ready`` condition is not read at all).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CURRENT", "FAILED", "IN_PROGRESS", "TERMINATING", "compute"]

IN_PROGRESS, FAILED, CURRENT, TERMINATING = "InProgress", "Failed", "Current", "Terminating"


def compute(obj: dict[str, Any]) -> tuple[str, str]:
    """(kstatus status, message) of one object, as ``status.Compute`` returns them."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    status = obj.get("status") or {}
    generation = meta.get("generation")
    if generation is not None and "observedGeneration" in status:
        observed = status["observedGeneration"]
        if observed != generation:
            return (
                IN_PROGRESS,
                f"{obj.get('kind')} generation is {generation}, but latest observed generation is {observed}",
            )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Reconciling" and cond.get("status") == "True":
            return IN_PROGRESS, str(cond.get("reason") or "")
        if cond.get("type") == "Stalled" and cond.get("status") == "True":
            return FAILED, str(cond.get("message") or "")
    return CURRENT, "Resource is current"
