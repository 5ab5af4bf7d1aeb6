"""kopf's start-up gate with many objects (operator.py, ``_share_toggle_waits``): every object
waits until all are indexed, and the wait costs one wake-up per change, not one per waiter."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles

import skyfleet.operator  # noqa: F401 - importing installs the shared wait

pytestmark = pytest.mark.unit


async def test_objects_wait_until_every_one_is_indexed_and_the_wait_is_linear() -> None:
    evaluations = 0

    def all_on(states: object) -> bool:
        nonlocal evaluations
        evaluations += 1
        return all(states)  # type: ignore[call-overload]

    n = 300
    gate = aiotoggles.ToggleSet(all_on)
    toggles = [await gate.make_toggle(name=str(i)) for i in range(n)]
    released: list[int] = []

    async def worker(i: int) -> None:
        # As kopf's workers do: index (one after another, as the listing arrives), drop the
        # own toggle, wait for all the others.
        await asyncio.sleep(0.001 * i)
        await gate.drop_toggle(toggles[i])
        await gate.wait_for(True)
        released.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(n - 1)]
    await asyncio.sleep(0.05)
    assert released == []  # one object is not indexed yet: nobody goes
    last = asyncio.create_task(worker(n - 1))
    await asyncio.wait_for(asyncio.gather(*tasks, last), 10)
    assert sorted(released) == list(range(n))
    # kopf's own wait evaluates the state once per waiter per change: n * n / 2 here.
    assert evaluations < 10 * n


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    gate = aiotoggles.ToggleSet(all)
    toggle = await gate.make_toggle(name="x")
    first = asyncio.create_task(gate.wait_for(True))
    second = asyncio.create_task(gate.wait_for(True))
    await asyncio.sleep(0.01)
    first.cancel()
    await gate.drop_toggle(toggle)
    await asyncio.wait_for(second, 5)
    assert first.cancelled()
    await gate.wait_for(True)  # already on: returns at once
