"""The CloudCredential's RegionsObserved condition: which regions could not be observed, and why."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["RegionFailure", "RegionsVerdict", "regions_condition"]


@dataclass(frozen=True)
class RegionFailure:
    reason: str  # RegionUnknown: the cloud does not know it; RegionUnavailable: it failed to answer
    message: str


@dataclass(frozen=True)
class RegionsVerdict:
    ok: bool
    reason: str
    message: str


def regions_condition(failing: Mapping[str, RegionFailure], *, observed: Sequence[str]) -> RegionsVerdict:
    """One condition for all regions: the failing ones named (unknown ones first), the rest fine."""
    if not failing:
        where = ", ".join(r or "(default)" for r in observed)
        return RegionsVerdict(True, "RegionsObserved", f"observed {where}")
    ordered = sorted(failing.items(), key=lambda kv: (kv[1].reason != "RegionUnknown", kv[0]))
    reason = ordered[0][1].reason
    message = "; ".join(f.message for _, f in ordered)
    if observed:
        message += f" (still observed: {', '.join(r or '(default)' for r in observed)})"
    return RegionsVerdict(False, reason, message)
