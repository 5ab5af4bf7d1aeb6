"""skyfleet.testing.memory keeps the connector contract's promises, so handler tests built on it
mean what they say: one VM per owner however often create is called, nothing destroyed or
released that is not ours, listings without terminated or released VMs, queued failures."""

from __future__ import annotations

import pytest

from skyfleet.contract import CreateRequest, CredentialConfig, InvalidRequest, OwnershipMismatch, OwnerTags, Throttled
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
