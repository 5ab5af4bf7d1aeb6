"""skyfleet.contract.budget: maxInstances counted between creates, never more VMs than the limit.

The count may err only towards fewer creates: a listing that lags (misses a VM made moments ago,
still shows one destroyed moments ago) must not free room, a create whose outcome is unknown
holds its room until a listing that must show it, and concurrent reservations cannot pass the
limit together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from skyfleet.contract import InstanceBudget, QuotaExceeded

pytestmark = pytest.mark.unit

C, R = "cluster", "r1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def listing(ids: Iterable[str], calls: list[int] | None = None):  # type: ignore[no-untyped-def]
    async def run() -> list[str]:
        if calls is not None:
            calls.append(1)
        await asyncio.sleep(0)
        return list(ids)

    return run


def budget(clock: Clock | None = None) -> InstanceBudget:
    return InstanceBudget(lag=30.0, relist=15.0, clock=clock or Clock())


async def test_the_seed_listing_counts_vms_without_instance_and_is_taken_once() -> None:
    calls: list[int] = []
    b = budget()
    await b.reserve(C, R, 3, listing(["orphan-1", "orphan-2"], calls))
    assert b.count(C) == 3  # two orphans and the create in flight
    b.created(C, R, "vm-3")
    with pytest.raises(QuotaExceeded) as refused:
        await b.reserve(C, R, 3, listing(["orphan-1", "orphan-2"], calls))
    assert refused.value.code == "MaxInstances"
    assert calls == [1]  # the refusal relisted no sooner than ``relist`` after the seed


async def test_many_concurrent_reservations_never_pass_the_limit() -> None:
    b = budget()
    seeds: list[int] = []

    async def one() -> bool:
        try:
            await b.reserve(C, R, 7, listing(["old-1", "old-2"], seeds))
        except QuotaExceeded:
            return False
        await asyncio.sleep(0)
        b.created(C, R, f"vm-{id(asyncio.current_task())}")
        return True

    results = await asyncio.gather(*(one() for _ in range(40)))
    assert sum(results) == 5
    assert b.count(C) == 7
    assert len(seeds) == 1  # forty creates, one listing


async def test_regions_of_one_credential_share_the_limit() -> None:
    b = budget()
    await b.reserve(C, "east", 2, listing(["e-1"]))
    b.created(C, "east", "e-2")
    with pytest.raises(QuotaExceeded):
        await b.reserve(C, "west", 2, listing([]))
    assert b.count("another-cluster") == 0


@pytest.mark.parametrize(
    ("story", "listed_after", "expected"),
    [
        # A VM made 5 s before a listing that misses it still counts (the listing lags).
        ("made", 5.0, 1),
        # ...until a listing started ``lag`` after it: then the listing is right that it is gone.
        ("made", 31.0, 0),
        # A VM destroyed 5 s before a listing that still shows it no longer counts.
        ("destroyed", 5.0, 0),
        # A create whose answer was lost counts until a listing that must show its VM.
        ("unsure", 5.0, 1),
        ("unsure", 31.0, 0),
        # A refused create never counted.
        ("refused", 5.0, 0),
    ],
)
async def test_a_lagging_listing_never_frees_room_early(story: str, listed_after: float, expected: int) -> None:
    clock = Clock()
    b = budget(clock)
    b.listed(C, R, [], started=clock.now)
    await b.reserve(C, R, 10, listing([]))
    if story == "made":
        b.created(C, R, "vm-1")
        shown: list[str] = []
    elif story == "destroyed":
        b.created(C, R, "vm-1")
        clock.now += 60
        b.listed(C, R, ["vm-1"], started=clock.now)
        b.gone(C, R, "vm-1")
        shown = ["vm-1"]
    elif story == "unsure":
        b.unsure(C, R, token="uid-1")
        shown = []
    else:
        b.refused(C, R)
        shown = []
    clock.now += listed_after
    b.listed(C, R, shown, started=clock.now)
    assert b.count(C) == expected


async def test_a_vm_deleted_outside_frees_its_room_at_the_limit_through_one_relist() -> None:
    clock = Clock()
    b = budget(clock)
    calls: list[int] = []
    await b.reserve(C, R, 2, listing(["vm-1"], calls))
    b.created(C, R, "vm-2")
    clock.now += 60  # vm-2 was deleted by hand meanwhile
    await b.reserve(C, R, 2, listing(["vm-1"], calls))
    assert calls == [1, 1]
    assert b.count(C) == 2


async def test_an_older_listing_answering_late_is_ignored() -> None:
    clock = Clock()
    b = budget(clock)
    b.listed(C, R, ["vm-1", "vm-2"], started=clock.now)
    b.listed(C, R, [], started=clock.now - 100)
    assert b.count(C) == 2


async def test_a_retry_with_an_idempotency_token_takes_over_its_own_unsure_room() -> None:
    b = budget()
    await b.reserve(C, R, 2, listing(["vm-1"]))
    b.unsure(C, R, token="uid-2")
    # The cloud deduplicates by token: the retry cannot make a second VM, so it needs no more room.
    await b.reserve(C, R, 2, listing(["vm-1"]), token="uid-2")
    b.created(C, R, "vm-2", token="uid-2")
    assert b.count(C) == 2


async def test_adopting_a_listed_vm_does_not_count_it_twice() -> None:
    b = budget()
    await b.reserve(C, R, 5, listing(["vm-1"]))
    b.refused(C, R)
    b.adopted(C, R, "vm-1")
    assert b.count(C) == 1


async def test_without_a_limit_nothing_is_listed() -> None:
    calls: list[int] = []
    b = budget()
    await b.reserve(C, R, None, listing(["vm-1"], calls))
    b.created(C, R, "vm-2")
    assert calls == []
    assert not b.seeded(C, R)
