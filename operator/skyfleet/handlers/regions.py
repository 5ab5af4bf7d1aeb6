"""Whether the cloud knows a region, asked once per credential and region and remembered.

A region is data a tenant writes (a placement target) and may misspell, or name one the account
has not opted into. That must stop only what is placed there: such a region is recognised by
one cheap call that takes no input but the region (listing its zones), and then Instances wait
there without spending their failure budget, observation skips it, and deletion of Instances
that never got a VM there needs no cloud call at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from skyfleet.connectors import Connector, ConnectorError
from skyfleet.contract.errors import InvalidCredentials, InvalidRequest
from skyfleet.reconcile.messages import error_message

__all__ = ["RegionCheck", "RegionChecks"]

# A known region stays known; an unknown one is asked again now and then (opt-in takes effect).
RECHECK_UNKNOWN = 300.0


@dataclass(frozen=True)
class RegionCheck:
    known: bool
    message: str = ""


class RegionChecks:
    def __init__(self) -> None:
        self._checked: dict[tuple[str, str, str], tuple[float, RegionCheck]] = {}

    def unknown(self, connector: Connector) -> RegionCheck | None:
        """What was learnt already: a check saying the region is unknown, else None."""
        cached = self._checked.get(self._key(connector))
        if cached is not None and not cached[1].known and time.monotonic() - cached[0] < RECHECK_UNKNOWN:
            return cached[1]
        return None

    async def check(self, connector: Connector) -> RegionCheck:
        """Ask the cloud (once) whether it knows the connector's region.

        Errors that say nothing about the region (throttling, outages, rejected keys) count as
        known: the caller's own call will meet them and handle them as usual.
        """
        key = self._key(connector)
        cached = self._checked.get(key)
        if cached is not None and (cached[1].known or time.monotonic() - cached[0] < RECHECK_UNKNOWN):
            return cached[1]
        region = connector.config.region or "(default)"
        try:
            await connector.list_locations()
            result = RegionCheck(True)
        except InvalidCredentials:
            return RegionCheck(True)
        except InvalidRequest as exc:
            result = RegionCheck(
                False, f"region {region} is not known to {connector.config.provider}: {error_message(exc)}"
            )
        except ConnectorError:
            return RegionCheck(True)
        self._checked[key] = (time.monotonic(), result)
        return result

    @staticmethod
    def _key(connector: Connector) -> tuple[str, str, str]:
        c = connector.config
        return (c.namespace, c.name, c.region or "")
