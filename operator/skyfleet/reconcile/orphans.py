"""What to do about orphaned VMs: tagged with this cluster's id and namespace, no Instance left.

They are counted at every observation (the listing is there anyway). Deleting them is opt-in
per CloudCredential, only on providers that can release VMs (VMs kept by ``deletionPolicy:
Orphan`` are untagged first, so they never look like orphans), and only after a VM has been
seen without an Instance for the whole grace period: a VM whose Instance is being created, or
whose listing raced an Instance's creation, is never taken for an orphan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["OrphanPlan", "plan_orphans"]

_SHOWN = 10  # ids named in a message; the count says the rest


@dataclass
class OrphanPlan:
    # provider id -> when it was first seen without an Instance (monotonic seconds)
    first_seen: dict[str, float] = field(default_factory=dict)
    delete: list[str] = field(default_factory=list)
    found: bool = False
    reason: str = "NoOrphans"
    message: str = ""


def _named(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def plan_orphans(
    orphans: Sequence[str],
    first_seen: Mapping[str, float],
    *,
    now: float,
    delete: bool,
    can_release: bool,
    grace: float,
    provider: str,
) -> OrphanPlan:
    """``orphans`` are provider ids seen without an Instance in this observation."""
    ids = sorted(set(orphans))
    seen = {i: first_seen.get(i, now) for i in ids}  # forgets VMs that are gone or adopted
    if not ids:
        return OrphanPlan(seen, message="every VM tagged for this cluster has an Instance")
    what = f"{len(ids)} VMs tagged for this cluster have no Instance: {_named(ids)}"
    if not delete:
        return OrphanPlan(seen, [], True, "OrphansFound", f"{what}; set spec.orphans.delete to delete them")
    if not can_release:
        return OrphanPlan(
            seen,
            [],
            True,
            "OrphanDeletionUnsupported",
            f"{what}; {provider} cannot remove tags from a VM, so VMs kept with deletionPolicy: Orphan "
            "cannot be told apart from orphans and none is deleted",
        )
    due = [i for i in ids if now - seen[i] >= grace]
    return OrphanPlan(
        seen,
        due,
        True,
        "DeletingOrphans",
        f"{what}; each is deleted once it has had no Instance for {grace:g}s",
    )
