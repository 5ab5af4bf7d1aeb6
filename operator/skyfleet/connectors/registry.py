"""Connector discovery through the ``skyfleet.connectors`` entry-point group.

Third parties ship a connector as an ordinary package declaring
``[project.entry-points."skyfleet.connectors"] name = "pkg.module:Class"``; nothing here
needs to know about it in advance.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from skyfleet.contract import Connector, CredentialConfig
from skyfleet.contract.errors import UnknownConnector

__all__ = ["GROUP", "ConnectorCache", "available", "create", "load"]

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


class ConnectorCache:
    """One live connector per (connector name, credential+region), rebuilt when the config changes.

    Rate budgets, circuit breakers and worker pools live in connector objects; creating a
    connector per call would give every call a fresh, full budget. Keep one of these in the
    operator's memo and ask it for connectors.
    """

    def __init__(self) -> None:
        self._connectors: dict[tuple[str, str], tuple[CredentialConfig, Connector]] = {}
        # Replaced connectors may still have calls in flight; they are closed on aclose().
        self._retired: list[Connector] = []

    def get(self, name: str, config: CredentialConfig) -> Connector:
        key = (name, config.key)
        cached = self._connectors.get(key)
        if cached is not None and cached[0] == config:
            return cached[1]
        connector = create(name, config)
        self._connectors[key] = (config, connector)
        if cached is not None:
            self._retired.append(cached[1])
        return connector

    async def aclose(self) -> None:
        for connector in [c for _, c in self._connectors.values()] + self._retired:
            await connector.close()
        self._connectors.clear()
        self._retired.clear()
