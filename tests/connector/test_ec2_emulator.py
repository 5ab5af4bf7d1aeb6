"""EC2 end to end: libcloud's own EC2 driver, through the connector, against moto on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from typing import Any

import pytest
from libcloud.compute.providers import get_driver

from skyfleet.connectors import (
    Connector,
    CreateRequest,
    InvalidCredentials,
    InvalidRequest,
    NodeState,
    NotFound,
    OwnershipMismatch,
    OwnerTags,
    SecretData,
    Unsupported,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.transport import CallScope, call_scope
from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import (
    AMI,
    CLUSTER,
    LOOPBACK,
    ConnectorFactory,
    ec2_config,
    instances_tagged,
    owner,
    provenance,
)

pytestmark = pytest.mark.connector

USER_DATA = "#cloud-config\npackages: [nginx]\n"


def request(uid: str, **overrides: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "name": f"shop-web-{uid}",
        "image_id": AMI,
        "size_id": "t3.micro",
        "user_data": USER_DATA,
        "owner": owner(uid),
    }
    return CreateRequest(**(fields | overrides))


async def test_create_tags_userdata_and_describe(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    await connector.verify()

    node = await connector.create(request("uid-1", zone="us-east-1b"))

    assert node.provider_id.startswith("i-")
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-1"
    assert node.tags[OwnerTags.CLUSTER_ID] == CLUSTER
    assert node.size_id == "t3.micro"
    assert node.image_id == AMI
    assert node.zone == "us-east-1b"
    seen = await connector.describe(node.provider_id)
    assert seen is not None
    assert seen.state is NodeState.RUNNING
    assert seen.private_ips
    attribute = boto_ec2.describe_instance_attribute(InstanceId=node.provider_id, Attribute="userData")
    assert base64.b64decode(attribute["UserData"]["Value"]).decode() == USER_DATA


async def test_second_create_adopts_instead_of_duplicating(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)

    first = await connector.create(request("uid-2"))
    second = await connector.create(request("uid-2"))

    assert second.provider_id == first.provider_id
    assert len(instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "uid-2")) == 1


async def test_list_cluster_pages_through_a_600_instance_account(
    emulator: EC2Emulator, make_connector: ConnectorFactory, proxy: FaultProxy
) -> None:
    # One reservation per instance, as the operator creates them: moto and AWS page by reservation.
    emulator.seed(600, {OwnerTags.CLUSTER_ID: CLUSTER})
    emulator.seed(50, {OwnerTags.CLUSTER_ID: "someone-else"})
    connector = make_connector(proxy.endpoint, parameters={"describe_page_size": "200"})

    listed = await connector.list_cluster(CLUSTER)

    assert len({n.provider_id for n in listed}) == len(listed) == 600
    assert all(n.tags[OwnerTags.CLUSTER_ID] == CLUSTER for n in listed)
    assert proxy.count("requests:DescribeInstances") >= 3
    # The trap this guards against: the stock driver reads the first page and stops.
    port = int(proxy.endpoint.rstrip("/").rsplit(":", 1)[1])
    with call_scope(CallScope(policy=LOOPBACK)):  # libcloud in this process reaches loopback only so
        stock = get_driver("ec2")("k", "s", region="us-east-1", secure=False, host="127.0.0.1", port=port)
        assert len(stock.list_nodes()) == 100


async def test_find_by_tags_skips_terminated_and_foreign(ec2_endpoint: str, make_connector: ConnectorFactory) -> None:
    connector = make_connector(ec2_endpoint)
    kept = await connector.create(request("keep"))
    gone = await connector.create(request("gone"))
    await connector.create(request("other", owner=owner("other", cluster="another-cluster")))
    await connector.destroy(gone.provider_id, owner("gone"))

    assert [n.provider_id for n in await connector.list_cluster(CLUSTER)] == [kept.provider_id]
    assert await connector.find_by_tags(owner("gone").identity()) == []


async def test_destroy_refuses_instance_without_our_tags(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    foreign = boto_ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ours = await connector.create(request("mine"))

    with pytest.raises(OwnershipMismatch, match=foreign):
        await connector.destroy(foreign, owner("mine"))
    # Right cluster, wrong Instance: still not ours to destroy.
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(ours.provider_id, owner("another-uid"))
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(ours.provider_id, owner("mine", cluster="another-cluster"))

    state = boto_ec2.describe_instances(InstanceIds=[foreign, ours.provider_id])
    assert {i["State"]["Name"] for r in state["Reservations"] for i in r["Instances"]} == {"running"}


async def test_destroy_terminates_ours_and_is_idempotent(ec2_endpoint: str, make_connector: ConnectorFactory) -> None:
    connector = make_connector(ec2_endpoint)
    node = await connector.create(request("bye"))

    await connector.destroy(node.provider_id, owner("bye"))
    await connector.destroy(node.provider_id, owner("bye"))
    await connector.destroy("i-0123456789abcdef0", owner("bye"))

    after = await connector.describe(node.provider_id)
    assert after is not None
    assert after.state is NodeState.TERMINATED
    assert await connector.describe("i-0123456789abcdef0") is None


async def test_release_keeps_the_vm_running_but_no_longer_ours(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    kept = await connector.create(request("kept"))
    other = await connector.create(request("other"))

    assert connector.capabilities.release
    await connector.release(kept.provider_id, owner("kept"))

    assert [n.provider_id for n in await connector.list_cluster(CLUSTER)] == [other.provider_id]
    assert await connector.find_by_tags(owner("kept").identity()) == []
    after = await connector.describe(kept.provider_id)
    assert after is not None
    assert after.state is NodeState.RUNNING
    assert {k: v for k, v in after.tags.items() if k.startswith("skyfleet.io/")} == provenance("kept")
    # Tags that are not ours stay too (EC2's Name: the VM's name in the cloud).
    assert after.tags["Name"] == vm_name("shop-web-kept", cluster_id=CLUSTER, namespace="team-a")
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(kept.provider_id, owner("kept"))
    with pytest.raises(OwnershipMismatch):
        await connector.release(kept.provider_id, owner("kept"))  # released once, never ours again
    state = boto_ec2.describe_instances(InstanceIds=[kept.provider_id])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"


async def test_release_refuses_what_is_not_ours_and_what_does_not_exist(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    foreign = boto_ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ours = await connector.create(request("mine"))
    gone = await connector.create(request("gone"))
    await connector.destroy(gone.provider_id, owner("gone"))

    with pytest.raises(OwnershipMismatch, match=foreign):
        await connector.release(foreign, owner("mine"))
    with pytest.raises(OwnershipMismatch):
        await connector.release(ours.provider_id, owner("another-uid"))
    with pytest.raises(OwnershipMismatch):
        await connector.release(ours.provider_id, owner("mine", cluster="another-cluster"))
    with pytest.raises(NotFound):
        await connector.release("i-0123456789abcdef0", owner("mine"))
    with pytest.raises(NotFound):
        await connector.release(gone.provider_id, owner("gone"))

    assert [n.provider_id for n in await connector.find_by_tags(owner("mine").identity())] == [ours.provider_id]
    assert instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "mine")[0]["InstanceId"] == ours.provider_id


async def test_resize_needs_a_stopped_instance(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    node = await connector.create(request("grow"))

    with pytest.raises(InvalidRequest, match="stopped"):
        await connector.resize(node.provider_id, "t3.large")
    boto_ec2.stop_instances(InstanceIds=[node.provider_id])
    resized = await connector.resize(node.provider_id, "t3.large")

    assert resized.size_id == "t3.large"


async def test_resolve_size_and_image(ec2_endpoint: str, make_connector: ConnectorFactory) -> None:
    connector = make_connector(ec2_endpoint)

    smallest = await connector.resolve_size(cpu=2, memory_mib=8192)
    explicit = await connector.resolve_size(cpu=64, instance_type="t3.nano")
    image = await connector.resolve_image(name_pattern="amzn2-ami-*", owner="137112412989")

    assert (smallest.vcpus, smallest.memory_mib) == (2, 8192)
    assert smallest == await connector.resolve_size(cpu=2, memory_mib=8192)
    assert explicit.id == "t3.nano"
    assert image.name.startswith("amzn2-ami-")
    with pytest.raises(InvalidRequest, match="no size"):
        await connector.resolve_size(cpu=100000)


async def test_image_lookup_by_owner_ignores_a_newer_lookalike(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # Anyone can publish an AMI under a familiar name; only the owner check keeps a name
    # lookup from booting a stranger's image.
    genuine_owner = "137112412989"  # publishes moto's amzn2 image, as Amazon does on AWS
    pattern = "amzn2-ami-hvm-*-x86_64-gp2"
    # The emulator dates its stock images when first listed: list first, so the lookalike is newer.
    assert boto_ec2.describe_images(Owners=[genuine_owner])["Images"]
    await asyncio.sleep(1.1)
    vm = boto_ec2.run_instances(ImageId=AMI, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]
    lookalike = boto_ec2.create_image(InstanceId=vm["InstanceId"], Name="amzn2-ami-hvm-2099.01.01-x86_64-gp2")
    connector = make_connector(ec2_endpoint)

    unchecked = await connector.resolve_image(name_pattern=pattern, owner="*")  # any publisher, knowingly
    checked = await connector.resolve_image(name_pattern=pattern, owner=genuine_owner)

    assert unchecked.id == lookalike["ImageId"]  # newest name match, from the wrong account
    assert checked.id != lookalike["ImageId"]
    assert checked.owner == genuine_owner
    assert checked.name.startswith("amzn2-ami-")
    with pytest.raises(NotFound, match="owned by 000000000000"):
        await connector.resolve_image(name_pattern=pattern, owner="000000000000")


@pytest.mark.parametrize(("parameters", "family"), [({}, "t3a"), ({"architecture": "arm64"}, "t4g")])
async def test_sizes_fit_the_images_architecture(ec2_endpoint: str, parameters: dict[str, str], family: str) -> None:
    # An x86 AMI does not boot on a Graviton type, though those are often the smallest fit.
    connector = LibcloudConnector(ec2_config(ec2_endpoint, parameters))
    try:
        size = await connector.resolve_size(cpu=2, memory_mib=4096)
        explicit = await connector.resolve_size(instance_type="t4g.micro")
    finally:
        await connector.close()
    assert size.id.split(".")[0] == family
    assert size.architecture == parameters.get("architecture", "x86_64")
    assert explicit.id == "t4g.micro"  # an explicit type is the user's word, whatever the architecture


async def test_catalogue_is_cached_per_credential(
    ec2_endpoint: str, make_connector: ConnectorFactory, emulator: Any
) -> None:
    connector = make_connector(ec2_endpoint)
    first = await connector.list_images()
    emulator.stop()
    try:
        # The cloud is gone, yet a second connector for the same credential answers from cache.
        again = await make_connector(ec2_endpoint).list_images()
    finally:
        emulator.start()
    assert again == first


def test_unknown_provider_is_refused_with_the_supported_list(ec2_endpoint: str) -> None:
    config = ec2_config(ec2_endpoint)
    config = type(config)(**{**config.__dict__, "provider": "nimbus"})

    with pytest.raises(Unsupported, match="ec2"):
        LibcloudConnector(config)


def test_libcloud_connector_is_a_connector() -> None:
    assert issubclass(LibcloudConnector, Connector)


@pytest.mark.parametrize(
    ("secret", "works"),
    [
        ({"accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "camel-case-secret"}, True),  # as the README says
        ({"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "aws-cli-style"}, True),
        ({"accessKeyId": "AKIDEXAMPLE"}, False),
    ],
)
async def test_ec2_secret_key_names(ec2_endpoint: str, secret: dict[str, str], works: bool) -> None:
    connector = LibcloudConnector(dataclasses.replace(ec2_config(ec2_endpoint), secret=SecretData(secret)))
    try:
        if works:
            await connector.verify()
        else:
            with pytest.raises(InvalidCredentials, match="secretAccessKey"):
                await connector.verify()
    finally:
        await connector.close()
