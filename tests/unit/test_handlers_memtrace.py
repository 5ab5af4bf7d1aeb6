"""The object census written beside each tracemalloc snapshot (handlers/memtrace.py)."""

from __future__ import annotations

import pytest

from skyfleet.handlers.memtrace import census

pytestmark = pytest.mark.unit


class Held:
    def __init__(self, n: int) -> None:
        self.n = n


def test_census_counts_the_objects_held_by_type() -> None:
    held = [Held(i) for i in range(5000)]
    text = census(top=1000)
    name = f"{Held.__module__}.{Held.__qualname__}"
    [line] = [line for line in text.splitlines() if line.endswith(f" {name}")]
    count, size = (int(v) for v in line.split()[:2])
    assert count >= len(held)
    assert size >= count * 32
    assert text.splitlines()[0].endswith(" bytes")
