"""Where a CloudCredential may make the operator connect, what it trusts there, and what of the
answer may come back in an error: the connector side of "every namespace is a stranger"."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError

from skyfleet.connectors import (
    ConnectorError,
    CredentialConfig,
    EndpointNotAllowed,
    EndpointPolicy,
    Permanent,
    TLSOptions,
)
from skyfleet.connectors.errors import MAX_MESSAGE
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.errors import map_generic
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY_SECRET
from tests.connector.loopback import Authority, LoopbackServer, make_authority

pytestmark = pytest.mark.connector

NOTHING = EndpointPolicy()
LOOPBACK = EndpointPolicy.parse(["127.0.0.1"])
ONCE = RetryPolicy(max_attempts=1)
METADATA_CANARY = "METADATA-CANARY-5a9d3"


def connector(
    url: str,
    policy: EndpointPolicy = NOTHING,
    provider: str = "ec2",
    parameters: dict[str, str] | None = None,
    tls: TLSOptions | None = None,
) -> LibcloudConnector:
    secret = CANARY_SECRET if provider == "ec2" else {"tenant_id": "t", "subscription_id": "s", "client_id": "c"}
    config = CredentialConfig(
        name="c",
        namespace="tenant",
        provider=provider,
        region="us-east-1",
        endpoint_url=url,
        parameters=parameters or {},
        secret={**secret, "client_secret": "x", "username": "u", "password": "p"},
        endpoint_policy=policy,
        tls=tls or TLSOptions(),
    )
    return LibcloudConnector(config, retry=ONCE)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "https://169.254.169.254/",
        "https://[fe80::1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://127.0.0.1:8443/",
        "https://[::1]/",
        "https://localhost/",
        "https://kubernetes.default.svc/",
        "https://api.default.svc.cluster.local:6443/",
        "https://metadata.google.internal/",
        "https://10.0.0.5/",
        "https://192.168.1.10:5000/v3",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "http://ec2.example.com/",  # plain http to a name nobody listed
    ],
)
def test_internal_destinations_and_plain_http_are_refused(url: str) -> None:
    with pytest.raises(EndpointNotAllowed) as refused:
        connector(url)
    assert "allow-list" in str(refused.value)


@pytest.mark.parametrize(
    ("provider", "parameters"),
    [
        ("azure_arm", {"resource_group": "rg", "login_endpoint": "https://169.254.169.254/metadata/identity/"}),
        ("openstack", {"compute_url": "https://nova.default.svc:8774/v2.1"}),
        ("openstack", {"compute_url": "http://nova.example.org:8774/v2.1"}),
    ],
)
def test_adapter_parameters_that_carry_urls_are_checked_like_the_endpoint(
    provider: str, parameters: dict[str, str]
) -> None:
    with pytest.raises(EndpointNotAllowed, match="parameter"):
        connector("https://cloud.example.org/", provider=provider, parameters=parameters)


@pytest.mark.parametrize(
    ("entries", "url"),
    [
        (["127.0.0.1"], "http://127.0.0.1:5000/"),
        (["10.0.0.0/8"], "https://10.20.30.40/"),
        (["*.lab.example.org"], "http://keystone.lab.example.org:5000/v3"),
        (["nova.default.svc"], "https://nova.default.svc/"),
        (["::1"], "http://[::1]:8080/"),
        ([], "https://ec2.eu-west-1.amazonaws.com/"),
        ([], "https://8.8.8.8/"),
    ],
)
def test_what_the_operator_lists_is_allowed(entries: list[str], url: str) -> None:
    connector(url, EndpointPolicy.parse(entries))


def test_allow_list_entries_are_parsed_or_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'not a host!'"):
        EndpointPolicy.parse(["not a host!"])
    with pytest.raises(ValueError, match="CIDR"):
        EndpointPolicy.parse(["10.0.0.0/33"])


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.0.0.1"])
async def test_a_name_that_resolves_to_loopback_is_refused_when_connecting(host: str) -> None:
    """Looks like a name, resolves (through the real resolver) to 127.0.0.1."""
    with LoopbackServer(mode="slow") as server:
        guarded = connector(f"https://{host}:{server.port}/")
        try:
            with pytest.raises(EndpointNotAllowed, match="loopback"):
                await guarded.verify()
        finally:
            await guarded.close()
        assert server.visits == []


async def test_redirects_are_not_followed_and_nothing_of_them_is_kept(caplog: pytest.LogCaptureFixture) -> None:
    with LoopbackServer(mode="redirect", canary=METADATA_CANARY) as server:
        guarded = connector(server.url, LOOPBACK)
        try:
            with pytest.raises(EndpointNotAllowed) as refused:
                await guarded.verify()
        finally:
            await guarded.close()

    assert refused.value.code == "Redirect"
    assert "302" in str(refused.value)
    # One request, and never the one the redirect pointed at.
    assert [v.path.split("&")[0] for v in server.visits] == ["/?Action=DescribeAvailabilityZones"]
    assert METADATA_CANARY not in repr(refused.value)
    assert METADATA_CANARY not in caplog.text


async def test_an_error_page_is_summarised_not_copied(caplog: pytest.LogCaptureFixture) -> None:
    with LoopbackServer(mode="error", canary=METADATA_CANARY) as server:
        guarded = connector(server.url, LOOPBACK)
        try:
            with pytest.raises(ConnectorError) as failed:
                await guarded.verify()
        finally:
            await guarded.close()

    assert "500" in str(failed.value)
    assert len(str(failed.value)) <= MAX_MESSAGE + 64
    assert METADATA_CANARY not in repr(failed.value)
    assert METADATA_CANARY not in caplog.text


def test_network_errors_never_carry_the_request_url() -> None:
    """What requests raises when RunInstances (user data in its query string) cannot connect."""
    url = "/?Action=RunInstances&ImageId=ami-1&UserData=IyEvYmluL3NoCmVjaG8gc2VjcmV0&ClientToken=u1"
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    reason.__cause__ = ConnectionRefusedError(111, "Connection refused")  # as urllib3 raises it
    raised = requests.exceptions.ConnectionError(MaxRetryError(None, url, reason))  # type: ignore[arg-type]
    assert "UserData" in str(raised)  # the trap

    mapped = map_generic(raised, "ec2")

    assert "UserData" not in str(mapped)
    assert "Action=" not in repr(mapped)
    assert "Connection refused" in str(mapped)


def test_every_message_is_bounded_and_cleaned_at_construction() -> None:
    error = Permanent("boom https://user:pw@cloud.example.org/path?UserData=abc " + "y" * 5000 + "\x1b[31m")

    assert len(error.message) <= MAX_MESSAGE
    assert "https://cloud.example.org" in error.message
    assert "UserData" not in error.message
    assert "pw@" not in error.message
    assert "\x1b" not in str(error)


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return make_authority(tmp_path, "skyfleet-test-ca")


@pytest.fixture
def tls_server(authority: Authority) -> Iterator[LoopbackServer]:
    with LoopbackServer(mode="slow", delay=0.0, tls=authority.server) as server:
        yield server


async def verify_with(url: str, tls: TLSOptions) -> None:
    guarded = connector(url, LOOPBACK, tls=tls)
    try:
        await guarded.verify()
    finally:
        await guarded.close()


async def test_the_credentials_ca_bundle_is_trusted(tls_server: LoopbackServer, authority: Authority) -> None:
    await verify_with(tls_server.url, TLSOptions(ca_bundle=authority.pem))

    assert [v.path.split("&")[0] for v in tls_server.visits] == ["/?Action=DescribeAvailabilityZones"]


async def test_a_private_ca_is_refused_without_its_bundle_and_with_another(
    tls_server: LoopbackServer, tmp_path: Path
) -> None:
    stranger = make_authority(tmp_path, "another-ca")
    for tls in (TLSOptions(), TLSOptions(ca_bundle=stranger.pem)):
        with pytest.raises(Permanent, match="not trusted") as refused:
            await verify_with(tls_server.url, tls)
        assert refused.value.code == "TLSVerificationFailed"
    assert tls_server.visits == []


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_insecure_skip_tls_verify_still_speaks_tls(tls_server: LoopbackServer) -> None:
    await verify_with(tls_server.url, TLSOptions(insecure_skip_verify=True))

    assert len(tls_server.visits) == 1


async def test_https_never_falls_back_to_http(caplog: pytest.LogCaptureFixture) -> None:
    with LoopbackServer(mode="slow") as plain:  # a plain-http server behind an https URL
        with pytest.raises(ConnectorError):
            await verify_with(plain.url.replace("http://", "https://"), TLSOptions())
        assert plain.visits == []  # not one request in clear text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
