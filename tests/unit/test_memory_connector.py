"""skyfleet.testing.memory keeps the connector contract's promises, so handler tests built on it
mean what they say: one VM per owner however often create is called, nothing destroyed or
released that is not ours, listings without terminated or released VMs, queued failures."""

from __future__ import annotations

import asyncio

import pytest

from skyfleet.contract import (
    CreateRequest,
    CredentialConfig,
    InvalidRequest,
    Limits,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    QuotaExceeded,
    Throttled,
)
from skyfleet.testing.memory import MemoryCloud, MemoryConnector

pytestmark = pytest.mark.unit

OURS = OwnerTags(cluster_id="c1", instance_uid="u1", namespace="team", deployment="shop", instance="shop-web-0")


def connector(region: str = "mem-1", cloud: MemoryCloud | None = None) -> MemoryConnector:
    return MemoryConnector(CredentialConfig(name="mem", namespace="team", provider="memory", region=region), cloud)


def request(owner: OwnerTags = OURS) -> CreateRequest:
    return CreateRequest(name="shop-web-0", image_id="img-ubuntu-1", size_id="small", owner=owner)


async def test_a_repeated_create_adopts_the_first_vm() -> None:
    c = connector()
    first = await c.create(request())
    assert await c.create(request()) == first
    assert [n.provider_id for n in await c.list_cluster("c1")] == [first.provider_id]


async def test_destroy_and_release_touch_only_what_is_ours() -> None:
    c = connector()
    node = await c.create(request())
    stranger = OwnerTags(cluster_id="c1", instance_uid="someone-else")
    with pytest.raises(OwnershipMismatch):
        await c.destroy(node.provider_id, stranger)
    with pytest.raises(OwnershipMismatch):
        await c.release(node.provider_id, stranger)
    await c.release(node.provider_id, OURS)
    assert await c.list_cluster("c1") == []  # released: no longer ours, still running
    assert (await c.describe(node.provider_id)) is not None
    other = await c.create(request(OwnerTags(cluster_id="c1", instance_uid="u2")))
    await c.destroy(other.provider_id, OwnerTags(cluster_id="c1", instance_uid="u2"))
    await c.destroy(other.provider_id, OwnerTags(cluster_id="c1", instance_uid="u2"))  # gone already: fine
    assert await c.describe(other.provider_id) is None


async def test_regions_sizes_and_queued_failures() -> None:
    cloud = MemoryCloud()
    assert (await connector(cloud=cloud).resolve_size(cpu=2, memory_mib=2048)).id == "medium"
    with pytest.raises(InvalidRequest):
        await connector("nowhere-1", cloud).list_locations()
    cloud.fail("create", Throttled("slow down"))
    with pytest.raises(Throttled):
        await connector(cloud=cloud).create(request())
    assert (await connector(cloud=cloud).create(request())).region == "mem-1"
    assert [op for op, _ in cloud.calls].count("create") == 2


def limited(limit: int, cloud: MemoryCloud, region: str = "mem-1") -> MemoryConnector:
    config = CredentialConfig(
        name="mem", namespace="team", provider="memory", region=region, limits=Limits(max_instances=limit)
    )
    return MemoryConnector(config, cloud)


def owner(n: int) -> OwnerTags:
    return OwnerTags(cluster_id="c1", instance_uid=f"u{n}", namespace="team", deployment=f"d{n % 3}")


async def create_all(connectors: list[MemoryConnector], count: int) -> list[str]:
    """``count`` creates at once, spread over ``connectors``; the outcome of each."""

    async def one(n: int) -> str:
        try:
            await connectors[n % len(connectors)].create(request(owner(n)))
        except QuotaExceeded as exc:
            return exc.code or ""
        return "created"

    return list(await asyncio.gather(*(one(n) for n in range(count))))


def live(cloud: MemoryCloud) -> int:
    return sum(1 for n in cloud.nodes.values() if n.state is not NodeState.TERMINATED)


async def test_max_instances_holds_under_many_concurrent_creates() -> None:
    # Every call takes time, so forty creates interleave as they would on a cloud.
    cloud = MemoryCloud(latency=0.001)
    outcomes = await create_all([limited(6, cloud)], 40)
    assert outcomes.count("created") == 6
    assert outcomes.count("MaxInstances") == 34
    assert live(cloud) == 6


async def test_max_instances_holds_across_the_regions_of_one_credential() -> None:
    cloud = MemoryCloud(regions=("mem-1", "mem-2"), latency=0.001)
    east, west = limited(5, cloud, "mem-1"), limited(5, cloud, "mem-2")
    west.budget = east.budget  # as the operator does for every connector of one credential
    await create_all([east, west], 30)
    assert live(cloud) == 5


async def test_vms_of_ours_without_an_instance_count_and_a_destroy_frees_room() -> None:
    cloud = MemoryCloud(latency=0.001)
    seeder = connector(cloud=cloud)
    orphans = [await seeder.create(request(owner(100 + n))) for n in range(3)]
    c = limited(4, cloud)
    outcomes = await create_all([c], 5)
    assert outcomes.count("created") == 1
    await c.destroy(orphans[0].provider_id, owner(100))
    await c.create(request(owner(200)))
    assert live(cloud) == 4


async def test_creates_under_a_limit_cost_one_listing_in_all() -> None:
    cloud = MemoryCloud()
    c = limited(1000, cloud)
    for n in range(20):
        await c.create(request(owner(n)))
    listings = [detail for op, detail in cloud.calls if op in ("find_by_tags", "list_cluster")]
    # Twenty owner-tag lookups (one per create, as without a limit) and one seed listing.
    assert len(listings) == 21
