"""The fault proxy's token buckets: a request bucket takes one token, a resource bucket as many as
the ids a request names, all or none, refilling at its rate up to its burst (EC2's shape)."""

from __future__ import annotations

import pytest

from skyfleet.testing import faultproxy
from skyfleet.testing.faultproxy import TokenBucket

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(faultproxy.time, "monotonic", fake)
    return fake


def test_a_resource_bucket_takes_all_the_ids_or_none(clock: Clock) -> None:
    bucket = TokenBucket(burst=1000, rate=20.0)

    assert not bucket.try_take(1001)  # more than the burst: never fits
    assert bucket.try_take(1000)
    assert not bucket.try_take(1)
    clock.now += 0.5  # 10 instances' worth
    assert not bucket.try_take(11)
    assert bucket.try_take(10)  # the refused 11 took nothing


def test_refill_stops_at_the_burst(clock: Clock) -> None:
    bucket = TokenBucket(burst=100, rate=5.0)
    assert all(bucket.try_take() for _ in range(100))
    assert not bucket.try_take()
    clock.now += 1.0
    assert [bucket.try_take() for _ in range(6)] == [True] * 5 + [False]
    clock.now += 3600.0
    assert bucket.try_take(100)
    assert not bucket.try_take()
