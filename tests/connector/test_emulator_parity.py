"""moto and fastec2 side by side: one scenario, what the connector sees must be the same.

The scenario goes through the connector and libcloud's own EC2 driver, as the operator does,
and records every answer with the provider's ids replaced by the order in which they first
appeared (ids, addresses and timestamps are each emulator's own; everything else must match).
Where fastec2 deliberately follows EC2 rather than moto, test_fastec2.py says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from libcloud.compute.providers import get_driver

from skyfleet.connectors import CloudNode, ConnectorError, CreateRequest, CredentialConfig, Limits, OwnerTags
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.fastec2 import FastEC2
from tests.connector.conftest import AMI, CANARY_SECRET, CLUSTER, LOOPBACK, owner

pytestmark = pytest.mark.connector

UBUNTU = "ubuntu/images/hvm-ssd/ubuntu-*-amd64-server-*"
CANONICAL = "099720109477"
SHARED_OWNERS = {CANONICAL, "801119661308", "898082745236", "013907871322", "309956199498"}


class Recorder:
    """What the connector answered, step by step, with provider ids made comparable."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []
        self.aliases: dict[str, str] = {}

    def alias(self, provider_id: str) -> str:
        return self.aliases.setdefault(provider_id, f"vm{len(self.aliases)}")

    def node(self, node: CloudNode | None) -> Any:
        if node is None:
            return None
        seen = dataclasses.asdict(node)
        seen["provider_id"] = self.alias(node.provider_id)
        seen["state"] = node.state.value
        seen["public_ips"] = len(node.public_ips)
        seen["private_ips"] = len(node.private_ips)
        seen["created_at"] = node.created_at is not None
        seen["tags"] = dict(node.tags)
        return seen

    def nodes(self, nodes: list[CloudNode]) -> Any:
        return sorted((self.node(n) for n in nodes), key=lambda n: (n["name"], n["provider_id"]))

    def record(self, step: str, value: Any) -> None:
        self.steps.append((step, value))

    async def outcome(self, step: str, call: Any) -> Any:
        """Record a call's result, or the kind and code of the error it raised."""
        try:
            result = await call
        except ConnectorError as exc:
            self.record(step, ("error", type(exc).__name__, exc.code))
            return None
        self.record(step, result)
        return result


def config(endpoint: str, region: str) -> CredentialConfig:
    return CredentialConfig(
        name=f"parity-{region}",
        namespace="team-a",
        provider="ec2",
        region=region,
        endpoint_url=endpoint,
        parameters={"describe_page_size": "5"},
        secret=CANARY_SECRET,
        limits=Limits(requests_per_second=500.0, burst=500, max_concurrency=4),
        endpoint_policy=LOOPBACK,
    )


def create(uid: str, **overrides: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "name": f"shop-web-{uid}",
        "image_id": AMI,
        "size_id": "t3.micro",
        "user_data": "#cloud-config\npackages: [nginx]\n",
        "owner": owner(uid),
    }
    return CreateRequest(**(fields | overrides))


async def scenario(endpoint: str) -> list[tuple[str, Any]]:
    rec = Recorder()
    LibcloudConnector.catalogue_cache.clear()
    east = LibcloudConnector(config(endpoint, "us-east-1"))
    west = LibcloudConnector(config(endpoint, "eu-central-1"))
    try:
        await rec.outcome("verify", east.verify())
        rec.record("locations", sorted(loc.name for loc in await east.list_locations()))
        rec.record("locations eu-central-1", sorted(loc.name for loc in await west.list_locations()))
        # moto adds the latest Amazon Linux and ECS images per region; fastec2 ships only the
        # catalogue both share, so the comparison covers the owners that catalogue holds whole.
        images = [i for i in await east.list_images() if i.owner in SHARED_OWNERS]
        rec.record("images", sorted((i.id, i.name, i.owner) for i in images))
        ubuntu = await east.resolve_image(name_pattern=UBUNTU, owner=CANONICAL)
        rec.record("image lookup", (ubuntu.id, ubuntu.name, ubuntu.owner))
        await rec.outcome("missing image id", east.resolve_image(image_id="ami-12345678"))

        made = [await east.create(create(f"uid-{i}", zone=f"us-east-1{'abc'[i % 3]}")) for i in range(7)]
        rec.record("created", rec.nodes(made))
        rec.record("described", [rec.node(await east.describe(n.provider_id)) for n in made])
        again = await east.create(create("uid-0", zone="us-east-1a"))
        rec.record("second create of uid-0 adopts", rec.node(again))
        rec.record("elsewhere", rec.node(await west.create(create("far-1"))))
        rec.record("list_cluster (pages of 5)", rec.nodes(await east.list_cluster(CLUSTER)))
        rec.record("list_cluster eu-central-1", rec.nodes(await west.list_cluster(CLUSTER)))
        rec.record("find uid-3", rec.nodes(await east.find_by_tags(owner("uid-3").identity())))
        rec.record("find nothing", rec.nodes(await east.find_by_tags({OwnerTags.INSTANCE_UID: "nobody"})))

        await rec.outcome("destroy uid-1", east.destroy(made[1].provider_id, owner("uid-1")))
        await rec.outcome("destroy uid-1 again", east.destroy(made[1].provider_id, owner("uid-1")))
        rec.record("after destroy", rec.node(await east.describe(made[1].provider_id)))
        await rec.outcome("destroy uid-2 as uid-9", east.destroy(made[2].provider_id, owner("uid-9")))
        await rec.outcome("destroy a stranger's id", east.destroy("i-0123456789abcdef0", owner("uid-2")))
        rec.record("describe a stranger's id", await east.describe("i-0123456789abcdef0"))

        await rec.outcome("release uid-3", east.release(made[3].provider_id, owner("uid-3")))
        rec.record("released", rec.node(await east.describe(made[3].provider_id)))
        await rec.outcome("release uid-3 again", east.release(made[3].provider_id, owner("uid-3")))
        await rec.outcome("release a terminated VM", east.release(made[1].provider_id, owner("uid-1")))

        await rec.outcome("resize while running", east.resize(made[4].provider_id, "t3.large"))
        port = int(endpoint.rstrip("/").rsplit(":", 1)[1])
        driver = get_driver("ec2")(
            "AKIDEXAMPLE", "secret", region="us-east-1", secure=False, host="127.0.0.1", port=port
        )
        stopped = driver.ex_stop_node(east.adapter.node_stub(driver, made[4].provider_id))
        rec.record("stop through libcloud", stopped)
        rec.record("stopped", rec.node(await east.describe(made[4].provider_id)))
        resized = await east.resize(made[4].provider_id, "t3.large")
        rec.record("resized", rec.node(resized))
        started = driver.ex_start_node(east.adapter.node_stub(driver, made[4].provider_id))
        rec.record("start through libcloud", started)
        rec.record("started", rec.node(await east.describe(made[4].provider_id)))
        rec.record("stock driver sees one page", len(driver.list_nodes()))

        rec.record("list_cluster at the end", rec.nodes(await east.list_cluster(CLUSTER)))
    finally:
        await east.close()
        await west.close()
    return rec.steps


@pytest.fixture
def both() -> Iterator[dict[str, str]]:
    moto, fast = EC2Emulator(), FastEC2()
    with moto, fast:
        moto.reset()  # moto's state is per process: another test's emulator shares it
        yield {"moto": moto.endpoint, "fastec2": fast.endpoint}
        moto.reset()


async def test_the_connector_sees_the_same_cloud_through_both_emulators(both: dict[str, str]) -> None:
    reference = await scenario(both["moto"])
    candidate = await scenario(both["fastec2"])

    assert [step for step, _ in candidate] == [step for step, _ in reference]
    for (step, expected), (_, actual) in zip(reference, candidate, strict=True):
        assert actual == expected, f"step {step!r}: fastec2 differs from moto"
    # The scenario did what it says (a comparison of two empty answers proves nothing).
    answers = dict(reference)
    assert len(answers["list_cluster (pages of 5)"]) == 7
    assert answers["destroy uid-2 as uid-9"] == ("error", "OwnershipMismatch", None)
    assert answers["resized"]["size_id"] == "t3.large"
