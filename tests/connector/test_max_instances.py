"""A credential's maxInstances through the libcloud connector, against fastec2: never passed,
also under many concurrent creates, across regions and with VMs of ours that have no Instance;
and checked without a listing per create."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Iterator

import pytest

from skyfleet.connectors import CreateRequest, OwnerTags, QuotaExceeded
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from skyfleet.testing.fastec2 import FastEC2
from tests.connector.conftest import AMI, CLUSTER, ConnectorFactory, owner

pytestmark = pytest.mark.connector


@pytest.fixture
def fast() -> Iterator[FastEC2]:
    with FastEC2() as emulator:
        yield emulator


def request(uid: str) -> CreateRequest:
    return CreateRequest(name=f"shop-web-{uid}", image_id=AMI, size_id="t3.micro", owner=owner(uid))


async def create_all(connectors: list[LibcloudConnector], count: int, prefix: str = "u") -> list[str]:
    """``count`` creates at once spread over ``connectors``: 'created' or the refusal's code."""

    async def one(n: int) -> str:
        try:
            await connectors[n % len(connectors)].create(request(f"{prefix}{n}"))
        except QuotaExceeded as exc:
            return exc.code or "QuotaExceeded"
        return "created"

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def live(connector: LibcloudConnector) -> int:
    return len(await connector.find_by_tags({OwnerTags.CLUSTER_ID: CLUSTER}))


async def test_concurrent_creates_never_pass_max_instances_and_orphans_count(
    fast: FastEC2, make_connector: ConnectorFactory
) -> None:
    # Three VMs of ours that no Instance records: they use the credential's room too. Eight
    # creates in flight at once is where a check that lists before each create lets several
    # through on the same count.
    fast.seed(3, {OwnerTags.CLUSTER_ID: CLUSTER}, unique_tag=OwnerTags.INSTANCE_UID)
    connector = make_connector(fast.endpoint, max_instances=8, max_concurrency=8)
    outcomes = await create_all([connector], 24)
    assert outcomes.count("created") == 5
    assert outcomes.count("MaxInstances") == 19
    assert await live(connector) == 8


async def test_the_regions_of_one_credential_share_its_max_instances(
    fast: FastEC2, make_connector: ConnectorFactory
) -> None:
    east = make_connector(fast.endpoint, max_instances=6)
    west = LibcloudConnector(
        dataclasses.replace(east.config, region="eu-central-1"), retry=RetryPolicy(base_delay=0.05, max_delay=2.0)
    )
    west.budget = east.budget  # as the operator gives every connector of one credential
    try:
        outcomes = await create_all([east, west], 20)
        assert outcomes.count("created") == 6
        assert await live(east) + await live(west) == 6
    finally:
        await west.close()


async def test_a_destroy_gives_its_room_back_without_a_listing(fast: FastEC2, make_connector: ConnectorFactory) -> None:
    connector = make_connector(fast.endpoint, max_instances=2)
    first = await connector.create(request("a"))
    await connector.create(request("b"))
    with pytest.raises(QuotaExceeded):
        await connector.create(request("c"))
    await connector.destroy(first.provider_id, owner("a"))
    await connector.create(request("c"))
    assert await live(connector) == 2


def counting(connector: LibcloudConnector) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()

    def observe(provider: str, operation: str, outcome: str, seconds: float) -> None:
        seen[operation] += 1

    connector.observer = observe
    return seen


async def test_max_instances_costs_no_listing_per_create(fast: FastEC2, make_connector: ConnectorFactory) -> None:
    # 30 creates each with and without a limit far away: the limit costs one seed listing in
    # all, and none once the observer's listing of the cluster has counted for it.
    unlimited = make_connector(fast.endpoint)
    limited = make_connector(fast.endpoint, max_instances=100000)
    observed = make_connector(fast.endpoint, max_instances=100000)
    without, with_limit, after_listing = counting(unlimited), counting(limited), counting(observed)
    await create_all([unlimited], 30, prefix="free")
    await create_all([limited], 30, prefix="capped")
    await observed.list_cluster(CLUSTER)
    after_listing.clear()
    await create_all([observed], 30, prefix="listed")

    assert without["create"] == with_limit["create"] == after_listing["create"] == 30
    assert with_limit - without == collections.Counter({"count": 1})
    assert after_listing == without
