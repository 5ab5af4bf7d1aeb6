"""An in-memory cloud behind the connector contract, for handler tests (as libcloud ships a dummy driver).

``MemoryConnector`` keeps nodes in a dict and answers every call of ``skyfleet.contract.Connector``
with the contract's semantics: creates adopt the node an earlier attempt with the same owner tags
made, destroy and release check ownership, listings see only non-terminated nodes. It makes no
network call and keeps a log of what it was asked (``calls``), so a test can say "the VM was
created with this image" or "nothing was created". ``fail`` queues errors for the next calls of
an operation, to play a cloud that throttles or refuses.

It stands in for a cloud only in tests of the code above the connectors (handlers/); the
connectors themselves are tested against emulators and recorded HTTP (tests/connector/).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from skyfleet.contract import (
    Capabilities,
    CloudImage,
    CloudLocation,
    CloudNode,
    CloudSize,
    Connector,
    ConnectorError,
    CreateRequest,
    CredentialConfig,
    InvalidRequest,
    NodeState,
    NotFound,
    OwnershipMismatch,
    OwnerTags,
)

__all__ = ["MemoryCloud", "MemoryConnector"]

DEFAULT_SIZES = (
    CloudSize("small", "small", 1, 1024, 10, 0.01),
    CloudSize("medium", "medium", 2, 4096, 20, 0.04),
    CloudSize("large", "large", 4, 16384, 40, 0.16),
)
DEFAULT_IMAGES = (CloudImage("img-ubuntu-1", "ubuntu-24.04-20260101", datetime(2026, 1, 1, tzinfo=UTC)),)


@dataclass
class MemoryCloud:
    """One cloud account's state, shared by the connectors of its regions."""

    regions: tuple[str, ...] = ("mem-1",)
    sizes: list[CloudSize] = field(default_factory=lambda: list(DEFAULT_SIZES))
    images: list[CloudImage] = field(default_factory=lambda: list(DEFAULT_IMAGES))
    nodes: dict[str, CloudNode] = field(default_factory=dict)
    # (operation, detail) for every call, in order.
    calls: list[tuple[str, str]] = field(default_factory=list)
    # Errors to raise from the next calls of an operation, first in first out.
    failures: dict[str, list[Exception]] = field(default_factory=dict)
    # Seconds every call takes (the event loop runs others meanwhile, as with a real cloud).
    latency: float = 0.0
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def fail(self, operation: str, *errors: Exception) -> None:
        self.failures.setdefault(operation, []).extend(errors)

    async def call(self, operation: str, detail: str = "") -> None:
        self.calls.append((operation, detail))
        if self.latency:
            await asyncio.sleep(self.latency)
        queued = self.failures.get(operation)
        if queued:
            raise queued.pop(0)

    def next_id(self) -> str:
        return f"vm-{next(self._ids):04d}"


class MemoryConnector(Connector):
    """The contract over a ``MemoryCloud`` in one region (the config's, else the cloud's first)."""

    def __init__(self, config: CredentialConfig, cloud: MemoryCloud | None = None) -> None:
        super().__init__(config)
        self.cloud = cloud or MemoryCloud()
        self.region = config.region or self.cloud.regions[0]

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(idempotency_token=True, release=True, max_user_data_bytes=16384)

    async def verify(self) -> None:
        await self.cloud.call("verify")

    async def list_sizes(self) -> list[CloudSize]:
        await self.cloud.call("list_sizes")
        return list(self.cloud.sizes)

    async def list_images(self) -> list[CloudImage]:
        await self.cloud.call("list_images")
        return list(self.cloud.images)

    async def list_locations(self) -> list[CloudLocation]:
        await self.cloud.call("list_locations", self.region)
        if self.region not in self.cloud.regions:
            raise InvalidRequest(f"unknown region {self.region!r}", provider=self.config.provider)
        return [CloudLocation(f"{self.region}a", f"{self.region}a")]

    def _mine(self, tags: Mapping[str, str]) -> list[CloudNode]:
        return [
            n
            for n in self.cloud.nodes.values()
            if n.region == self.region
            and n.state is not NodeState.TERMINATED
            and all(n.tags.get(k) == v for k, v in tags.items())
        ]

    async def find_by_tags(self, tags: Mapping[str, str]) -> list[CloudNode]:
        await self.cloud.call("find_by_tags")
        return self._mine(tags)

    async def create(self, req: CreateRequest) -> CloudNode:
        """Adopt, else take room in the budget (``maxInstances``), else launch (as the libcloud
        connector does, with every call a cloud call)."""
        cluster, budget = req.owner.cluster_id, self.budget
        earlier = await self.find_by_tags(req.owner.identity())
        if earlier:
            budget.adopted(cluster, self.region, earlier[0].provider_id)
            return earlier[0]  # an earlier attempt made it: adopt, never a second VM
        await budget.reserve(
            cluster,
            self.region,
            self.config.limits.max_instances,
            self._cluster_ids(cluster),
            where=self.config.key,
            provider=self.config.provider,
        )
        try:
            node = await self._launch(req)
        except ConnectorError:
            budget.refused(cluster, self.region)  # this cloud refuses before launching
            raise
        budget.created(cluster, self.region, node.provider_id)
        return node

    def _cluster_ids(self, cluster: str) -> Callable[[], Awaitable[list[str]]]:
        async def listing() -> list[str]:
            return [n.provider_id for n in await self.find_by_tags({OwnerTags.CLUSTER_ID: cluster})]

        return listing

    async def _launch(self, req: CreateRequest) -> CloudNode:
        await self.cloud.call("create", f"{req.name} image={req.image_id} size={req.size_id}")
        if req.image_id not in {i.id for i in self.cloud.images}:
            raise NotFound(f"image {req.image_id} does not exist", provider=self.config.provider)
        if req.size_id not in {s.id for s in self.cloud.sizes}:
            raise InvalidRequest(f"size {req.size_id} does not exist", provider=self.config.provider)
        provider_id = self.cloud.next_id()
        node = CloudNode(
            provider_id=provider_id,
            name=req.name,
            state=NodeState.RUNNING,
            private_ips=(f"10.0.0.{len(self.cloud.nodes) + 1}",),
            size_id=req.size_id,
            image_id=req.image_id,
            region=self.region,
            zone=req.zone,
            tags=req.tags(),
            created_at=datetime.now(UTC),
        )
        self.cloud.nodes[provider_id] = node
        return node

    async def describe(self, provider_id: str) -> CloudNode | None:
        await self.cloud.call("describe", provider_id)
        node = self.cloud.nodes.get(provider_id)
        return None if node is None or node.state is NodeState.TERMINATED else node

    async def destroy(self, provider_id: str, owner_tags: OwnerTags) -> None:
        await self.cloud.call("destroy", provider_id)
        node = self.cloud.nodes.get(provider_id)
        if node is None or node.state is NodeState.TERMINATED:
            return
        if not owner_tags.owns(node.tags):
            raise OwnershipMismatch(f"{provider_id} is not ours", provider=self.config.provider)
        self.cloud.nodes[provider_id] = replace(node, state=NodeState.TERMINATED)
        self.budget.gone(owner_tags.cluster_id, self.region, provider_id)

    async def list_cluster(self, cluster_id: str) -> list[CloudNode]:
        started = self.budget.clock()
        await self.cloud.call("list_cluster")
        nodes = self._mine({OwnerTags.CLUSTER_ID: cluster_id})
        self.budget.listed(cluster_id, self.region, (n.provider_id for n in nodes), started=started)
        return nodes

    async def release(self, provider_id: str, owner_tags: OwnerTags) -> None:
        await self.cloud.call("release", provider_id)
        node = self.cloud.nodes.get(provider_id)
        if node is None or node.state is NodeState.TERMINATED:
            raise NotFound(f"{provider_id} does not exist", provider=self.config.provider)
        if not owner_tags.owns(node.tags):
            raise OwnershipMismatch(f"{provider_id} is not ours", provider=self.config.provider)
        kept = {k: v for k, v in node.tags.items() if k not in (OwnerTags.CLUSTER_ID, OwnerTags.INSTANCE_UID)}
        self.cloud.nodes[provider_id] = replace(node, tags=kept)
        self.budget.gone(owner_tags.cluster_id, self.region, provider_id)
