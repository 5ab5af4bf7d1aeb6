"""Placement: where new VMs of a node group go."""

from __future__ import annotations

from collections import Counter

import pytest

from skyfleet.api.deployment import Placement, PlacementTarget
from skyfleet.reconcile.placement import Target, choose_targets, targets_of
from skyfleet.reconcile.views import CredentialView

pytestmark = pytest.mark.unit

A, B, C = Target("a", "r1"), Target("b", "r2"), Target("c", "r3")
READY = {n: CredentialView(n, "ec2", f"r{i}", ready=True) for i, n in enumerate("abc", 1)}


def keys(targets: list[Target]) -> list[str]:
    return [t.credential for t in targets]


@pytest.mark.parametrize(
    ("targets", "existing", "count", "expected"),
    [
        # equal weights alternate, in list order
        ([A, B], [], 4, ["a", "b", "a", "b"]),
        # weights 2:1: twice as many to a in every cycle of three, not all of a's share first
        ([Target("a", "r1", weight=2), B], [], 6, ["a", "a", "b", "a", "a", "b"]),
        # existing VMs count: after a scale-down that hit b, refill b first
        ([A, B], ["a/r1", "a/r1"], 2, ["b", "b"]),
        # weight 0 never receives VMs
        ([A, Target("b", "r2", weight=0)], [], 3, ["a", "a", "a"]),
        ([A, B, C], [], 3, ["a", "b", "c"]),
    ],
)
def test_spread_is_weighted_round_robin(
    targets: list[Target], existing: list[str], count: int, expected: list[str]
) -> None:
    assert keys(choose_targets("Spread", targets, existing, count, credentials=READY)) == expected


def test_spread_converges_to_weights_over_many_vms() -> None:
    targets = [Target("a", "r1", weight=3), Target("b", "r2", weight=1)]
    counts = Counter(keys(choose_targets("Spread", targets, [], 400, credentials=READY)))
    assert counts == {"a": 300, "b": 100}


@pytest.mark.parametrize(
    ("credentials", "unavailable", "expected"),
    [
        (READY, [], ["a", "a", "a"]),
        # a answered a quota error: everything goes to the next target
        (READY, ["a/r1"], ["b", "b", "b"]),
        # a's credential failed verification (Ready=False): fall back
        ({**READY, "a": CredentialView("a", "ec2", "r1", ready=False)}, [], ["b", "b", "b"]),
        # a's credential is not verified yet: wait for it instead of placing on b for good
        ({**READY, "a": CredentialView("a", "ec2", "r1", ready=False, pending=True)}, [], []),
        # ... unless a already answered quota: then b takes over
        ({**READY, "a": CredentialView("a", "ec2", "r1", ready=False, pending=True)}, ["a/r1"], ["b", "b", "b"]),
        # a has room for one more VM under maxInstances
        ({**READY, "a": CredentialView("a", "ec2", "r1", ready=True, max_instances=5, in_use=4)}, [], ["a", "b", "b"]),
        # nothing can take a VM: fewer targets than asked for
        (READY, ["a/r1", "b/r2"], []),
        ({}, [], []),
    ],
)
def test_ordered_fills_the_first_usable_target(
    credentials: dict[str, CredentialView], unavailable: list[str], expected: list[str]
) -> None:
    got = choose_targets("Ordered", [A, B], [], 3, credentials=credentials, unavailable=unavailable)
    assert keys(got) == expected


def test_max_instances_counts_across_strategies_and_stops_spread() -> None:
    creds = {
        "a": CredentialView("a", "ec2", "r1", ready=True, max_instances=1, in_use=0),
        "b": CredentialView("b", "ec2", "r2", ready=True, max_instances=2, in_use=1),
    }
    assert keys(choose_targets("Spread", [A, B], [], 5, credentials=creds)) == ["a", "b"]


def test_targets_take_the_credential_region_when_none_is_given() -> None:
    placement = Placement(
        targets=[PlacementTarget(credential="a"), PlacementTarget(credential="b", region="eu-west-1", weight=3)]
    )
    assert targets_of(placement, READY) == [Target("a", "r1", None, 1), Target("b", "eu-west-1", None, 3)]
