"""Connector discovery through the ``skyfleet.connectors`` entry-point group.

Third parties ship a connector as an ordinary package declaring
``[project.entry-points."skyfleet.connectors"] name = "pkg.module:Class"``; nothing here
needs to know about it in advance.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from skyfleet.contract import Connector, CredentialConfig
from skyfleet.contract.errors import UnknownConnector

__all__ = ["GROUP", "available", "create", "load"]

GROUP = "skyfleet.connectors"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names of every installed connector, sorted."""
    return sorted(_entry_points())


def load(name: str) -> type[Connector]:
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        installed = ", ".join(sorted(eps)) or "none"
        raise UnknownConnector(
            f"no connector named {name!r} is installed (entry-point group {GROUP!r}); installed: {installed}"
        )
    try:
        cls = ep.load()
    except Exception as exc:  # an installed but broken plugin must not look like a missing one
        raise UnknownConnector(
            f"connector {name!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise UnknownConnector(f"connector {name!r} ({ep.value}) is not a skyfleet Connector subclass")
    return cls


def create(name: str, config: CredentialConfig) -> Connector:
    return load(name)(config)
