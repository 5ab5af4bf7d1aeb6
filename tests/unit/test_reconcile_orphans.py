"""The orphan policy: report always, delete only when asked, releasable, and past the grace."""

from __future__ import annotations

import pytest

from skyfleet.reconcile.orphans import plan_orphans

pytestmark = pytest.mark.unit

GRACE = 300.0


def plan(orphans: list[str], seen: dict[str, float], now: float, **policy: bool) -> tuple[list[str], str]:
    result = plan_orphans(
        orphans,
        seen,
        now=now,
        delete=policy.get("delete", True),
        can_release=policy.get("can_release", True),
        grace=GRACE,
        provider="ec2",
    )
    return result.delete, result.reason


@pytest.mark.parametrize(
    ("orphans", "seen", "now", "policy", "deleted", "reason"),
    [
        ([], {}, 1000.0, {}, [], "NoOrphans"),
        # first sighting: never deleted at once, whatever the policy
        (["i-1"], {}, 1000.0, {}, [], "DeletingOrphans"),
        # seen without an Instance for the whole grace: deleted
        (["i-1"], {"i-1": 700.0}, 1000.0, {}, ["i-1"], "DeletingOrphans"),
        # only the ones past the grace
        (["i-2", "i-1"], {"i-1": 700.0, "i-2": 999.0}, 1000.0, {}, ["i-1"], "DeletingOrphans"),
        # reporting only (the default)
        (["i-1"], {"i-1": 0.0}, 1000.0, {"delete": False}, [], "OrphansFound"),
        # a provider that cannot untag kept VMs: nothing is deleted, and the reason says why
        (["i-1"], {"i-1": 0.0}, 1000.0, {"can_release": False}, [], "OrphanDeletionUnsupported"),
    ],
)
def test_orphan_verdicts(
    orphans: list[str],
    seen: dict[str, float],
    now: float,
    policy: dict[str, bool],
    deleted: list[str],
    reason: str,
) -> None:
    assert plan(orphans, seen, now, **policy) == (deleted, reason)


def test_a_vm_that_regains_its_instance_starts_its_grace_over() -> None:
    first = plan_orphans(["i-1"], {}, now=100.0, delete=True, can_release=True, grace=GRACE, provider="ec2")
    # the next observation sees it with an Instance (a watch event arrived late): forgotten
    between = plan_orphans([], first.first_seen, now=200.0, delete=True, can_release=True, grace=GRACE, provider="ec2")
    assert between.first_seen == {}
    again = plan_orphans(
        ["i-1"], between.first_seen, now=450.0, delete=True, can_release=True, grace=GRACE, provider="ec2"
    )
    assert again.delete == []  # 350 s after the first sighting, but only just seen again
    assert again.first_seen == {"i-1": 450.0}


def test_messages_name_the_vms_and_stay_bounded() -> None:
    ids = [f"i-{n:03d}" for n in range(40)]
    result = plan_orphans(ids, {}, now=0.0, delete=False, can_release=True, grace=GRACE, provider="ec2")
    assert result.found
    assert result.message.startswith("40 VMs tagged for this cluster have no Instance: i-000, i-001")
    assert "and 30 more" in result.message
    assert "i-039" not in result.message
    # the same orphans give the same message: a converged credential gets no status writes
    assert (
        result.message
        == plan_orphans(
            ids, result.first_seen, now=50.0, delete=False, can_release=True, grace=GRACE, provider="ec2"
        ).message
    )
