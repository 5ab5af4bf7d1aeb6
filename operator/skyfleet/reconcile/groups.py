"""Order between node groups: ``dependsOn`` as a graph."""

from __future__ import annotations

from collections.abc import Sequence

from skyfleet.api.deployment import NodeGroup

__all__ = ["DependencyError", "creation_order"]


class DependencyError(ValueError):
    """dependsOn names an unknown group or forms a cycle; the Deployment cannot proceed."""


def creation_order(groups: Sequence[NodeGroup]) -> list[str]:
    """Group names so that every group comes after the groups it depends on.

    Among groups free to go, spec order is kept, so the answer is stable and reads like the
    manifest. The admission rule catches unknown names; cycles need this check.
    """
    names = [g.name for g in groups]
    deps = {g.name: list(dict.fromkeys(g.depends_on or [])) for g in groups}
    for name, wanted in deps.items():
        unknown = [d for d in wanted if d not in deps or d == name]
        if unknown:
            raise DependencyError(f"group {name!r} depends on {', '.join(map(repr, unknown))}, not another group")
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(names):
        free = [n for n in names if n not in placed and all(d in placed for d in deps[n])]
        if not free:
            cycle = [n for n in names if n not in placed]
            raise DependencyError(f"dependsOn forms a cycle among groups {', '.join(cycle)}")
        order.append(free[0])
        placed.add(free[0])
    return order
