"""Fixtures for the connector tier: a live EC2 emulator, a fault proxy, and canary credentials."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from skyfleet.connectors import CredentialConfig, EndpointPolicy, Limits, OwnerTags
from skyfleet.connectors.libcloud import LibcloudConnector, transport
from skyfleet.connectors.libcloud.resilience import CircuitBreaker, RetryPolicy
from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.fastec2 import FastEC2
from skyfleet.testing.faultproxy import FaultProxy

# Every test credential carries this value; it must never surface anywhere a human could read.
CANARY = "CANARY-s3cr3t-9f41d7"
CANARY_SECRET = {"aws_access_key_id": f"AKID{CANARY}", "aws_secret_access_key": f"{CANARY}-key"}
CLUSTER = "cluster-test"
AMI = "ami-03cf127a"  # shipped in moto's default AMI catalogue
# The emulator and the fault proxy listen on loopback, which an operator must allow-list.
LOOPBACK = EndpointPolicy.parse(["127.0.0.1"])


@pytest.fixture(autouse=True)
def _canary_never_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every connector test doubles as a secret-leak test: all logs at DEBUG, canary absent."""
    caplog.set_level(logging.DEBUG)
    # The test's own boto3 client (ground truth, not the code under test) is very chatty.
    for noisy in ("botocore", "boto3", "urllib3.connectionpool"):
        caplog.set_level(logging.INFO, logger=noisy)
    yield
    leaked = [r.getMessage() for r in caplog.records if CANARY in r.getMessage()]
    assert not leaked, f"secret canary logged: {leaked[:1]}"


Emulator = EC2Emulator | FastEC2
EMULATORS: dict[str, Callable[[], Emulator]] = {"moto": EC2Emulator, "fastec2": FastEC2}


@pytest.fixture(scope="session", params=sorted(EMULATORS))
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """Every EC2 test runs against both emulators: moto (the fidelity reference) and fastec2 (the
    indexed one scale runs use), so the two are held to one contract and cannot drift apart."""
    with EMULATORS[request.param]() as emu:
        yield emu


@pytest.fixture
def ec2_endpoint(emulator: Emulator) -> str:
    emulator.reset()
    LibcloudConnector.catalogue_cache.clear()
    return emulator.endpoint


@pytest.fixture
def proxy(ec2_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(ec2_endpoint, seed=1234) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def boto_ec2(ec2_endpoint: str) -> Any:
    """Direct access to the emulated account, bypassing the connector: the test's ground truth."""
    return boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=ec2_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def ec2_config(endpoint: str, parameters: dict[str, str] | None = None, **limits: Any) -> CredentialConfig:
    return CredentialConfig(
        name="aws-test",
        namespace="team-a",
        provider="ec2",
        region="us-east-1",
        endpoint_url=endpoint,
        parameters=parameters or {},
        secret=CANARY_SECRET,
        limits=Limits(**({"requests_per_second": 200.0, "burst": 200, "max_concurrency": 8} | limits)),
        endpoint_policy=LOOPBACK,
    )


ConnectorFactory = Callable[..., LibcloudConnector]


@pytest.fixture
async def make_connector() -> AsyncIterator[ConnectorFactory]:
    made: list[LibcloudConnector] = []

    def make(
        endpoint: str,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        parameters: dict[str, str] | None = None,
        **limits: Any,
    ) -> LibcloudConnector:
        connector = LibcloudConnector(
            ec2_config(endpoint, parameters, **limits),
            retry=retry or RetryPolicy(base_delay=0.05, max_delay=2.0, max_attempts=30, max_elapsed=120),
            breaker=breaker,
        )
        made.append(connector)
        return connector

    yield make
    for connector in made:
        await connector.close()


def owner(uid: str, cluster: str = CLUSTER) -> OwnerTags:
    return OwnerTags(cluster_id=cluster, instance_uid=uid, namespace="team-a", deployment="shop", instance=uid)


def provenance(uid: str) -> dict[str, str]:
    """The owner tags a release leaves on the VM of Instance ``uid``: all but the identity."""
    tags = owner(uid)
    return {k: v for k, v in tags.to_tags().items() if k not in tags.identity()}


def instances_tagged(boto_ec2: Any, key: str, value: str) -> list[dict[str, Any]]:
    """Live instances carrying a tag, straight from the emulator (all pages)."""
    found: list[dict[str, Any]] = []
    paginator = boto_ec2.get_paginator("describe_instances")
    filters = [
        {"Name": f"tag:{key}", "Values": [value]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ]
    for page in paginator.paginate(Filters=filters):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


@pytest.fixture(scope="session", autouse=True)
def raw_drivers_reach_loopback() -> Iterator[None]:
    """Tests also drive libcloud directly (to seed an emulator, or to look behind the connector's
    back); every libcloud connection goes through Skyfleet's guarded transport, which refuses
    loopback unless allowed. Allow it for the whole run, as an operator with
    ``--allow-endpoint 127.0.0.1`` would: the connector's own calls set their scope per call."""
    with transport.call_scope(transport.CallScope(policy=LOOPBACK, track=False)):
        yield
