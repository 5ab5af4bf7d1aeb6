"""The canary secret never reaches a repr, an exception or a log line (logs: see conftest)."""

from __future__ import annotations

import pickle
import socket
import traceback

import pytest

from skyfleet.connectors import ConnectorError, InvalidCredentials, SecretData, Transient
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from skyfleet.testing.faultproxy import FaultProxy
from tests.connector.conftest import CANARY, CANARY_SECRET, CLUSTER, ConnectorFactory, ec2_config

pytestmark = pytest.mark.connector


def rendered(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + str(exc) + repr(exc) + str(exc.args)


def test_config_and_secret_reprs_are_masked() -> None:
    config = ec2_config("http://127.0.0.1:1/")

    for text in (repr(config), str(config), repr(config.secret), str(config.secret), f"{config.secret}"):
        assert CANARY not in text
    assert "aws_secret_access_key" in repr(config.secret)
    assert config.secret["aws_secret_access_key"] == CANARY_SECRET["aws_secret_access_key"]


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError):
        pickle.dumps(SecretData(CANARY_SECRET))


async def test_connector_repr_hides_secret(make_connector: ConnectorFactory) -> None:
    connector = make_connector("http://127.0.0.1:1/")

    assert CANARY not in repr(connector)
    assert CANARY not in repr(connector.adapter.__dict__)


async def test_provider_error_echoing_the_secret_is_scrubbed(
    proxy: FaultProxy, make_connector: ConnectorFactory
) -> None:
    secret = CANARY_SECRET["aws_secret_access_key"]
    proxy.fail_next("DescribeInstances", code="AuthFailure", status=401, message=f"bad key {secret}")
    connector = make_connector(proxy.endpoint)

    with pytest.raises(InvalidCredentials) as caught:
        await connector.list_cluster(CLUSTER)

    assert CANARY not in rendered(caught.value)
    assert "bad key ***" in str(caught.value)


async def test_unreachable_cloud_error_is_secret_free(make_connector: ConnectorFactory) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = make_connector(f"http://127.0.0.1:{port}/", retry=RetryPolicy(max_attempts=2, base_delay=0.01))

    with pytest.raises(Transient) as caught:
        await connector.verify()

    assert f"127.0.0.1:{port}" in str(caught.value) or "Connection" in str(caught.value)
    assert CANARY not in rendered(caught.value)
    assert isinstance(caught.value, ConnectorError)
