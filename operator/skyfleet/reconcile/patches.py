"""JSON merge patches (RFC 7386) between what an object has and what it should have."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["merge_patch"]


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The smallest merge patch turning ``old`` into ``new``; empty when they are equal.

    Keys missing from ``new`` become null (merge-patch deletion); lists are replaced whole, as
    merge patch requires. An empty result means the caller must not write at all.
    """
    old = old or {}
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value or key not in old:
            patch[key] = value
    return patch
