"""Every cloud call ends: a total deadline, threads that stop with it, one cap on threads, and
connectors that drain instead of failing the work queued on them when they are replaced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from skyfleet.connectors import Transient, workers
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import ConnectorFactory
from tests.connector.loopback import LoopbackServer

pytestmark = pytest.mark.connector

ONCE = RetryPolicy(max_attempts=1)


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def thread_cap() -> Iterator[None]:
    yield
    workers.configure(workers.DEFAULT_MAX_THREADS)


async def test_a_dripping_endpoint_is_cut_off_at_the_deadline(make_connector: ConnectorFactory) -> None:
    with LoopbackServer(mode="drip", delay=0.2) as server:
        connector = make_connector(server.url, retry=ONCE, call_timeout=1.5)
        started = time.monotonic()

        with pytest.raises(Transient) as caught:
            await asyncio.wait_for(connector.verify(), 10)  # the per-read timeout never trips
        elapsed = time.monotonic() - started

        assert caught.value.code == "DeadlineExceeded"
        assert 1.4 < elapsed < 3.0
        (visit,) = server.visits
        # The thread let go of the endpoint at the deadline, not when the endpoint stopped.
        await until(lambda: visit.closed is not None, within=2.0)
        assert visit.closed is not None
        assert visit.closed - visit.opened < 2.5


async def test_a_cancelled_call_stops_its_thread(make_connector: ConnectorFactory) -> None:
    with LoopbackServer(mode="drip", delay=0.2) as server:
        connector = make_connector(server.url, retry=ONCE, call_timeout=120)
        task = asyncio.create_task(connector.verify())
        await until(lambda: len(server.visits) == 1)

        task.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task

        visit = server.visits[0]
        await until(lambda: visit.closed is not None, within=2.0)
        assert visit.closed is not None
        assert visit.closed - cancelled_at < 1.0


async def test_cloud_threads_are_capped_across_credentials(thread_cap: None, make_connector: ConnectorFactory) -> None:
    workers.configure(2)
    with LoopbackServer(mode="slow", delay=0.3) as server:
        # Three credentials, each allowed eight calls at once: 24 calls could run, 2 threads do.
        connectors = [make_connector(server.url, retry=ONCE, max_concurrency=8) for _ in range(3)]
        await asyncio.gather(*(c.verify() for c in connectors for _ in range(4)))

    assert len(server.visits) == 12
    assert server.max_in_flight == 2


async def test_closing_a_connector_lets_queued_calls_finish(make_connector: ConnectorFactory) -> None:
    """What a credential edit does to the connector it replaces: creates queued on it go on."""
    with LoopbackServer(mode="slow", delay=0.2) as server:
        connector = make_connector(server.url, retry=ONCE, max_concurrency=1)
        queued = [asyncio.create_task(connector.verify()) for _ in range(4)]
        await until(lambda: len(server.visits) == 1)

        await connector.close()
        results = await asyncio.gather(*queued, return_exceptions=True)
        # A caller that fetched the connector before the edit may still call it afterwards.
        await connector.verify()

    assert results == [None] * 4
    assert len(server.visits) == 5
