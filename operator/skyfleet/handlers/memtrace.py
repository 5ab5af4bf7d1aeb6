"""Where the operator's memory goes: with Python's own ``PYTHONTRACEMALLOC=<frames>`` set, each
SIGUSR2 writes a tracemalloc snapshot next to the process (``$TMPDIR``), for diffing offline
(bench/scale.py ``--tracemalloc`` does both). Without it, nothing is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import kopf

logger = logging.getLogger(__name__)
_counter = itertools.count()


def dump() -> Path:
    path = Path(tempfile.gettempdir()) / f"skyfleet-tracemalloc-{os.getpid()}-{next(_counter)}.snap"
    tracemalloc.take_snapshot().dump(str(path))
    logger.info("tracemalloc snapshot written to %s", path)
    return path


@kopf.on.startup()
async def install(**_: Any) -> None:
    if tracemalloc.is_tracing():
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, dump)
