"""Where the operator's memory goes: with Python's own ``PYTHONTRACEMALLOC=<frames>`` set, each
SIGUSR2 writes a tracemalloc snapshot next to the process (``$TMPDIR``), for diffing offline
(bench/scale.py ``--tracemalloc`` does both), and beside it (``.types``) a census of the objects
the garbage collector tracks, by type, largest count first: what holds memory per object, which
the snapshot's allocation sites do not say. Without it, nothing is installed.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import kopf

logger = logging.getLogger(__name__)
_counter = itertools.count()


def dump() -> Path:
    path = Path(tempfile.gettempdir()) / f"skyfleet-tracemalloc-{os.getpid()}-{next(_counter)}.snap"
    tracemalloc.take_snapshot().dump(str(path))
    path.with_suffix(".types").write_text(census())
    logger.info("tracemalloc snapshot written to %s", path)
    return path


def census(top: int = 60) -> str:
    """Objects the garbage collector tracks, by type: count and shallow bytes (getsizeof)."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    lines = [f"{sum(counts.values())} objects, {sum(sizes.values())} bytes"]
    lines += [f"{n:>9} {sizes[name]:>12} {name}" for name, n in counts.most_common(top)]
    return "\n".join(lines) + "\n"


@kopf.on.startup()
async def install(**_: Any) -> None:
    if tracemalloc.is_tracing():
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)
