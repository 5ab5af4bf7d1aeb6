"""Give the heap the operator no longer uses back to the system, so its memory follows the
fleet it holds rather than the largest wave it went through.

A wave of creates (or a restart's first listing) decodes thousands of bodies, parses cloud
listings and queues status writes and events at once; once they are handled, Python frees
them, but glibc keeps the freed pages in its arenas for the next allocation, and the process's
resident memory stays at the wave's peak. ``malloc_trim(0)`` hands every whole free page back
(``madvise``), wherever it sits in the heap. Here it runs every ``TRIM_PERIOD`` seconds in a
thread (ctypes releases the GIL; glibc holds each arena's lock while it walks that arena's free
chunks, a few milliseconds at a few hundred MiB), and only where the C library is glibc:
elsewhere nothing is installed. Pages given back and needed again cost a page fault each.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import kopf

__all__ = ["TRIM_PERIOD", "glibc_trim", "resident_kib", "trim_forever"]

logger = logging.getLogger(__name__)

# Seconds between trims: short against a wave (minutes at thousands of Instances), long
# against the trim itself (milliseconds).
TRIM_PERIOD = 30.0
_TASK = "skyfleet.heap.trim"


def glibc_trim() -> Callable[[], int] | None:
    """glibc's ``malloc_trim``, or None where the C library is not glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def call() -> int:
        return int(trim(0))

    return call


def resident_kib() -> int | None:
    """This process's resident memory (VmRSS) in KiB, where /proc has it."""
    try:
        with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def trim_forever(trim: Callable[[], int], period: float = TRIM_PERIOD) -> None:
    """Trim every ``period`` seconds until cancelled."""
    while True:
        await asyncio.sleep(period)
        before, started = resident_kib(), time.monotonic()
        await asyncio.to_thread(trim)
        after = resident_kib()
        if before is not None and after is not None:
            logger.debug(
                "heap trimmed in %.1f ms: RSS %d -> %d KiB", (time.monotonic() - started) * 1000, before, after
            )


@kopf.on.startup()
async def start_trimming(memo: Any, **_: Any) -> None:
    trim = glibc_trim()
    if trim is not None:
        memo[_TASK] = asyncio.create_task(trim_forever(trim), name=_TASK)


@kopf.on.cleanup()
async def stop_trimming(memo: Any, **_: Any) -> None:
    task = memo.get(_TASK)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
