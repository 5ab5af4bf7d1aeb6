"""The one pool of threads that blocking cloud calls run in, shared by every credential.

Cloud SDKs are synchronous, so each call holds a thread while it waits. Per-credential pools
would let N credentials hold N times their concurrency in threads; one process-wide pool keeps
the total bounded however many credentials tenants create (each credential's own concurrency
cap still applies on top).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["DEFAULT_MAX_THREADS", "THREAD_PREFIX", "configure", "executor", "max_threads"]

DEFAULT_MAX_THREADS = 32
THREAD_PREFIX = "skyfleet-cloud"


class _Pool:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limit = DEFAULT_MAX_THREADS
        self.executor: ThreadPoolExecutor | None = None


_POOL = _Pool()


def configure(limit: int) -> None:
    """Cap the threads of every cloud call in this process at ``limit``.

    A pool already running with another size is replaced; calls queued or running on it finish
    there, new calls go to the new pool.
    """
    if limit < 1:
        raise ValueError(f"the cloud call thread limit must be at least 1, got {limit}")
    with _POOL.lock:
        if limit == _POOL.limit:
            return
        _POOL.limit = limit
        old, _POOL.executor = _POOL.executor, None
    if old is not None:
        old.shutdown(wait=False)


def max_threads() -> int:
    return _POOL.limit


def executor() -> ThreadPoolExecutor:
    with _POOL.lock:
        if _POOL.executor is None:
            _POOL.executor = ThreadPoolExecutor(max_workers=_POOL.limit, thread_name_prefix=THREAD_PREFIX)
        return _POOL.executor
