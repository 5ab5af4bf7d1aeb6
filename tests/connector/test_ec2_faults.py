"""EC2 through the fault proxy: the cloud misbehaves the way real clouds do, and nothing breaks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from skyfleet.connectors import (
    CapacityUnavailable,
    CircuitOpen,
    ConnectorError,
    CreateRequest,
    InvalidCredentials,
    InvalidRequest,
    NodeState,
    NotFound,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    Transient,
)
from skyfleet.connectors.libcloud.resilience import CircuitBreaker, RetryPolicy
from skyfleet.testing.fastec2 import FastEC2
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import AMI, CLUSTER, ConnectorFactory, Emulator, instances_tagged, owner

pytestmark = pytest.mark.connector


def request(uid: str, **overrides: Any) -> CreateRequest:
    fields: dict[str, Any] = {
        "name": f"web-{uid}",
        "image_id": AMI,
        "size_id": "t3.micro",
        "user_data": "#!/bin/sh\ntrue\n",
        "owner": owner(uid),
    }
    return CreateRequest(**(fields | overrides))


async def test_lost_create_response_does_not_duplicate(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # The launch happens but its answer is lost, and the new VM is not yet visible to
    # DescribeInstances: only the ClientToken can prevent a second VM.
    proxy.faults.describe_lag = 30.0
    proxy.drop_next_response("RunInstances")
    connector = make_connector(proxy.endpoint)

    node = await connector.create(request("lost-1"))

    assert proxy.count("dropped") == 1
    assert proxy.count("launches") == 1
    assert proxy.count("dedup_hits") == 1
    proxy.faults.describe_lag = 0.0
    assert [i["InstanceId"] for i in instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "lost-1")] == [node.provider_id]


async def test_lost_create_response_is_adopted_by_tag_lookup_without_token_dedup(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # Providers without idempotency tokens rely on the owner-tag lookup before each retry.
    proxy.faults.dedup_client_token = False
    proxy.drop_next_response("RunInstances")
    connector = make_connector(proxy.endpoint)

    node = await connector.create(request("lost-2"))

    assert proxy.count("launches") == 1
    assert [i["InstanceId"] for i in instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "lost-2")] == [node.provider_id]


def without_token_dedup_and_lagging(proxy: FaultProxy, emulator: Emulator, *, lag: float) -> None:
    """A cloud that ignores ClientToken and whose listings show a new VM only ``lag`` s late."""
    proxy.faults.dedup_client_token = False
    if isinstance(emulator, FastEC2):
        emulator.configure(client_token_dedup=False)
    proxy.faults.describe_lag = lag


async def test_lost_create_answer_without_token_waits_out_the_listing_lag(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any, emulator: Emulator
) -> None:
    # A cloud without idempotency tokens whose listings lag launches by 2 s: the retry after a
    # lost answer must not launch again just because the lookup does not show the VM yet.
    without_token_dedup_and_lagging(proxy, emulator, lag=2.0)
    proxy.drop_next_response("RunInstances")
    connector = make_connector(proxy.endpoint, parameters={"clientToken": "false"})

    node = await connector.create(request("lost-lag", settle=6.0))

    assert proxy.count("dropped") == 1
    assert [i["InstanceId"] for i in instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "lost-lag")] == [
        node.provider_id
    ]


async def test_restart_while_creating_without_token_adopts_the_vm_the_listing_does_not_show_yet(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any, emulator: Emulator
) -> None:
    # An operator's create went out and it died before recording the VM; the next operator finds
    # the Instance in Creating (unknown_since) while the listing still hides the VM.
    without_token_dedup_and_lagging(proxy, emulator, lag=2.0)
    killed, restarted = (make_connector(proxy.endpoint, parameters={"clientToken": "false"}) for _ in range(2))
    launched = await killed.create(request("restart-1"))

    node = await restarted.create(request("restart-1", unknown_since=time.time(), settle=6.0))

    assert node.provider_id == launched.provider_id
    assert [i["InstanceId"] for i in instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "restart-1")] == [
        launched.provider_id
    ]


async def test_client_token_parameter_is_true_or_false(proxy: FaultProxy, make_connector: ConnectorFactory) -> None:
    assert make_connector(proxy.endpoint).capabilities.idempotency_token
    assert not make_connector(proxy.endpoint, parameters={"clientToken": "false"}).capabilities.idempotency_token
    with pytest.raises(InvalidRequest, match="client_token must be true or false"):
        make_connector(proxy.endpoint, parameters={"clientToken": "sometimes"})


async def test_release_whose_answer_is_lost_is_not_reported_as_a_mismatch(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # The tags are gone by the time the retry looks: that is this release having worked.
    connector = make_connector(proxy.endpoint)
    node = await connector.create(request("kept"))
    proxy.drop_next_response("DeleteTags")

    await connector.release(node.provider_id, owner("kept"))

    assert proxy.count("dropped") == 1
    assert proxy.count("requests:DeleteTags") == 1
    assert instances_tagged(boto_ec2, OwnerTags.INSTANCE_UID, "kept") == []
    assert [i["InstanceId"] for i in instances_tagged(boto_ec2, OwnerTags.INSTANCE, "kept")] == [node.provider_id]


async def test_reused_token_with_other_parameters_is_an_invalid_request(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    connector = make_connector(proxy.endpoint)
    await connector.create(request("tok-a", idempotency_token="shared-token"))

    with pytest.raises(InvalidRequest, match="IdempotentParameterMismatch") as caught:
        await connector.create(request("tok-b", idempotency_token="shared-token"))
    assert not caught.value.retryable
    assert proxy.count("launches") == 1


async def test_eventual_success_under_20_percent_5xx(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    proxy.faults.error_rate = 0.2
    proxy.faults.reset_rate = 0.05
    connector = make_connector(proxy.endpoint)

    nodes = await asyncio.gather(*(connector.create(request(f"flaky-{i}")) for i in range(20)))
    listed = await connector.list_cluster(CLUSTER)
    for node in nodes[:5]:
        await connector.destroy(node.provider_id, OwnerTags.from_tags(node.tags) or owner("x"))

    assert proxy.count("errors") + proxy.count("resets") >= 5
    assert len({n.provider_id for n in nodes}) == 20
    assert {n.provider_id for n in listed} == {n.provider_id for n in nodes}
    proxy.faults.error_rate = proxy.faults.reset_rate = 0.0
    assert len(instances_tagged(boto_ec2, OwnerTags.CLUSTER_ID, CLUSTER)) == 15


async def test_throttling_slows_down_instead_of_failing(
    proxy: FaultProxy, make_connector: ConnectorFactory, boto_ec2: Any
) -> None:
    # AWS's RunInstances request bucket; the connector's own budget is deliberately too generous.
    proxy.throttle("RunInstances", burst=5, rate=2.0)
    connector = make_connector(proxy.endpoint, max_concurrency=8)
    count = 13

    started = time.monotonic()
    nodes = await asyncio.gather(*(connector.create(request(f"burst-{i}")) for i in range(count)))
    elapsed = time.monotonic() - started

    assert len({n.provider_id for n in nodes}) == count
    assert proxy.count("throttled:RunInstances") > 0
    assert proxy.count("launches") == count
    assert elapsed >= (count - 5) / 2.0 * 0.9
    assert len(instances_tagged(boto_ec2, OwnerTags.CLUSTER_ID, CLUSTER)) == count


async def test_credential_budget_keeps_the_cloud_from_throttling(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    # With limits a little under the cloud's bucket, the connector waits on its side instead.
    proxy.throttle("*", burst=5, rate=10.0)
    connector = make_connector(proxy.endpoint, read_requests_per_second=8.0, read_burst=4, max_concurrency=4)

    started = time.monotonic()
    await asyncio.gather(*(connector.describe("i-0123456789abcdef0") for _ in range(20)))

    assert proxy.count("throttled") == 0
    assert proxy.count("requests") == 20
    assert time.monotonic() - started >= (20 - 4) / 8.0 * 0.9


async def test_create_budget_matches_the_runinstances_bucket_without_throttling(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    # Launches spend the mutation budget; the owner-tag lookups before them spend the read
    # budget, so lookups do not slow launches down.
    proxy.throttle("RunInstances", burst=5, rate=2.0)
    connector = make_connector(proxy.endpoint, requests_per_second=1.8, burst=4, max_concurrency=8)

    started = time.monotonic()
    nodes = await asyncio.gather(*(connector.create(request(f"paced-{i}")) for i in range(9)))

    assert len({n.provider_id for n in nodes}) == 9
    assert proxy.count("throttled") == 0
    assert proxy.count("requests:DescribeInstances") >= 9
    assert time.monotonic() - started >= (9 - 4) / 1.8 * 0.9


async def test_launches_queued_on_their_budget_do_not_hold_up_listings(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    # A fleet being created queues many launches on a slow mutation budget; observing the VMs
    # already launched must not wait behind them, or status freezes until the queue drains.
    connector = make_connector(proxy.endpoint, requests_per_second=1.0, burst=1, max_concurrency=2)
    finished: list[str] = []
    first_done = asyncio.Event()

    async def launch(i: int) -> None:
        await connector.create(request(f"queued-{i}"))
        finished.append(f"launch-{i}")
        first_done.set()

    launches = [asyncio.create_task(launch(i)) for i in range(5)]
    await first_done.wait()  # the first launch spent the only token; the rest wait for theirs
    await connector.list_cluster(CLUSTER)
    finished.append("listing")
    await asyncio.gather(*launches)

    # The listing went through while four launches still waited for tokens (one per second).
    assert finished.index("listing") <= 2, finished


async def test_throttling_that_never_ends_surfaces_as_throttled(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    proxy.faults.throttle_rate = 1.0
    connector = make_connector(proxy.endpoint, retry=RetryPolicy(max_attempts=3, base_delay=0.01))

    with pytest.raises(Throttled, match="RequestLimitExceeded") as caught:
        await connector.list_cluster(CLUSTER)
    assert caught.value.retryable
    assert proxy.count("throttled") == 3


async def test_circuit_breaker_stops_hammering_a_dead_cloud_and_recovers(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    proxy.faults.error_rate = 1.0
    breaker = CircuitBreaker(threshold=4, cooldown=0.5)
    connector = make_connector(
        proxy.endpoint, breaker=breaker, retry=RetryPolicy(max_attempts=10, base_delay=0.01, max_delay=0.02)
    )

    with pytest.raises(CircuitOpen) as caught:
        await connector.list_cluster(CLUSTER)
    assert proxy.count("requests") == 4
    with pytest.raises(CircuitOpen):
        await connector.list_cluster(CLUSTER)
    assert proxy.count("requests") == 4
    assert caught.value.retry_after is not None

    proxy.faults.error_rate = 0.0
    await asyncio.sleep(0.6)
    assert await connector.list_cluster(CLUSTER) == []
    assert not breaker.is_open


async def test_pending_then_running(proxy: FaultProxy, make_connector: ConnectorFactory) -> None:
    proxy.faults.pending_delay = 1.0
    connector = make_connector(proxy.endpoint)

    node = await connector.create(request("slow-boot"))
    early = await connector.describe(node.provider_id)
    await asyncio.sleep(1.1)
    late = await connector.describe(node.provider_id)

    assert early is not None
    assert early.state is NodeState.PENDING
    assert late is not None
    assert late.state is NodeState.RUNNING


async def test_a_vm_running_the_recipe_is_pending_for_the_recipe_cost_too(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    proxy.faults.pending_delay = 0.5
    proxy.faults.recipe_marker, proxy.faults.recipe_delay = "install-nginx", 1.5
    connector = make_connector(proxy.endpoint)

    with_recipe = await connector.create(request("recipe", user_data="#!/bin/sh\ninstall-nginx\n"))
    baked = await connector.create(request("baked"))
    await asyncio.sleep(1.0)
    mid_recipe = await connector.describe(with_recipe.provider_id)
    mid_baked = await connector.describe(baked.provider_id)
    await asyncio.sleep(1.2)
    late = await connector.describe(with_recipe.provider_id)

    assert mid_recipe is not None
    assert mid_recipe.state is NodeState.PENDING  # boot delay + recipe cost
    assert mid_baked is not None
    assert mid_baked.state is NodeState.RUNNING  # boot delay only
    assert late is not None
    assert late.state is NodeState.RUNNING


@pytest.mark.parametrize(
    ("code", "status", "expected", "retryable", "attempts"),
    [
        ("RequestLimitExceeded", 503, Throttled, True, 2),
        ("InternalError", 500, Transient, True, 2),
        # Capacity is worth retrying later, but first the caller should try another placement.
        ("InsufficientInstanceCapacity", 500, CapacityUnavailable, True, 1),
        ("InstanceLimitExceeded", 400, QuotaExceeded, False, 1),
        ("VcpuLimitExceeded", 400, QuotaExceeded, False, 1),
        ("AuthFailure", 401, InvalidCredentials, False, 1),
        ("UnauthorizedOperation", 403, InvalidCredentials, False, 1),
        ("InvalidAMIID.NotFound", 400, InvalidRequest, False, 1),
        ("InvalidParameterValue", 400, InvalidRequest, False, 1),
        ("InvalidInstanceID.NotFound", 400, NotFound, False, 1),
    ],
)
async def test_ec2_error_codes_map_to_the_taxonomy(
    proxy: FaultProxy,
    make_connector: ConnectorFactory,
    code: str,
    status: int,
    expected: type[ConnectorError],
    retryable: bool,
    attempts: int,
) -> None:
    proxy.fail_next("RunInstances", count=2, code=code, status=status)
    connector = make_connector(proxy.endpoint, retry=RetryPolicy(max_attempts=2, base_delay=0.01))

    with pytest.raises(expected) as caught:
        await connector.create(request(f"err-{code}"))

    assert caught.value.code == code
    assert caught.value.retryable is retryable
    assert proxy.count("requests:RunInstances") == attempts


async def test_every_request_is_reported_with_its_outcome_for_metrics(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    proxy.throttle("RunInstances", burst=2, rate=2.0)
    connector = make_connector(proxy.endpoint, max_concurrency=4)
    calls: list[tuple[str, str, str, float]] = []
    connector.observer = lambda provider, op, outcome, seconds: calls.append((provider, op, outcome, seconds))

    await asyncio.gather(*(connector.create(request(f"observed-{i}")) for i in range(5)))

    assert {provider for provider, *_ in calls} == {"ec2"}
    assert all(seconds >= 0 for *_, seconds in calls)
    throttled = [c for c in calls if c[2] == "throttled"]
    assert len(throttled) == proxy.count("throttled:RunInstances") > 0
    assert len([c for c in calls if c[1] == "create" and c[2] == "success"]) == 5
    assert len([c for c in calls if c[1] == "lookup"]) >= 5  # the owner-tag lookup before each launch
