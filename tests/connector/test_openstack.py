"""OpenStack adapter against recorded Nova responses (pre-issued token, compute URL forced)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator

import pytest
from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    InvalidRequest,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    UnknownParameter,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner, provenance
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector


class NovaMockHttp(RecordedHttp):
    provider = "openstack"

    def _v2_1_p_123_flavors(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return 200, '{"flavors": []}', {"content-type": "application/json"}, "OK"

    def _v2_1_p_123_flavors_7(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, "openstack_v1_1/_flavors_7.json")  # a 620 GiB root disk

    def _v2_1_p_123_servers_detail(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        page = 2 if self.sent[-1].query.get("marker") == "srv-x" else 1
        return self.reply(200, f"servers_detail_page_{page}.json")

    def _v2_1_p_123_servers(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "QUOTA":
            return self.reply(403, "error_quota.json")
        if self.type == "OVER_LIMIT":
            return self.reply(413, "error_over_limit.json", {"retry-after": "0"})
        if self.type == "BAD_FLAVOR":
            return self.reply(400, "error_bad_flavor.json")
        return self.reply(202, "servers_create.json")

    def _v2_1_p_123_servers_srv_new(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "server_new.json")

    def _v2_1_p_123_servers_srv_1(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            return self.reply(204)
        return self.reply(200, "server_1.json")

    def _v2_1_p_123_servers_srv_1_metadata(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return 200, body, {"content-type": "application/json"}, "OK"  # Nova answers the metadata it now has

    def _v2_1_p_123_servers_srv_x(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "server_x.json")

    def _v2_1_p_123_servers_srv_gone(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(404, "error_not_found.json")


@pytest.fixture
async def connector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(OpenStack_2_NodeDriver.connectionCls, "conn_class", NovaMockHttp)
    NovaMockHttp.reset()
    config = CredentialConfig(
        name="os",
        namespace="team-a",
        provider="openstack",
        region="RegionOne",
        endpoint_url="https://keystone.test:5000",
        parameters={"project": "shop", "compute_url": "https://nova.test:8774/v2.1/p-123", "page_size": "2"},
        secret={"token": CANARY},
    )
    connector = LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    yield connector
    await connector.close()


def request(uid: str, size_id: str = "m1.small", disk_gib: int | None = None) -> CreateRequest:
    return CreateRequest(
        name=f"shop-web-{uid}",
        image_id="img-ubuntu-2404",
        size_id=size_id,
        zone="nova",
        user_data="#cloud-config\nruncmd: [true]\n",
        tags=owner(uid).to_tags(),
        disk_gib=disk_gib,
    )


async def test_create_sends_metadata_and_userdata(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-new"))

    posts = [s for s in NovaMockHttp.sent if s.method == "POST"]
    assert len(posts) == 1
    server = posts[0].json()["server"]
    assert server["metadata"] == owner("uid-new").to_tags()
    assert base64.b64decode(server["user_data"]).decode() == "#cloud-config\nruncmd: [true]\n"
    assert server["flavorRef"] == "m1.small"
    assert server["availability_zone"] == "nova"
    assert posts[0].headers["X-Auth-Token"] == CANARY
    assert node.provider_id == "srv-new"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-new"


async def test_a_disk_larger_than_the_flavors_boots_from_a_volume_of_that_size(connector: LibcloudConnector) -> None:
    await connector.create(request("uid-new", size_id="7", disk_gib=1000))

    (post,) = [s for s in NovaMockHttp.sent if s.method == "POST"]
    assert post.path == "/v2.1/p-123/servers"
    server = post.json()["server"]
    assert server["block_device_mapping_v2"] == [
        {
            "boot_index": 0,
            "uuid": "img-ubuntu-2404",
            "source_type": "image",
            "destination_type": "volume",
            "volume_size": 1000,
            "delete_on_termination": True,
        }
    ]
    assert not server.get("imageRef")  # Nova boots from the volume, made from the image


async def test_a_disk_the_flavor_already_gives_boots_from_the_image(connector: LibcloudConnector) -> None:
    await connector.create(request("uid-new", size_id="7", disk_gib=100))

    (post,) = [s for s in NovaMockHttp.sent if s.method == "POST"]
    server = post.json()["server"]
    assert "block_device_mapping_v2" not in server
    assert server["imageRef"] == "img-ubuntu-2404"


async def test_lookup_pages_and_filters_client_side(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["srv-1", "srv-2"]
    listings = [s for s in NovaMockHttp.sent if s.path.endswith("/servers/detail")]
    assert [s.query.get("marker") for s in listings] == [None, "srv-x"]


async def test_create_adopts_what_a_lost_response_left_behind(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-2"))

    assert node.provider_id == "srv-2"
    assert not [s for s in NovaMockHttp.sent if s.method == "POST"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("srv-x", owner("uid-1"))
    await connector.destroy("srv-gone", owner("uid-1"))
    await connector.destroy("srv-1", owner("uid-1"))

    deletes = [s.path for s in NovaMockHttp.sent if s.method == "DELETE"]
    assert deletes == ["/v2.1/p-123/servers/srv-1"]


async def test_release_writes_back_all_metadata_but_the_identity(connector: LibcloudConnector) -> None:
    await release_refusals(connector, NovaMockHttp, ours="srv-1", foreign="srv-x", missing="srv-gone", uid="uid-1")

    await connector.release("srv-1", owner("uid-1"))

    (put,) = changes(NovaMockHttp)
    assert (put.method, put.path) == ("PUT", "/v2.1/p-123/servers/srv-1/metadata")
    assert put.json() == {"metadata": {**provenance("uid-1"), "backup": "daily"}}


@pytest.mark.parametrize(
    ("scenario", "expected", "attempts"),
    [("QUOTA", QuotaExceeded, 1), ("OVER_LIMIT", Throttled, 2), ("BAD_FLAVOR", InvalidRequest, 1)],
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], attempts: int
) -> None:
    NovaMockHttp.reset(scenario)

    with pytest.raises(expected) as caught:
        await connector.create(request("uid-new"))

    assert len([s for s in NovaMockHttp.sent if s.method == "POST"]) == attempts
    assert CANARY not in repr(caught.value)


async def test_resize_is_reported_unsupported(connector: LibcloudConnector) -> None:
    from skyfleet.connectors import Unsupported

    assert not connector.capabilities.resize
    with pytest.raises(Unsupported, match="openstack"):
        await connector.resize("srv-1", "m1.large")


def os_config(parameters: dict[str, str]) -> CredentialConfig:
    return CredentialConfig(
        name="os",
        namespace="team-a",
        provider="openstack",
        region="RegionOne",
        endpoint_url="https://keystone.test:5000",
        parameters=parameters,
        secret={"username": "u", "password": CANARY},
    )


@pytest.mark.parametrize("key", ["authVersion", "auth_version"])
async def test_the_documented_auth_version_reaches_keystone(key: str) -> None:
    connector = LibcloudConnector(os_config({"project": "shop", key: "2.0_password"}))
    try:
        driver = connector.adapter.make_driver()
        assert driver.connection._auth_version == "2.0_password"
        assert driver.connection._ex_tenant_name == "shop"
    finally:
        await connector.close()


@pytest.mark.parametrize("key", ["authVersoin", "tenant", "Project "])
def test_an_unknown_or_misspelt_parameter_is_refused_by_name(key: str) -> None:
    with pytest.raises(UnknownParameter, match=repr(key)) as refused:
        LibcloudConnector(os_config({"project": "shop", key: "x"}))
    assert "authVersion" in refused.value.message  # the spellings it does read
    assert refused.value.code == "UnknownParameter"


async def test_create_boots_into_the_requested_network(connector: LibcloudConnector) -> None:
    await connector.create(dataclasses.replace(request("uid-net"), subnet="net-builders"))

    (post,) = [s for s in NovaMockHttp.sent if s.method == "POST"]
    assert post.json()["server"]["networks"] == [{"uuid": "net-builders"}]
    assert connector.capabilities.subnet
