"""Where new VMs of a node group go.

``Spread`` is smooth weighted round-robin over the counts that already exist, so scaling up
after a scale-down refills the target that lost VMs rather than restarting a rotation.
``Ordered`` fills the first target that can take a VM; a target that answered a quota or
capacity error is marked unavailable by the caller and skipped until the group converges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from skyfleet.api.deployment import Placement
from skyfleet.reconcile.views import CredentialView

__all__ = ["Target", "choose_targets", "targets_of"]


@dataclass(frozen=True)
class Target:
    credential: str
    region: str | None = None
    zone: str | None = None
    weight: int = 1

    @property
    def key(self) -> str:
        """Identity of a placement target in status and counts: ``credential/region``."""
        return target_key(self.credential, self.region)


def target_key(credential: str, region: str | None) -> str:
    return f"{credential}/{region or '-'}"


def targets_of(placement: Placement, credentials: Mapping[str, CredentialView]) -> list[Target]:
    """The placement's targets with the credential's region filled in where none is given."""
    out = []
    for t in placement.targets:
        cred = credentials.get(t.credential)
        region = t.region or (cred.region if cred else None)
        out.append(Target(t.credential, region, t.zone, 1 if t.weight is None else t.weight))
    return out


def choose_targets(
    strategy: str,
    targets: Sequence[Target],
    existing: Iterable[Target | str],
    count: int,
    *,
    credentials: Mapping[str, CredentialView],
    unavailable: Iterable[str] = (),
) -> list[Target]:
    """Targets for ``count`` new VMs; fewer when no target can take more.

    ``existing`` holds the targets (or target keys) of the group's VMs that stay. A target is
    skipped when its credential is unknown or not Ready, its key is in ``unavailable``, or its
    credential reached ``maxInstances`` (counted over the Instances of every Deployment using
    it). That count plans; it is no guarantee: what is enforced is the connector's count of the
    credential's VMs (``InstanceBudget``), whose refusal (QuotaExceeded) moves the next try to
    the next target like any quota answer. Ordered is
    stricter about credentials still being verified: it waits for them rather than fall back, or
    a slow first verification would move VMs to the fallback for good.
    """
    blocked = set(unavailable)
    counts: dict[str, int] = {t.key: 0 for t in targets}
    for e in existing:
        key = e if isinstance(e, str) else e.key
        if key in counts:
            counts[key] += 1
    room: dict[str, float] = {}
    ready: set[str] = set()
    pending: set[str] = set()
    for cred in {t.credential for t in targets}:
        view = credentials.get(cred)
        if view is not None and view.pending:
            pending.add(cred)
        if view is None or not view.ready:
            room[cred] = 0
        else:
            ready.add(cred)
            room[cred] = float("inf") if view.max_instances is None else max(0, view.max_instances - view.in_use)

    def usable(t: Target) -> bool:
        return t.key not in blocked and room[t.credential] > 0

    chosen: list[Target] = []
    for _ in range(count):
        candidates = [t for t in targets if usable(t)]
        if strategy == "Ordered":
            pick = _first_in_order(targets, blocked, ready, pending, room)
        else:
            weighted = [t for t in candidates if t.weight > 0]
            # Lowest share after adding one VM wins; list order breaks ties, so results are stable.
            pick = min(weighted, key=lambda t: (counts[t.key] + 1) / t.weight, default=None)
        if pick is None:
            break
        chosen.append(pick)
        counts[pick.key] += 1
        room[pick.credential] -= 1
    return chosen


def _first_in_order(
    targets: Sequence[Target], blocked: set[str], ready: set[str], pending: set[str], room: dict[str, float]
) -> Target | None:
    for target in targets:
        if target.credential in pending and target.key not in blocked:
            return None  # not verified yet: wait rather than place on the fallback for good
        if target.key in blocked or room[target.credential] <= 0:
            continue  # quota, capacity, maxInstances or a failed credential: the next one takes over
        return target
    return None
