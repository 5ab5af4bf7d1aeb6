"""The heap trim (handlers/heap.py): freed memory goes back to the system, on a period, in a
task the operator's start-up starts and its cleanup stops."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from skyfleet.handlers.heap import glibc_trim, resident_kib, start_trimming, stop_trimming, trim_forever

pytestmark = pytest.mark.unit


def test_trim_gives_freed_heap_back_to_the_system() -> None:
    # What a wave leaves: 80 MiB decoded and freed, one block after it still in use, so glibc
    # cannot shrink the heap's top by itself and keeps the freed pages resident.
    trim = glibc_trim()
    assert trim is not None  # the operator's image and this machine run glibc
    before = resident_kib()
    assert before is not None
    blocks = [bytearray(4000) for _ in range(20_000)]
    kept = blocks[-1]
    del blocks
    trim()
    after = resident_kib()
    assert after is not None
    assert after - before < 40 * 1024, (before, after)
    assert len(kept) == 4000


async def test_trim_runs_every_period_until_cancelled() -> None:
    calls: list[float] = []

    def trim() -> int:
        calls.append(0.0)
        return 1

    task = asyncio.create_task(trim_forever(trim, period=0.01))
    await asyncio.sleep(0.2)
    assert len(calls) >= 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == count


async def test_startup_starts_one_trim_task_and_cleanup_stops_it() -> None:
    memo = kopf.Memo()
    await start_trimming(memo=memo)
    [task] = [t for t in memo.values() if isinstance(t, asyncio.Task)]
    assert not task.done()
    await stop_trimming(memo=memo)
    assert task.cancelled()
