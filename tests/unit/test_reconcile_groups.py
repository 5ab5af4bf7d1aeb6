"""dependsOn: the order groups are created in, and dependencies that cannot be met."""

from __future__ import annotations

import pytest

from skyfleet.api.deployment import NodeGroup
from skyfleet.reconcile.groups import DependencyError, creation_order

pytestmark = pytest.mark.unit


def ng(name: str, *deps: str) -> NodeGroup:
    return NodeGroup.model_validate(
        {
            "name": name,
            "imageRef": "i",
            "size": {"cpu": 1, "memoryMiB": 512},
            "placement": {"targets": [{"credential": "c"}]},
            "dependsOn": list(deps),
        }
    )


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([ng("web", "db"), ng("db")], ["db", "web"]),
        ([ng("a"), ng("b"), ng("c")], ["a", "b", "c"]),
        ([ng("lb", "web"), ng("web", "db", "cache"), ng("cache"), ng("db")], ["cache", "db", "web", "lb"]),
    ],
)
def test_creation_order(groups: list[NodeGroup], expected: list[str]) -> None:
    assert creation_order(groups) == expected


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ([ng("a", "b"), ng("b", "a")], "cycle"),
        ([ng("a", "b"), ng("b", "c"), ng("c", "a")], "cycle"),
        ([ng("a", "nope")], "nope"),
        ([ng("a", "a")], "'a'"),
    ],
)
def test_bad_dependencies(groups: list[NodeGroup], fragment: str) -> None:
    with pytest.raises(DependencyError, match=fragment):
        creation_order(groups)
