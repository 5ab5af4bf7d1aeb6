"""Baking on EC2: AMIs from a stopped builder, through the connector, against moto and the fault proxy.

moto makes a new AMI ``available`` at once; the fault proxy keeps it ``pending`` for a set
time, as EC2 does for minutes, so the connector's view of a snapshot in progress is tested too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from collections.abc import AsyncIterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from libcloud.common.exceptions import BaseHTTPError

from skyfleet.connectors import (
    CreateRequest,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    Transient,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, CLUSTER, ConnectorFactory, ec2_config

pytestmark = pytest.mark.connector

IMAGE_UID = "7d1c6f0e-0f4b-4d0e-9a53-3b4c8f1e2a10"
KEY = "5f0c2a1b9e8d7c6b5a4f3e2d1c0b9a88"


def owner(key: str = KEY, *, cluster: str = CLUSTER, uid: str = IMAGE_UID) -> ImageOwnerTags:
    return ImageOwnerTags(cluster_id=cluster, image_uid=uid, bake_key=key, namespace="team-a", image="web")


def image_request(builder: str, key: str = KEY) -> ImageRequest:
    return ImageRequest(name=f"skyfleet-web-{key[:12]}", source_id=builder, tags=owner(key).to_tags())


async def stopped_builder(connector: LibcloudConnector, boto_ec2: Any, uid: str = "builder-1") -> str:
    """A builder VM that has powered itself off, as the recipe's last step does."""
    node = await connector.create(
        CreateRequest(
            name=f"bake-{uid}",
            image_id=AMI,
            size_id="t3.micro",
            owner=OwnerTags(cluster_id=CLUSTER, instance_uid=uid),
            extra_tags={ImageOwnerTags.ROLE: "builder"},
        )
    )
    boto_ec2.stop_instances(InstanceIds=[node.provider_id])
    seen = await connector.describe(node.provider_id)
    assert seen is not None
    assert seen.state is NodeState.STOPPED
    return node.provider_id


def images_of(boto_ec2: Any, uid: str = IMAGE_UID) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{ImageOwnerTags.IMAGE_UID}", "Values": [uid]}]
    images: list[dict[str, Any]] = boto_ec2.describe_images(Owners=["self"], Filters=filters)["Images"]
    return images


def snapshot_exists(boto_ec2: Any, snapshot_id: str) -> bool:
    found = boto_ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [snapshot_id]}])["Snapshots"]
    return bool(found)


async def test_create_image_tags_it_and_get_image_reports_its_snapshots(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    assert connector.capabilities.bake
    builder = await stopped_builder(connector, boto_ec2)

    made = await connector.create_image(image_request(builder))

    assert made.id.startswith("ami-")
    (stored,) = images_of(boto_ec2)
    assert stored["ImageId"] == made.id
    assert stored["Name"] == f"skyfleet-web-{KEY[:12]}"
    assert {t["Key"]: t["Value"] for t in stored["Tags"]} == owner().to_tags()
    sent = proxy.count("requests:CreateImage")
    assert sent == 1
    seen = await connector.get_image(made.id)
    assert seen is not None
    assert seen.state is ImageState.AVAILABLE
    assert seen.tags == owner().to_tags()
    assert seen.snapshot_ids == tuple(m["Ebs"]["SnapshotId"] for m in stored["BlockDeviceMappings"])
    assert seen.snapshot_ids


async def test_a_new_image_stays_pending_as_long_as_the_cloud_says(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    proxy.faults.image_pending_delay = 1.0

    made = await connector.create_image(image_request(builder))

    assert made.state is ImageState.PENDING
    first = await connector.get_image(made.id)
    assert first is not None
    assert first.state is ImageState.PENDING
    # moto itself says available: only the proxy's view makes it wait.
    assert boto_ec2.describe_images(ImageIds=[made.id])["Images"][0]["State"] == "available"
    await asyncio.sleep(1.1)
    later = await connector.get_image(made.id)
    assert later is not None
    assert later.state is ImageState.AVAILABLE

    proxy.faults.image_pending_delay = math.inf  # a snapshot that never completes
    stuck = await connector.create_image(image_request(builder, key="ab" * 16))
    await asyncio.sleep(0.2)
    again = await connector.get_image(stuck.id)
    assert again is not None
    assert again.state is ImageState.PENDING


async def test_an_existing_bake_is_adopted_without_a_cloud_write(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    first = await connector.create_image(image_request(builder))

    second = await connector.create_image(image_request(builder))

    assert second.id == first.id
    assert proxy.count("requests:CreateImage") == 1
    assert len(images_of(boto_ec2)) == 1
    found = await connector.find_images(owner().lookup())
    assert [i.id for i in found] == [first.id]


async def test_lost_create_image_answer_makes_no_second_image(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    proxy.drop_next_response("CreateImage")

    made = await connector.create_image(image_request(builder))

    assert proxy.count("dropped") == 1
    assert proxy.count("requests:CreateImage") == 1  # the retry looked first and found it
    assert [i["ImageId"] for i in images_of(boto_ec2)] == [made.id]


async def test_duplicate_name_answer_adopts_our_image_and_refuses_a_stranger(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # EC2 refuses a second AMI of the same name; after a lost answer whose image the tag
    # lookup does not show yet, that refusal is how the adapter learns the image exists.
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    req = image_request(builder)
    tags = [{"Key": k, "Value": v} for k, v in req.tags.items()]
    ours = boto_ec2.create_image(
        InstanceId=builder, Name=req.name, TagSpecifications=[{"ResourceType": "image", "Tags": tags}]
    )["ImageId"]
    driver = connector.adapter.make_driver()

    proxy.fail_next("CreateImage", code="InvalidAMIName.Duplicate", status=400)
    adopted = connector.adapter.create_image(driver, req)
    assert adopted.id == ours

    stranger = dataclasses.replace(req, name="someone-elses", tags=owner(cluster="another-cluster").to_tags())
    boto_ec2.create_image(InstanceId=builder, Name="someone-elses")
    proxy.fail_next("CreateImage", code="InvalidAMIName.Duplicate", status=400)
    with pytest.raises(BaseHTTPError, match=re.escape("InvalidAMIName.Duplicate")):
        connector.adapter.create_image(driver, stranger)


async def test_find_images_sees_only_this_bake(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    mine = await connector.create_image(image_request(builder))
    await connector.create_image(image_request(builder, key="cd" * 16))  # another generation
    other = dataclasses.replace(image_request(builder), name="other", tags=owner(cluster="another-cluster").to_tags())
    await connector.create_image(other)
    boto_ec2.create_image(InstanceId=builder, Name="untagged")

    assert [i.id for i in await connector.find_images(owner().lookup())] == [mine.id]
    generations = await connector.find_images(owner().identity())
    assert len(generations) == 2
    assert all(i.tags[ImageOwnerTags.IMAGE_UID] == IMAGE_UID for i in generations)


async def test_deregister_deletes_the_snapshots_and_refuses_what_is_not_ours(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)
    made = await connector.create_image(image_request(builder))
    seen = await connector.get_image(made.id)
    assert seen is not None
    foreign = boto_ec2.create_image(InstanceId=builder, Name="not-ours")["ImageId"]

    with pytest.raises(OwnershipMismatch, match=foreign):
        await connector.deregister_image(foreign, owner())
    with pytest.raises(OwnershipMismatch):
        await connector.deregister_image(made.id, owner(uid="another-image-uid"))
    assert boto_ec2.describe_images(ImageIds=[foreign, made.id])["Images"]

    await connector.deregister_image(made.id, owner())
    await connector.deregister_image(made.id, owner())  # already gone: success

    assert images_of(boto_ec2) == []
    assert await connector.get_image(made.id) is None
    assert not any(snapshot_exists(boto_ec2, s) for s in seen.snapshot_ids)


async def test_deregister_interrupted_before_the_snapshots_finishes_on_the_next_call(
    proxy: FaultProxy, ec2_endpoint: str, boto_ec2: Any
) -> None:
    connector = LibcloudConnector(
        ec2_config(proxy.endpoint), retry=RetryPolicy(base_delay=0.01, max_attempts=2, max_elapsed=5)
    )
    try:
        builder = await stopped_builder(connector, boto_ec2)
        made = await connector.create_image(image_request(builder))
        seen = await connector.get_image(made.id)
        assert seen is not None
        (snapshot,) = seen.snapshot_ids
        # A stranger's snapshot mentioning our AMI in its description is not ours to delete.
        volume = boto_ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
        stranger = boto_ec2.create_snapshot(VolumeId=volume, Description=f"copy of {made.id}")["SnapshotId"]
        proxy.fail_next("DeleteSnapshot", count=2)

        with pytest.raises(Transient):
            await connector.deregister_image(made.id, owner())
        assert images_of(boto_ec2) == []
        assert snapshot_exists(boto_ec2, snapshot)

        await connector.deregister_image(made.id, owner())

        assert not snapshot_exists(boto_ec2, snapshot)
        assert snapshot_exists(boto_ec2, stranger)
    finally:
        await connector.close()


@pytest.fixture
async def eu_connector(proxy: FaultProxy) -> AsyncIterator[LibcloudConnector]:
    config = dataclasses.replace(ec2_config(proxy.endpoint), region="eu-west-1")
    connector = LibcloudConnector(config, retry=RetryPolicy(base_delay=0.01, max_attempts=3))
    yield connector
    await connector.close()


async def test_copy_image_into_another_region_is_tagged_and_done_once(
    proxy: FaultProxy,
    make_connector: ConnectorFactory,
    eu_connector: LibcloudConnector,
    ec2_endpoint: str,
    boto_ec2: Any,
) -> None:
    connector = make_connector(proxy.endpoint)
    assert eu_connector.capabilities.image_copy
    builder = await stopped_builder(connector, boto_ec2)
    source = await connector.create_image(image_request(builder))
    name = f"skyfleet-web-{KEY[:12]}"

    copy = await eu_connector.copy_image("us-east-1", source.id, name, owner().to_tags())
    again = await eu_connector.copy_image("us-east-1", source.id, name, owner().to_tags())

    assert again.id == copy.id
    assert proxy.count("requests:CopyImage") == 1
    boto_eu = boto3.client(
        "ec2",
        region_name="eu-west-1",
        endpoint_url=ec2_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (stored,) = images_of(boto_eu)
    assert stored["ImageId"] == copy.id
    assert {t["Key"]: t["Value"] for t in stored["Tags"]} == owner().to_tags()
    assert [i.id for i in await connector.find_images(owner().lookup())] == [source.id]  # the source stays


async def test_console_output_of_a_builder(proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any) -> None:
    connector = make_connector(proxy.endpoint)
    builder = await stopped_builder(connector, boto_ec2)

    output = await connector.console_output(builder)

    assert output is not None
    assert "Linux version" in output  # either emulator's canned boot log


async def test_share_image_grants_launch_permission_to_ours_only(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(proxy.endpoint)
    assert connector.capabilities.image_share
    builder = await stopped_builder(connector, boto_ec2)
    made = await connector.create_image(image_request(builder))
    foreign = boto_ec2.create_image(InstanceId=builder, Name="not-ours")["ImageId"]

    await connector.share_image(made.id, ["123456789012", "210987654321"], owner())
    with pytest.raises(OwnershipMismatch):
        await connector.share_image(foreign, ["123456789012"], owner())

    def permitted(image_id: str) -> list[str]:
        found = boto_ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        return sorted(p["UserId"] for p in found["LaunchPermissions"])

    assert permitted(made.id) == ["123456789012", "210987654321"]
    assert permitted(foreign) == []
