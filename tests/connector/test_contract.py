"""The provider-neutral parts of the contract: sizing, image choice, owner tags, error flags."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from skyfleet.connectors import (
    CapacityUnavailable,
    CircuitOpen,
    CloudImage,
    CloudSize,
    CredentialConfig,
    InvalidRequest,
    Limits,
    NotFound,
    OwnerTags,
    Permanent,
    QuotaExceeded,
    Throttled,
    Transient,
    UnknownParameter,
    Unsupported,
)
from skyfleet.connectors.base import parameter_spelling, pick_image, pick_size, read_parameters
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.adapters import ADAPTERS, ProviderAdapter
from skyfleet.connectors.libcloud.adapters.base import parse_endpoint
from skyfleet.connectors.libcloud.adapters.ec2 import EC2Adapter, client_token
from skyfleet.connectors.libcloud.resilience import CircuitBreaker
from tests.connector.conftest import CANARY_SECRET, LOOPBACK

pytestmark = pytest.mark.connector

SIZES = [
    CloudSize("m.large", "m.large", 2, 8192, None, 0.10),
    CloudSize("c.large", "c.large", 2, 4096, None, 0.09),
    CloudSize("c.large-cheap", "c.large-cheap", 2, 4096, None, 0.08),
    CloudSize("t.micro", "t.micro", 2, 1024, None, 0.01),
    CloudSize("x.huge", "x.huge", 64, 262144, 1000, 5.0),
    CloudSize("gpu.odd", "gpu.odd", None, 65536, None, None),
]


@pytest.mark.parametrize(
    ("cpu", "memory", "disk", "explicit", "expected"),
    [
        (2, 2048, None, None, "c.large-cheap"),
        (2, 4096, None, None, "c.large-cheap"),
        (2, 5000, None, None, "m.large"),
        (1, None, None, None, "t.micro"),
        (4, None, 500, None, "x.huge"),
        (64, None, None, "t.micro", "t.micro"),
    ],
)
def test_smallest_size_that_fits_with_deterministic_ties(
    cpu: float, memory: int | None, disk: int | None, explicit: str | None, expected: str
) -> None:
    chosen = pick_size(SIZES, cpu=cpu, memory_mib=memory, disk_gib=disk, instance_type=explicit)
    assert chosen.id == expected
    assert pick_size(list(reversed(SIZES)), cpu=cpu, memory_mib=memory, disk_gib=disk, instance_type=explicit) == chosen


def test_unknown_explicit_type_and_impossible_request_are_invalid() -> None:
    with pytest.raises(InvalidRequest, match=r"z\.none"):
        pick_size(SIZES, instance_type="z.none")
    with pytest.raises(InvalidRequest, match="no size"):
        pick_size(SIZES, cpu=128)


def test_disk_filters_sizes_only_where_the_plan_fixes_the_disk() -> None:
    sizes = [CloudSize("s.small", "s.small", 2, 4096, 20, 0.01), CloudSize("s.big", "s.big", 2, 4096, 80, 0.02)]
    # DigitalOcean, Linode: the plan's disk is the root disk.
    assert pick_size(sizes, cpu=2, memory_mib=4096, disk_gib=50).id == "s.big"
    with pytest.raises(InvalidRequest, match="20 GiB disk, smaller than diskGiB 50"):
        pick_size(sizes, instance_type="s.small", disk_gib=50)
    # EC2, GCE, Azure, OpenStack: the root disk is sized at create, a size's own disk is no constraint.
    assert pick_size(sizes, cpu=2, memory_mib=4096, disk_gib=500, disk_fixed=False).id == "s.small"
    assert pick_size(sizes, instance_type="s.small", disk_gib=500, disk_fixed=False).id == "s.small"


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_every_provider_reads_its_documented_parameters_in_either_spelling(provider: str) -> None:
    adapter_cls = ADAPTERS[provider]
    for name in adapter_cls.parameters:
        camel = parameter_spelling(name)
        assert read_parameters({camel: "v"}, adapter_cls.parameters, provider) == {name: "v"}
        assert read_parameters({name: "v"}, adapter_cls.parameters, provider) == {name: "v"}
    with pytest.raises(UnknownParameter, match="'tenant'"):
        read_parameters({"tenant": "x"}, adapter_cls.parameters, provider)


def test_the_readme_lists_exactly_the_parameters_each_provider_reads() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    documented = {}
    for provider, cell in re.findall(r"^  \| `(\w+)` \| (.*) \|$", readme, flags=re.MULTILINE):
        # Names are the backticked words outside parentheses (those hold defaults and values).
        documented[provider] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cell)))
    assert documented == {p: {parameter_spelling(n) for n in a.parameters} for p, a in ADAPTERS.items()}


def test_one_parameter_in_two_spellings_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="'authVersion' is given twice"):
        read_parameters({"authVersion": "3", "auth_version": "2"}, ("auth_version",), "openstack")


def test_newest_matching_image_wins() -> None:
    images = [
        CloudImage("ami-1", "ubuntu-24.04-20260101", datetime(2026, 1, 1, tzinfo=UTC)),
        CloudImage("ami-3", "ubuntu-24.04-20260301", datetime(2026, 3, 1, tzinfo=UTC)),
        CloudImage("ami-2", "ubuntu-24.04-20260201", datetime(2026, 2, 1, tzinfo=UTC)),
        CloudImage("ami-9", "debian-12-20261101", datetime(2026, 11, 1, tzinfo=UTC)),
        CloudImage("ami-0", "ubuntu-24.04-undated", None),
    ]
    assert pick_image(images, name_pattern="ubuntu-24.04-*").id == "ami-3"
    assert pick_image(images, image_id="ami-1").id == "ami-1"
    with pytest.raises(NotFound):
        pick_image(images, name_pattern="centos-*")
    with pytest.raises(NotFound):
        pick_image(images, image_id="ami-404")


def test_an_owner_narrows_a_name_lookup() -> None:
    images = [
        CloudImage("ami-1", "ubuntu-24.04-20260101", datetime(2026, 1, 1, tzinfo=UTC), owner="099720109477"),
        CloudImage("ami-2", "ubuntu-24.04-20261101", datetime(2026, 11, 1, tzinfo=UTC), owner="666666666666"),
    ]
    assert pick_image(images, name_pattern="ubuntu-24.04-*").id == "ami-2"
    assert pick_image(images, name_pattern="ubuntu-24.04-*", owner="099720109477").id == "ami-1"
    with pytest.raises(NotFound, match="owned by 123"):
        pick_image(images, name_pattern="ubuntu-24.04-*", owner="123")
    # A cloud that does not say who owns an image cannot honour an owner: an error, not a guess.
    anonymous = [CloudImage("img-1", "ubuntu-24.04-20260101")]
    with pytest.raises(InvalidRequest, match="cannot be checked"):
        pick_image(anonymous, name_pattern="ubuntu-*", owner="099720109477")


def test_owner_tags_round_trip_and_ownership() -> None:
    tags = OwnerTags(cluster_id="c1", instance_uid="u1", namespace="ns", deployment="d", instance="i").to_tags()

    assert OwnerTags.from_tags(tags) == OwnerTags("c1", "u1", "ns", "d", "i")
    assert OwnerTags("c1", "u1").owns(tags)
    assert not OwnerTags("c1", "u2").owns(tags)
    assert not OwnerTags("c2", "u1").owns(tags)
    assert OwnerTags.from_tags({"skyfleet.io/cluster-id": "c1"}) is None


@pytest.mark.parametrize(
    ("error", "retryable", "fallback"),
    [
        (Throttled("x", retry_after=2.0), True, False),
        (Transient("x"), True, False),
        (CircuitOpen("x", retry_after=1.0), True, False),
        (QuotaExceeded("x"), False, True),
        (CapacityUnavailable("x"), True, True),
        (InvalidRequest("x"), False, False),
        (Permanent("x"), False, False),
    ],
)
def test_error_flags(error: Exception, retryable: bool, fallback: bool) -> None:
    assert getattr(error, "retryable") is retryable  # noqa: B009 - read like a table
    assert getattr(error, "fallback") is fallback  # noqa: B009


@pytest.mark.parametrize(
    ("url", "secure", "host", "port", "path"),
    [
        ("https://ec2.eu-west-1.amazonaws.com", True, "ec2.eu-west-1.amazonaws.com", 443, "/"),
        ("http://127.0.0.1:5000/", False, "127.0.0.1", 5000, "/"),
        ("https://cloud.example.org:8443/api/ec2/", True, "cloud.example.org", 8443, "/api/ec2/"),
        ("cloud.example.org", True, "cloud.example.org", 443, "/"),
    ],
)
def test_endpoint_override_parsing(url: str, secure: bool, host: str, port: int, path: str) -> None:
    endpoint = parse_endpoint(url)
    assert endpoint is not None
    assert (endpoint.secure, endpoint.host, endpoint.port, endpoint.path) == (secure, host, port, path)


def test_client_token_fits_ec2_rules() -> None:
    uid = "0c6f2b0e-4a7e-4f1e-9c1a-1f2d3e4c5b6a"
    assert client_token(uid) == uid
    long = client_token("x" * 100)
    assert len(long) == 64
    assert long == client_token("x" * 100)
    assert client_token("ünïcode").isascii()


def test_limits_reject_nonsense_and_default_reads_to_ten_times_writes() -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        Limits(requests_per_second=0)
    limits = Limits(requests_per_second=2, burst=5)
    assert (limits.read_rate, limits.read_capacity) == (20, 50)


def test_credential_key_identifies_credential_and_region() -> None:
    config = CredentialConfig(name="aws", namespace="team-a", provider="ec2", region="eu-west-1")
    assert config.key == "team-a/aws@eu-west-1"


def test_breaker_ignores_throttling_and_half_opens_once() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown=0.0)
    for _ in range(5):
        breaker.record(Throttled("slow down"))
    assert not breaker.is_open
    breaker.record(Transient("boom"))
    breaker.record(Transient("boom"))
    assert breaker.is_open
    breaker.before_call()  # cooldown over: this call probes
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # a second caller waits for the probe's verdict
    breaker.record(None)
    assert not breaker.is_open


@pytest.mark.parametrize("adapter", [ADAPTERS[name] for name in sorted(ADAPTERS)], ids=sorted(ADAPTERS))
def test_release_is_claimed_exactly_where_the_adapter_can_untag(adapter: type[ProviderAdapter]) -> None:
    assert adapter.capabilities.release is (adapter.untag is not ProviderAdapter.untag)


@pytest.mark.parametrize("adapter", [ADAPTERS[name] for name in sorted(ADAPTERS)], ids=sorted(ADAPTERS))
def test_destroys_are_batched_exactly_where_the_adapter_deletes_many_per_request(
    adapter: type[ProviderAdapter],
) -> None:
    batches = adapter.destroy_many is not ProviderAdapter.destroy_many
    assert (adapter.capabilities.destroy_batch > 1) is batches
    assert batches is (adapter.provider == "ec2")


def test_limits_give_destroys_ec2s_terminate_buckets_and_refuse_nonsense() -> None:
    limits = Limits()
    assert (limits.destroy_requests_per_second, limits.destroy_burst) == (5, 100)
    assert (limits.destroy_instances_per_second, limits.destroy_instance_burst) == (20, 1000)
    with pytest.raises(ValueError, match="destroy_burst"):
        Limits(destroy_burst=0)


async def test_release_without_the_capability_is_unsupported_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(EC2Adapter, "capabilities", dataclasses.replace(EC2Adapter.capabilities, release=False))
    config = CredentialConfig(
        name="aws",
        namespace="team-a",
        provider="ec2",
        endpoint_url="http://127.0.0.1:1/",
        secret=CANARY_SECRET,
        endpoint_policy=LOOPBACK,
    )
    connector = LibcloudConnector(config)
    requests: list[str] = []
    connector.observer = lambda provider, op, outcome, seconds: requests.append(op)
    try:
        with pytest.raises(Unsupported, match="ec2"):
            await connector.release("i-0123456789abcdef0", OwnerTags("c1", "u1"))
    finally:
        await connector.close()
    assert requests == []
