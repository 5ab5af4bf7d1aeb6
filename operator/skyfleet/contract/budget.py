"""How many VMs of ours a credential holds, kept between creates: ``maxInstances`` without a
listing per create.

A connector asks its ``InstanceBudget`` for room before every create (``reserve``) and tells it
what came of it (``created``, ``adopted``, ``unsure``, ``refused``) and of every destroy or
release (``gone``). The count starts from one tag-filtered listing per region (the seed) and is
corrected by every later one (``listed``: the observer's listing of the cluster), so VMs of ours
that have no Instance count too, and a VM deleted outside Skyfleet stops counting.

Listings lag launches and terminations (EC2 shows a fresh VM seconds after RunInstances
answered), so a listing is never taken at its word for what this process did within ``lag``
seconds before it started: a VM made then counts even when the listing misses it, one destroyed
then does not count even when the listing still shows it, and a create whose outcome is unknown
counts until a listing started ``lag`` seconds after it. Every error of the count is on the side
of fewer creates, never more.

Creates in flight count as reserved, and a reservation is taken synchronously in the event loop
after the check, so concurrent creates on one credential (several Deployments, several regions:
the operator gives all connectors of one credential one budget) can never pass the limit
together. Only regions this process has listed or created in are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from skyfleet.contract.errors import QuotaExceeded

__all__ = ["DEFAULT_LAG", "InstanceBudget"]

# Seconds a listing may lag a launch or a termination (as the connector's create settle window).
DEFAULT_LAG = 30.0
# At the limit, the count is checked against a fresh listing at most this often: a VM deleted
# outside Skyfleet, or a create that in fact made nothing, frees its room within this time.
DEFAULT_RELIST = 15.0

Listing = Callable[[], Awaitable[Iterable[str]]]


@dataclass
class _Region:
    listed: set[str] = field(default_factory=set)
    listed_at: float = -float("inf")
    # provider id -> when this process made (or adopted) it
    made: dict[str, float] = field(default_factory=dict)
    # provider id -> when this process destroyed (or released) it
    gone: dict[str, float] = field(default_factory=dict)
    # idempotency token -> when a create whose outcome is unknown went out
    unknown: dict[str, float] = field(default_factory=dict)
    reserved: int = 0

    def count(self) -> int:
        return len((self.listed | self.made.keys()) - self.gone.keys()) + len(self.unknown) + self.reserved


class InstanceBudget:
    """The VMs of one cluster on one credential, per region; see the module docstring."""

    def __init__(
        self,
        *,
        lag: float = DEFAULT_LAG,
        relist: float = DEFAULT_RELIST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lag = lag
        self.relist = relist
        self.clock = clock
        self._regions: dict[tuple[str, str], _Region] = {}
        # One seed (or relist) at a time: creates waiting for it then read its result.
        self._lock = asyncio.Lock()

    def count(self, cluster_id: str) -> int:
        """VMs of ``cluster_id`` counted over every region: listed, made, unsure or in flight."""
        return sum(r.count() for (cluster, _), r in self._regions.items() if cluster == cluster_id)

    def seeded(self, cluster_id: str, region: str) -> bool:
        """Whether a listing of the region has been taken (the count starts from one)."""
        state = self._regions.get((cluster_id, region))
        return state is not None and state.listed_at > -float("inf")

    def _region(self, cluster_id: str, region: str) -> _Region:
        return self._regions.setdefault((cluster_id, region), _Region())

    async def reserve(
        self,
        cluster_id: str,
        region: str,
        limit: int | None,
        listing: Listing,
        *,
        token: str | None = None,
        where: str = "",
        provider: str | None = None,
    ) -> None:
        """Take room for one create, or raise ``QuotaExceeded`` (code MaxInstances).

        ``listing`` lists the ids of the cluster's VMs in ``region``: called once to seed the
        region, and again at the limit when the last listing is older than ``relist``. A
        ``token`` the cloud deduplicates by takes over the room of its own unsure earlier create.
        """
        if limit is None:
            self._region(cluster_id, region).reserved += 1
            return
        async with self._lock:
            if not self.seeded(cluster_id, region):
                await self._list(cluster_id, region, listing)
            state = self._region(cluster_id, region)
            if token is not None:
                state.unknown.pop(token, None)
            if self.count(cluster_id) >= limit and self.clock() - state.listed_at >= self.relist:
                await self._list(cluster_id, region, listing)
            present = self.count(cluster_id)
            if present >= limit:
                raise QuotaExceeded(
                    f"credential {where or '-'} allows {limit} instances and {present} exist or are being created",
                    provider=provider,
                    code="MaxInstances",
                )
            state.reserved += 1

    async def _list(self, cluster_id: str, region: str, listing: Listing) -> None:
        started = self.clock()
        self.listed(cluster_id, region, await listing(), started=started)

    def listed(self, cluster_id: str, region: str, ids: Iterable[str], *, started: float) -> None:
        """A listing of the cluster's VMs in ``region`` that started at ``started`` (``clock``)."""
        state = self._region(cluster_id, region)
        if started < state.listed_at:
            return  # an older listing answering late says less than the one already taken
        state.listed, state.listed_at = set(ids), started
        # Trusted from here on for what happened ``lag`` seconds before it started.
        horizon = started - self.lag
        for entries in (state.made, state.gone, state.unknown):
            for key in [k for k, at in entries.items() if at < horizon]:
                del entries[key]

    def created(self, cluster_id: str, region: str, provider_id: str, *, token: str | None = None) -> None:
        """A reserved create made ``provider_id``."""
        state = self._region(cluster_id, region)
        state.reserved = max(0, state.reserved - 1)
        self.adopted(cluster_id, region, provider_id, token=token)

    def adopted(self, cluster_id: str, region: str, provider_id: str, *, token: str | None = None) -> None:
        """``provider_id`` is ours (found by its owner tags): it counts, once."""
        state = self._region(cluster_id, region)
        state.made[provider_id] = self.clock()
        state.gone.pop(provider_id, None)
        if token is not None:
            state.unknown.pop(token, None)

    def unsure(self, cluster_id: str, region: str, *, token: str) -> None:
        """A reserved create may have made a VM, or not (answer lost, timed out, cancelled)."""
        state = self._region(cluster_id, region)
        state.reserved = max(0, state.reserved - 1)
        state.unknown[token] = self.clock()

    def refused(self, cluster_id: str, region: str) -> None:
        """A reserved create made nothing: the cloud refused it before launching."""
        state = self._region(cluster_id, region)
        state.reserved = max(0, state.reserved - 1)

    def gone(self, cluster_id: str, region: str, provider_id: str) -> None:
        """``provider_id`` was destroyed (or released: no longer ours) by this process."""
        state = self._region(cluster_id, region)
        state.made.pop(provider_id, None)
        state.gone[provider_id] = self.clock()
