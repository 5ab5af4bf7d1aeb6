"""fastec2's own promises: bounded cost at fleet size, EC2's behaviour where moto is lenient,
switchable idempotency, delays, regions, images, and a process runner shared with moto."""

from __future__ import annotations

import asyncio
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]
from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import NodeImage, NodeSize
from libcloud.compute.drivers.ec2 import IdempotentParamError
from libcloud.compute.providers import get_driver

from skyfleet.connectors import CreateRequest, InvalidRequest, NodeState, NotFound, OwnerTags
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.fastec2 import FastEC2, FastEC2Process, region_of
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, CLUSTER, ConnectorFactory, owner

pytestmark = pytest.mark.connector

UID = OwnerTags.INSTANCE_UID


@pytest.fixture
def fast() -> Iterator[FastEC2]:
    with FastEC2() as emulator:
        yield emulator


def driver(endpoint: str, region: str = "us-east-1") -> Any:
    port = int(endpoint.rstrip("/").rsplit(":", 1)[1])
    return get_driver("ec2")(
        "AKIDEXAMPLE", "secret", region=region, secure=False, host="127.0.0.1", port=port, signature_version="4"
    )


def launch(drv: Any, token: str | None = None, name: str = "vm", image: str = AMI) -> Any:
    return drv.create_node(
        name=name,
        size=NodeSize("t3.micro", "t3.micro", 0, 0, 0, 0, drv),
        image=NodeImage(image, image, drv),
        ex_metadata=owner(name).to_tags(),
        ex_clienttoken=token,
    )


def query(endpoint: str, params: dict[str, str], headers: dict[str, str] | None = None) -> tuple[int, str]:
    url = f"{endpoint}?{urllib.parse.urlencode({**params, 'Version': '2016-11-15'})}"
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback emulator
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def boto(endpoint: str, region: str = "us-east-1") -> Any:
    """boto3 parses answers by AWS's own service model: a shape fastec2 gets wrong shows here."""
    return boto3.client(
        "ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call()
    code: str = refused.value.response["Error"]["Code"]
    return code


def create(uid: str, **overrides: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "name": f"web-{uid}",
        "image_id": AMI,
        "size_id": "t3.micro",
        "owner": owner(uid),
    }
    return CreateRequest(**(fields | overrides))


async def test_a_tag_lookup_examines_its_answer_not_the_fleet(fast: FastEC2, make_connector: ConnectorFactory) -> None:
    # 6,000 instances in the account, 5,000 of them ours: finding one Instance's VM must not
    # look at the others (this is what made moto the bottleneck of the fleet benchmark).
    ours = fast.seed(5000, {OwnerTags.CLUSTER_ID: CLUSTER}, unique_tag=UID)
    fast.seed(1000, {OwnerTags.CLUSTER_ID: "someone-else"}, unique_tag=UID)
    connector = make_connector(fast.endpoint)

    before = fast.backend.stats["examined"]
    found = await connector.find_by_tags({OwnerTags.CLUSTER_ID: CLUSTER, UID: ours[1234]})
    examined_by_lookup = fast.backend.stats["examined"] - before
    listed = await connector.list_cluster(CLUSTER)
    examined_by_listing = fast.backend.stats["examined"] - before - examined_by_lookup

    assert [n.provider_id for n in found] == [ours[1234]]
    assert examined_by_lookup == 1
    assert {n.provider_id for n in listed} == set(ours)
    assert fast.backend.stats["requests:DescribeInstances"] == 1 + 5  # pages of 1,000
    # The listing costs its answer (once computed, once checked again as later pages go out),
    # not its answer once per page.
    assert examined_by_listing == 5000 + 4000


def test_client_token_deduplication_can_be_switched_off(fast: FastEC2) -> None:
    drv = driver(fast.endpoint)
    first = launch(drv, token="token-1", name="a")

    assert launch(drv, token="token-1", name="a").id == first.id
    with pytest.raises(IdempotentParamError):
        launch(drv, token="token-1", name="b")  # same token, other parameters
    fast.configure(client_token_dedup=False)  # a cloud that has no idempotency token
    duplicate = launch(drv, token="token-1", name="a")

    assert duplicate.id != first.id
    assert fast.backend.stats["requests:RunInstances"] == 4
    assert len([n for n in drv.list_nodes() if n.extra["tags"].get("Name") == "a"]) == 2


async def test_pending_then_running_and_terminated_visible_for_a_while(
    fast: FastEC2, make_connector: ConnectorFactory
) -> None:
    fast.configure(pending_delay=0.5, terminated_ttl=0.5)
    connector = make_connector(fast.endpoint)

    node = await connector.create(create("slow"))
    early = await connector.describe(node.provider_id)
    await asyncio.sleep(0.6)
    running = await connector.describe(node.provider_id)
    await connector.destroy(node.provider_id, owner("slow"))
    terminated = await connector.describe(node.provider_id)
    await asyncio.sleep(0.6)

    assert early is not None
    assert early.state is NodeState.PENDING
    assert running is not None
    assert running.state is NodeState.RUNNING
    assert terminated is not None
    assert terminated.state is NodeState.TERMINATED
    assert await connector.describe(node.provider_id) is None  # EC2 forgets it after about an hour


async def test_each_region_is_its_own_view(fast: FastEC2, make_connector: ConnectorFactory) -> None:
    ireland = fast.seed(3, {OwnerTags.CLUSTER_ID: CLUSTER}, region="eu-west-1")
    virginia = make_connector(fast.endpoint)

    assert await virginia.list_cluster(CLUSTER) == []
    assert {n.id for n in driver(fast.endpoint, "eu-west-1").list_nodes()} == set(ireland)
    # Requests without a SigV4 scope name their region in the Host, as EC2's endpoints do.
    status, body = query(fast.endpoint, {"Action": "DescribeInstances"}, {"Host": "ec2.eu-west-1.amazonaws.com"})
    assert status == 200
    assert set(re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", body)) == set(ireland)
    assert region_of({}, {}) == "us-east-1"
    assert region_of({}, {"X-Amz-Credential": "AKID/20260101/ap-south-1/ec2/aws4_request"}) == "ap-south-1"


def test_paging_sees_every_reservation_once_while_the_fleet_changes(fast: FastEC2) -> None:
    present = fast.seed(23, {OwnerTags.CLUSTER_ID: CLUSTER})
    drv = driver(fast.endpoint)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"Action": "DescribeInstances", "MaxResults": "5", "Filter.1.Name": f"tag:{OwnerTags.CLUSTER_ID}"}
        params["Filter.1.Value.1"] = CLUSTER
        if token:
            params["NextToken"] = token
        body = drv.connection.request(drv.path, params=params).body
        seen += re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", body)
        pages += 1
        if pages == 2:  # the fleet changes under the listing
            drv.destroy_node(drv.list_nodes(ex_node_ids=[present[0]])[0])
            fast.seed(2, {OwnerTags.CLUSTER_ID: CLUSTER})
        match = re.search(r"<nextToken>([^<]+)</nextToken>", body)
        if not match:
            break
        token = match.group(1)

    assert sorted(set(seen)) == sorted(seen)  # nothing twice
    assert set(present) <= set(seen)  # nothing that was there all along is missed
    assert pages == 5  # the 23 reservations the listing started with, in pages of 5


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"Action": "DescribeInstances", "MaxResults": "2"}, "InvalidParameterValue"),
        (
            {"Action": "DescribeInstances", "Filter.1.Name": "no-such-filter", "Filter.1.Value.1": "x"},
            "InvalidParameterValue",
        ),
        ({"Action": "DescribeInstances", "InstanceId.1": "bogus"}, "InvalidInstanceID.Malformed"),
        ({"Action": "DescribeInstances", "NextToken": "garbage"}, "InvalidParameterValue"),
        (
            {"Action": "RunInstances", "ImageId": "ami-12345678", "MinCount": "1", "MaxCount": "1"},
            "InvalidAMIID.NotFound",
        ),
        (
            {"Action": "RunInstances", "ImageId": AMI, "InstanceType": "huge", "MinCount": "1", "MaxCount": "1"},
            "InvalidParameterValue",
        ),
        (
            {"Action": "RunInstances", "ImageId": AMI, "Placement.AvailabilityZone": "us-east-1z"},
            "InvalidParameterValue",
        ),
        ({"Action": "RunInstances"}, "MissingParameter"),
        ({"Action": "CreateImage", "InstanceId": "i-0123456789abcdef0", "Name": "ab"}, "InvalidAMIName.Malformed"),
        ({"Action": "DeleteSnapshot", "SnapshotId": "snap-bogus"}, "InvalidSnapshotID.Malformed"),
        ({"Action": "DeleteSnapshot", "SnapshotId": "snap-0123456789abcdef0"}, "InvalidSnapshot.NotFound"),
        ({"Action": "CreateSnapshot", "VolumeId": "vol-0123456789abcdef0"}, "InvalidVolume.NotFound"),
        ({"Action": "CreateVolume", "Size": "1"}, "MissingParameter"),
        ({"Action": "DescribeImageAttribute", "ImageId": AMI, "Attribute": "launchPermission"}, "AuthFailure"),
        ({"Action": "GetConsoleOutput"}, "MissingParameter"),
        ({"Action": "TerminateInstances"}, "MissingParameter"),
        (
            {"Action": "TerminateInstances", "InstanceId.1": "i-0123456789abcdef0", "InstanceId.2": "bogus"},
            "InvalidInstanceID.Malformed",
        ),
        (
            {
                "Action": "TerminateInstances",
                "InstanceId.1": "i-0123456789abcdef0",
                "InstanceId.2": "i-0123456789abcdef1",
            },
            "InvalidInstanceID.NotFound",
        ),
        ({"Action": "FrobnicateInstances"}, "InvalidAction"),
        ({}, "MissingAction"),
    ],
)
def test_refusals_carry_ec2_error_codes(fast: FastEC2, params: dict[str, str], code: str) -> None:
    status, body = query(fast.endpoint, params)
    answered = re.search(r"<Response><Errors><Error><Code>([^<]+)</Code><Message>[^<]+</Message>", body)

    assert status == 400
    assert answered is not None
    assert answered.group(1) == code


async def test_where_fastec2_follows_ec2_rather_than_moto(fast: FastEC2, make_connector: ConnectorFactory) -> None:
    # moto launches from any image id and resizes running instances; EC2 refuses both.
    connector = make_connector(fast.endpoint)
    with pytest.raises(InvalidRequest) as unknown_image:
        await connector.create(create("ghost", image_id="ami-0123456789abcdef0"))
    node = await connector.create(create("busy"))
    drv = driver(fast.endpoint)
    with pytest.raises(BaseHTTPError, match="IncorrectInstanceState"):
        drv.ex_change_node_size(
            connector.adapter.node_stub(drv, node.provider_id), NodeSize("t3.large", "", 0, 0, 0, 0, drv)
        )

    assert unknown_image.value.code == "InvalidAMIID.NotFound"
    described = await connector.describe(node.provider_id)
    assert described is not None
    assert described.size_id == "t3.micro"


def test_terminate_takes_many_ids_and_fails_whole_on_an_unknown_one(fast: FastEC2) -> None:
    ids = fast.seed(150, {OwnerTags.CLUSTER_ID: CLUSTER})
    params = {"Action": "TerminateInstances", **{f"InstanceId.{n}": i for n, i in enumerate(ids[:100], start=1)}}

    refused, error = query(fast.endpoint, {**params, "InstanceId.101": "i-0123456789abcdef0"})
    status, body = query(fast.endpoint, params)
    states = {n.id: n.state.value for n in driver(fast.endpoint).list_nodes(ex_node_ids=ids)}

    assert (refused, "InvalidInstanceID.NotFound" in error) == (400, True)
    assert status == 200
    assert body.count("<name>shutting-down</name></currentState>") == 100
    assert sorted(states.values()).count("terminated") == 100
    assert sorted(states.values()).count("running") == 50


def test_images_can_be_baked_copied_used_and_deregistered(fast: FastEC2) -> None:
    east, west = driver(fast.endpoint), driver(fast.endpoint, "eu-central-1")
    vm = launch(east, name="builder")

    baked = east.create_image(vm, "shop-web-2026.01")
    with pytest.raises(BaseHTTPError, match=r"InvalidAMIName\.Duplicate"):
        east.create_image(vm, "shop-web-2026.01")
    copied = west.copy_image(baked, "us-east-1", name="shop-web-2026.01")
    booted = launch(west, name="from-copy", image=copied.id)
    mine = east.list_images(ex_owner="self")

    assert [(i.id, i.name, i.extra["owner_id"]) for i in mine] == [(baked.id, "shop-web-2026.01", "123456789012")]
    assert [i.id for i in west.list_images(ex_owner="self")] == [copied.id]
    assert booted.extra["image_id"] == copied.id
    assert east.delete_image(baked)
    assert east.list_images(ex_owner="self") == []
    with pytest.raises(BaseHTTPError, match=r"InvalidAMIID\.NotFound"):
        launch(east, name="too-late", image=baked.id)


def test_a_new_image_is_pending_for_the_configured_time(fast: FastEC2) -> None:
    fast.configure(image_delay=0.4)
    drv = driver(fast.endpoint)
    image = drv.create_image(launch(drv, name="builder"), "slow-bake")

    early = drv.list_images(ex_image_ids=[image.id])[0].extra["state"]
    with pytest.raises(BaseHTTPError, match=r"InvalidAMIID\.Unavailable"):
        launch(drv, name="too-early", image=image.id)
    asyncio.run(asyncio.sleep(0.5))

    assert early == "pending"
    assert drv.list_images(ex_image_ids=[image.id])[0].extra["state"] == "available"


@pytest.mark.parametrize("runner", [EmulatorProcess, FastEC2Process], ids=["moto", "fastec2"])
async def test_either_emulator_runs_in_its_own_process_behind_the_fault_proxy(
    runner: type[EmulatorProcess], make_connector: ConnectorFactory
) -> None:
    process = runner()
    try:
        ids = process.seed(30, {OwnerTags.CLUSTER_ID: CLUSTER}, unique_tag=UID)
        with FaultProxy(process.url) as proxy:
            proxy.faults.pending_delay = 5.0  # the proxy rewrites the emulator's answers unchanged
            connector = make_connector(proxy.endpoint)
            found = await connector.find_by_tags({UID: ids[7]})
            made = await connector.create(create("fresh"))
            fresh = await connector.describe(made.provider_id)
            listed = await connector.list_cluster(CLUSTER)
            process.reset()
            after_reset = await connector.list_cluster(CLUSTER)
    finally:
        process.stop()

    assert [n.provider_id for n in found] == [ids[7]]
    assert fresh is not None
    assert fresh.state is NodeState.PENDING
    assert len(listed) == 31
    assert after_reset == []
    assert process.process.poll() is not None


def test_settings_reach_the_child_process() -> None:
    process = FastEC2Process(pending_delay=30.0)
    try:
        drv = driver(process.url)
        pending = launch(drv, name="slow")
        state_before = drv.list_nodes(ex_node_ids=[pending.id])[0].state
        settings = process.configure(pending_delay=0.0, client_token_dedup=False)
        with pytest.raises(ValueError, match="unknown setting"):
            FastEC2Process(no_such_setting=1)
    finally:
        process.stop()

    assert state_before == "pending"
    assert (settings["pending_delay"], settings["client_token_dedup"]) == (0.0, False)


async def test_a_missing_instance_is_not_found_through_the_connector(
    fast: FastEC2, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(fast.endpoint)
    with pytest.raises(NotFound):
        await connector.release("i-0123456789abcdef0", owner("nobody"))


def test_a_baked_image_owns_its_snapshots_until_they_are_deleted(fast: FastEC2) -> None:
    # moto cannot tag snapshots in CreateImage, deletes no snapshot it says an image uses, and
    # lists a made-up snapshot per catalogue image as the account's own; EC2 does none of that.
    ec2 = boto(fast.endpoint)
    builder = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(
        InstanceId=builder["InstanceId"],
        Name="shop-web-2026.02",
        TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "bake", "Value": "b1"}]},
            {"ResourceType": "snapshot", "Tags": [{"Key": "bake", "Value": "b1-disk"}]},
        ],
    )["ImageId"]
    (image,) = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:bake", "Values": ["b1"]}])["Images"]
    (snapshot_id,) = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]]
    (snapshot,) = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]

    in_use = error_code(lambda: ec2.delete_snapshot(SnapshotId=snapshot_id))
    ec2.deregister_image(ImageId=image_id)
    kept = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    ec2.delete_snapshot(SnapshotId=snapshot_id)

    assert image["ImageId"] == image_id
    assert snapshot["Description"] == f"Created by CreateImage({builder['InstanceId']}) for {image_id}"
    assert snapshot["Tags"] == [{"Key": "bake", "Value": "b1-disk"}]
    assert in_use == "InvalidSnapshot.InUse"
    assert [s["SnapshotId"] for s in kept] == [snapshot_id]  # deregistering keeps the snapshot
    assert ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"] == []
    assert ec2.describe_snapshots(OwnerIds=["amazon"])["Snapshots"] == []


def test_copy_image_client_token_answers_the_first_copy(fast: FastEC2) -> None:
    # moto makes a new copy for every retry of one CopyImage; EC2 answers the first one.
    east, west = boto(fast.endpoint), boto(fast.endpoint, "eu-central-1")
    builder = east.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    source = east.create_image(InstanceId=builder["InstanceId"], Name="shop-web-2026.03")["ImageId"]
    request = {
        "SourceRegion": "us-east-1",
        "SourceImageId": source,
        "Name": "shop-web-2026.03",
        "ClientToken": "copy-1",
        "TagSpecifications": [{"ResourceType": "image", "Tags": [{"Key": "bake", "Value": "b2"}]}],
    }

    first = west.copy_image(**request)["ImageId"]
    retried = west.copy_image(**request)["ImageId"]
    mismatch = error_code(lambda: west.copy_image(**{**request, "Name": "shop-web-other"}))

    assert retried == first
    assert mismatch == "IdempotentParameterMismatch"
    (copy,) = west.describe_images(Owners=["self"])["Images"]
    assert (copy["ImageId"], copy["Tags"]) == (first, [{"Key": "bake", "Value": "b2"}])
    (snapshot,) = west.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert snapshot["Description"].startswith(f"Copied for DestinationAmi {first} from SourceAmi {source} ")


def test_launch_permissions_are_the_owners_to_grant(fast: FastEC2) -> None:
    # moto lets any account share, or read the sharing of, a catalogue image it does not own.
    ec2 = boto(fast.endpoint)
    builder = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(InstanceId=builder["InstanceId"], Name="shop-web-2026.04")["ImageId"]

    def granted() -> list[dict[str, str]]:
        found: list[dict[str, str]] = ec2.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
            "LaunchPermissions"
        ]
        return found

    ec2.modify_image_attribute(
        ImageId=image_id, LaunchPermission={"Add": [{"UserId": "210987654321"}, {"UserId": "111122223333"}]}
    )
    two = granted()
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Remove": [{"UserId": "111122223333"}]})
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})

    assert two == [{"UserId": "111122223333"}, {"UserId": "210987654321"}]
    assert granted() == [{"Group": "all"}, {"UserId": "210987654321"}]
    assert ec2.describe_images(ImageIds=[image_id])["Images"][0]["Public"] is True
    bad_account = error_code(
        lambda: ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"UserId": "me"}]})
    )
    assert bad_account == "InvalidAMIAttributeItemValue"
    stranger = error_code(
        lambda: ec2.modify_image_attribute(ImageId=AMI, LaunchPermission={"Add": [{"UserId": "210987654321"}]})
    )
    assert stranger == "AuthFailure"


def test_console_output_appears_once_the_instance_has_booted(fast: FastEC2) -> None:
    # moto answers its canned log even for an instance still pending.
    fast.configure(pending_delay=0.3)
    ec2 = boto(fast.endpoint)
    instance_id = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0][
        "InstanceId"
    ]

    early = ec2.get_console_output(InstanceId=instance_id)
    asyncio.run(asyncio.sleep(0.4))
    booted = ec2.get_console_output(InstanceId=instance_id)

    assert "Output" not in early
    assert "Linux version" in booted["Output"]  # boto3 has decoded EC2's base64
    assert instance_id in booted["Output"]
