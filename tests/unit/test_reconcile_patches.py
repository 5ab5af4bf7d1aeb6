"""Merge patches: only what changed is sent."""

from __future__ import annotations

from typing import Any

import pytest

from skyfleet.reconcile.patches import merge_patch

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, {}),
        (None, {"a": 1}, {"a": 1}),
        ({"a": 1, "m": "x"}, {"a": 1}, {"m": None}),
        ({"b": {"c": 2, "d": 3}}, {"b": {"c": 2}}, {"b": {"d": None}}),
        ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
        ({"a": None}, {"a": None}, {}),
    ],
)
def test_merge_patch(old: dict[str, Any] | None, new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch
