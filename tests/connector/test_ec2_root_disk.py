"""Size.diskGiB reaches EC2: the root EBS volume is sized by a block device mapping on RunInstances.

Asserted on what EC2 (moto, the fidelity reference) recorded: the volume attached at the AMI's
root device and its size.
"""

from __future__ import annotations

from typing import Any

import pytest

from skyfleet.connectors import CreateRequest
from tests.connector.conftest import AMI, ConnectorFactory, owner

pytestmark = [pytest.mark.connector, pytest.mark.parametrize("emulator", ["moto"], indirect=True)]


def request(uid: str, disk_gib: int | None) -> CreateRequest:
    return CreateRequest(name=f"shop-db-{uid}", image_id=AMI, size_id="t3.micro", owner=owner(uid), disk_gib=disk_gib)


def root_volume_gib(boto_ec2: Any, instance_id: str) -> int:
    (reservation,) = boto_ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    (instance,) = reservation["Instances"]
    root = instance["RootDeviceName"]
    (mapping,) = [m for m in instance["BlockDeviceMappings"] if m["DeviceName"] == root]
    (volume,) = boto_ec2.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
    return int(volume["Size"])


def ami_root_gib(boto_ec2: Any) -> int:
    (image,) = boto_ec2.describe_images(ImageIds=[AMI])["Images"]
    root = image["RootDeviceName"]
    return int(next(m["Ebs"]["VolumeSize"] for m in image["BlockDeviceMappings"] if m["DeviceName"] == root))


async def test_disk_gib_sizes_the_root_volume(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    connector = make_connector(ec2_endpoint)

    node = await connector.create(request("uid-disk", disk_gib=42))

    assert root_volume_gib(boto_ec2, node.provider_id) == 42


async def test_a_disk_smaller_than_the_image_keeps_the_images_size(
    ec2_endpoint: str, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # EC2 refuses a root volume below the AMI's snapshot; "at least" means the image's size then.
    connector = make_connector(ec2_endpoint)
    smallest = ami_root_gib(boto_ec2)
    assert smallest > 1

    node = await connector.create(request("uid-small", disk_gib=1))

    assert root_volume_gib(boto_ec2, node.provider_id) == smallest
