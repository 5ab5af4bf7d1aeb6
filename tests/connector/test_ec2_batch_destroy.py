"""Batched destroys on EC2: concurrent destroys share one DescribeInstances and one
TerminateInstances, through libcloud's own EC2 driver, against moto and fastec2 behind the fault
proxy, and the owner-tag check still holds for every VM on its own."""

from __future__ import annotations

import asyncio
import http.client
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from skyfleet.connectors import InvalidRequest, OwnershipMismatch
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, CLUSTER, ConnectorFactory, owner

pytestmark = pytest.mark.connector

UNKNOWN = "i-0123456789abcdef0"  # well formed, never launched


def launch(boto_ec2: Any, uids: list[str], cluster: str = CLUSTER) -> dict[str, str]:
    """One VM per uid, tagged as that Instance's (of ``cluster``), straight at the emulator."""
    made = {}
    for uid in uids:
        tags = [{"Key": k, "Value": v} for k, v in owner(uid, cluster).to_tags().items()]
        reply = boto_ec2.run_instances(
            ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
        )
        made[uid] = reply["Instances"][0]["InstanceId"]
    return made


def states(boto_ec2: Any, ids: list[str]) -> dict[str, str]:
    reply = boto_ec2.describe_instances(InstanceIds=ids)
    return {i["InstanceId"]: i["State"]["Name"] for r in reply["Reservations"] for i in r["Instances"]}


def gone(state: str) -> bool:
    return state in ("shutting-down", "terminated")


def named(query: dict[str, str]) -> list[str]:
    return [v for k, v in query.items() if k.startswith("InstanceId.")]


async def destroy_all(connector: LibcloudConnector, vms: dict[str, str]) -> dict[str, BaseException | None]:
    outcomes = await asyncio.gather(
        *(connector.destroy(vm, owner(uid)) for uid, vm in vms.items()), return_exceptions=True
    )
    return dict(zip(vms, outcomes, strict=True))


async def test_fifty_concurrent_destroys_cost_one_describe_and_one_terminate(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(50)])
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert all(gone(s) for s in states(boto_ec2, list(vms.values())).values())
    assert proxy.count("requests:DescribeInstances") == 1
    assert proxy.count("requests:TerminateInstances") == 1
    (terminate,) = proxy.queries("TerminateInstances")
    assert sorted(named(terminate)) == sorted(vms.values())


async def test_a_vm_of_another_owner_fails_its_caller_alone_and_keeps_running(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(9)])
    # The caller thinks this VM is its Instance's, but it carries another cluster's tags.
    foreign = launch(boto_ec2, ["u9"], cluster="another-cluster")["u9"]
    vms["u9"] = foreign
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert isinstance(outcomes.pop("u9"), OwnershipMismatch)
    assert set(outcomes.values()) == {None}
    after = states(boto_ec2, list(vms.values()))
    assert after.pop(foreign) == "running"
    assert all(gone(s) for s in after.values())
    (terminate,) = proxy.queries("TerminateInstances")
    assert foreign not in named(terminate)
    assert len(named(terminate)) == 9


async def test_the_right_cluster_but_another_instance_is_refused_in_a_batch(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, ["a", "b"])
    connector = make_connector(proxy.endpoint)

    # Each VM is checked against its own caller's tags: b's VM asked for as a's is refused.
    outcomes = await asyncio.gather(
        connector.destroy(vms["a"], owner("a")), connector.destroy(vms["b"], owner("a")), return_exceptions=True
    )

    assert outcomes[0] is None
    assert isinstance(outcomes[1], OwnershipMismatch)
    assert states(boto_ec2, [vms["b"]]) == {vms["b"]: "running"}


async def test_vms_already_gone_or_unknown_are_done_and_the_others_deleted(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(6)])
    boto_ec2.terminate_instances(InstanceIds=[vms["u0"]])
    vms["never"] = UNKNOWN  # EC2 refuses a whole DescribeInstances that names it
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    real = [vm for uid, vm in vms.items() if uid != "never"]
    assert all(gone(s) for s in states(boto_ec2, real).values())
    terminated = [i for q in proxy.queries("TerminateInstances") for i in named(q)]
    assert sorted(terminated) == sorted(vm for uid, vm in vms.items() if uid not in ("u0", "never"))


async def test_a_terminate_refused_for_an_unknown_id_is_sent_again_for_the_rest(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # As EC2 answers when one VM vanished between the description and the delete.
    vms = launch(boto_ec2, [f"u{i}" for i in range(5)])
    proxy.fail_next(
        "TerminateInstances",
        code="InvalidInstanceID.NotFound",
        status=400,
        message=f"The instance ID '{vms['u0']}' does not exist",
    )
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert all(gone(s) for s in states(boto_ec2, list(vms.values())).values())
    assert proxy.count("requests:TerminateInstances") == 2


@pytest.mark.parametrize("kind", ["throttle", "error"])
async def test_a_throttled_or_failing_terminate_is_retried_until_all_are_gone(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any, kind: str
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(20)])
    proxy.fail_next("TerminateInstances", count=2, kind=kind)  # 503 RequestLimitExceeded / Unavailable
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert all(gone(s) for s in states(boto_ec2, list(vms.values())).values())
    # Every caller retried on its own, and their retries met again in few batches.
    assert 3 <= proxy.count("requests:TerminateInstances") < 20


async def test_batches_fit_the_destroy_instance_burst(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(30)])
    connector = make_connector(proxy.endpoint, destroy_instance_burst=10, destroy_instances_per_second=100.0)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert [len(named(q)) for q in proxy.queries("TerminateInstances")] == [10, 10, 10]
    assert all(gone(s) for s in states(boto_ec2, list(vms.values())).values())


def test_the_proxy_counts_the_ids_a_request_names(proxy: FaultProxy) -> None:
    proxy.throttle("TerminateInstances", burst=10, rate=0.001, per="InstanceId")
    proxy.throttle("TerminateInstances", burst=100, rate=0.001)

    def terminate(count: int) -> int:
        ids = {f"InstanceId.{i}": f"i-{i:017x}" for i in range(1, count + 1)}
        return post(proxy.endpoint, {"Action": "TerminateInstances", **ids})

    assert terminate(11) == 503  # more ids than the bucket holds: refused whole, nothing taken
    assert terminate(10) != 503  # fits: forwarded (the emulator knows none of them)
    assert terminate(1) == 503  # the ten took every token
    assert proxy.count("throttled:TerminateInstances") == 2


def post(endpoint: str, params: dict[str, str]) -> int:
    parts = urlsplit(endpoint)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=10)
    try:
        body = urlencode(params)
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


async def test_a_malformed_id_fails_its_caller_and_not_its_neighbours(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(4)])
    vms["bad"] = "not-an-instance-id"
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    # EC2 (and fastec2) refuse the whole description (InvalidInstanceID.Malformed), moto takes
    # the id for an unknown one: either way no VM has it, so there is nothing to delete.
    assert set(outcomes.values()) == {None}
    assert proxy.count("requests:TerminateInstances") == 1
    assert all(gone(s) for s in states(boto_ec2, [vms[f"u{i}"] for i in range(4)]).values())


async def test_a_batch_refused_as_a_whole_is_tried_one_vm_at_a_time(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # EC2 refuses a whole TerminateInstances for one VM protected from termination: the others
    # must not fail for its sake.
    vms = launch(boto_ec2, [f"u{i}" for i in range(4)])
    proxy.fail_next("TerminateInstances", code="OperationNotPermitted", status=400, message="protected")
    connector = make_connector(proxy.endpoint)

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert all(gone(s) for s in states(boto_ec2, list(vms.values())).values())
    assert [len(named(q)) for q in proxy.queries("TerminateInstances")] == [4, 1, 1, 1, 1]


async def test_terminate_batch_size_one_deletes_one_vm_per_request(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, [f"u{i}" for i in range(5)])
    connector = make_connector(proxy.endpoint, parameters={"terminateBatchSize": "1"})

    outcomes = await destroy_all(connector, vms)

    assert set(outcomes.values()) == {None}
    assert connector.capabilities.destroy_batch == 1
    assert [len(named(q)) for q in proxy.queries("TerminateInstances")] == [1] * 5


async def test_a_cancelled_destroy_leaves_its_vm_and_its_batch_goes_on(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    vms = launch(boto_ec2, ["stay", "go"])
    connector = make_connector(proxy.endpoint)

    staying = asyncio.ensure_future(connector.destroy(vms["stay"], owner("stay")))
    going = asyncio.ensure_future(connector.destroy(vms["go"], owner("go")))
    await asyncio.sleep(0)
    staying.cancel()
    await going

    assert staying.cancelled()
    after = states(boto_ec2, list(vms.values()))
    assert after[vms["stay"]] == "running"
    assert gone(after[vms["go"]])


@pytest.mark.parametrize("value", ["0", "1001", "many"])
def test_terminate_batch_size_out_of_range_is_refused(make_connector: ConnectorFactory, value: str) -> None:
    with pytest.raises(InvalidRequest, match="terminateBatchSize"):
        make_connector("http://127.0.0.1:1/", parameters={"terminateBatchSize": value})


@pytest.mark.parametrize("action", ["terminate_instances", "describe_instances"])
def test_one_unknown_id_fails_the_whole_call_as_on_ec2(boto_ec2: Any, action: str) -> None:
    vms = launch(boto_ec2, ["a", "b"])

    with pytest.raises(ClientError) as refused:
        getattr(boto_ec2, action)(InstanceIds=[vms["a"], UNKNOWN, vms["b"]])

    assert refused.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    assert UNKNOWN in refused.value.response["Error"]["Message"]
    assert states(boto_ec2, list(vms.values())) == dict.fromkeys(vms.values(), "running")


def test_many_ids_are_terminated_and_described_in_one_call(boto_ec2: Any) -> None:
    vms = list(launch(boto_ec2, [f"u{i}" for i in range(12)]).values())

    answer = boto_ec2.terminate_instances(InstanceIds=vms)

    assert sorted(i["InstanceId"] for i in answer["TerminatingInstances"]) == sorted(vms)
    assert all(gone(s) for s in states(boto_ec2, vms).values())
    assert sorted(states(boto_ec2, vms)) == sorted(vms)
