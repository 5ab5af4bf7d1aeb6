"""Conditions: a transition time moves only when the status does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from skyfleet.reconcile.conditions import find_condition, set_condition

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_condition_transition_time_moves_only_with_status() -> None:
    c1 = set_condition([], "Ready", False, "Pending", "a", now=T0)
    c2 = set_condition(c1, "Ready", False, "Other", "b", now=T0 + timedelta(minutes=1))
    c3 = set_condition(c2, "Ready", True, "Ok", "", now=T0 + timedelta(minutes=2))
    assert [c.last_transition_time for c in (c1[0], c2[0], c3[0])] == [T0, T0, T0 + timedelta(minutes=2)]
    assert (c2[0].reason, c2[0].message) == ("Other", "b")
    both = set_condition(c3, "Degraded", False, "AsExpected", "", now=T0)
    assert [c.type for c in both] == ["Ready", "Degraded"]
    assert find_condition(both, "Missing") is None
