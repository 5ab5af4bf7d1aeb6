"""kopf's watcher with many new objects at once (operator.py, ``_spawn_without_yielding``): a new
object's event reaches its worker without the watcher handing the event loop round first, so a
burst of new objects is taken in at once, not one loop round per object."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits import aiotasks
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

import skyfleet.operator  # noqa: F401 - importing installs the spawn

pytestmark = pytest.mark.unit

INSTANCES = references.Resource(group="skyfleet.io", version="v1alpha1", plural="instances")


class Rounds:
    """Counts the event loop's rounds, each made as dear as a busy operator's (2 ms of work)."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            time.sleep(0.002)  # noqa: ASYNC251 - the other ready tasks' work in one round, on purpose
            self.count += 1
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def added(n: int) -> dict[str, Any]:
    meta = {"uid": f"uid-{n}", "name": f"shop-web-{n}", "namespace": "team-a", "resourceVersion": str(n)}
    return {"type": "ADDED", "object": {"metadata": meta}}


async def test_a_burst_of_new_objects_reaches_the_handlers_within_a_few_loop_rounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 300
    stream_done = asyncio.Event()

    async def stream(**_: Any) -> AsyncIterator[Any]:
        for i in range(n):  # already on the wire: the watch stream has them all buffered
            yield added(i)
        stream_done.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(queueing.watching, "infinite_watch", stream)
    seen: dict[str, int] = {}
    all_seen = asyncio.Event()
    rounds = Rounds()

    async def processor(*, raw_event: Any, **_: Any) -> None:
        seen[raw_event["object"]["metadata"]["uid"]] = rounds.count
        if len(seen) == n:
            all_seen.set()

    settings = kopf.OperatorSettings()
    settings.queueing.exit_timeout = 0.1
    watcher = asyncio.create_task(
        queueing.watcher(namespace=None, settings=settings, resource=INSTANCES, processor=processor)
    )
    try:
        await asyncio.wait_for(stream_done.wait(), 30)
        taken_in = rounds.count
        await asyncio.wait_for(all_seen.wait(), 30)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await rounds.stop()
    # kopf's own spawn hands the loop round once per new object: 300 rounds (0.6 s here, 20-130 ms
    # a round in an operator creating thousands of Instances) before the last event is read.
    assert taken_in <= 5
    assert max(seen.values()) <= 10
    assert len(seen) == n


async def test_the_scheduler_still_runs_what_it_is_given_and_refuses_once_closed() -> None:
    scheduler = aiotasks.Scheduler()
    ran: list[int] = []

    async def job(i: int) -> None:
        ran.append(i)

    for i in range(50):
        await scheduler.spawn(job(i), name=f"job {i}")
    await asyncio.wait_for(scheduler.wait(), 5)
    assert sorted(ran) == list(range(50))

    hanging = asyncio.Event()

    async def hang() -> None:
        await hanging.wait()

    await scheduler.spawn(hang())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(scheduler.close(), 5)  # cancels what still runs
    never = job(99)
    with pytest.raises(RuntimeError, match="closed"):
        await scheduler.spawn(never)
    assert 99 not in ran
