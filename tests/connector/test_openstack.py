"""OpenStack adapter against recorded Nova responses (pre-issued token, compute URL forced)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    InvalidCredentials,
    InvalidRequest,
    NodeState,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    UnknownParameter,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner, provenance
from tests.connector.recorded import RecordedHttp, Reply, changes, create_fails_as, destroyed, release_refusals

pytestmark = pytest.mark.connector


# libcloud's recordings of Nova (openstack_v1_1/): a server list, a create answer, and the
# server that create made. Where we need our owner metadata on a recorded server, it is written
# into the recording's own ``metadata`` object, where Nova returns it.
OS = "openstack_v1_1/"
CREATED = "26f7fbee-8ce1-4c28-887a-bfe8e4bb10fe"  # the id in libcloud's recorded create answer


class NovaMockHttp(RecordedHttp):
    provider = "openstack"
    # Metadata written into the recorded servers, by server id (the ``RECORDED`` listing).
    metadata: ClassVar[dict[str, dict[str, str]]] = {}

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.metadata = {}

    def _v2_1_p_123_flavors(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # Hand-written: libcloud ships no recorded /flavors (only /flavors/detail); verify reads none of it.
        return 200, '{"flavors": []}', {"content-type": "application/json"}, "OK"

    def _v2_1_p_123_flavors_7(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, OS + "_flavors_7.json")  # a 620 GiB root disk

    def _v2_1_p_123_servers_detail(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "RECORDED":
            return self.recorded(200, OS + "_servers_detail.json", self._tag)
        page = 2 if self.sent[-1].query.get("marker") == "srv-x" else 1
        why = "libcloud ships no paged /servers/detail (its recording has no servers_links)"
        return self.handwritten(200, f"servers_detail_page_{page}.json", why=why)

    def _v2_1_p_123_servers(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        why = "libcloud ships no recorded Nova quota, overLimit or badRequest fault"
        if self.type == "QUOTA":
            return self.handwritten(403, "error_quota.json", why=why)
        if self.type == "OVER_LIMIT":
            return self.handwritten(413, "error_over_limit.json", why=why, headers={"retry-after": "0"})
        if self.type == "BAD_FLAVOR":
            return self.handwritten(400, "error_bad_flavor.json", why=why)
        if self.type == "UNAUTHORIZED":
            # keystonemiddleware's answer to a token it does not accept, as libcloud recorded it.
            return self.recorded(401, "openstack/_v3__auth_unauthorized.json")
        return self.recorded(202, OS + "_servers_create.json")

    def _v2_1_p_123_servers_26f7fbee_8ce1_4c28_887a_bfe8e4bb10fe(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        # The server create made, as libcloud recorded it; Nova returns the metadata it was given.
        (post,) = [s for s in self.sent if s.method == "POST"]
        sent = post.json()["server"]["metadata"]
        return self.recorded(
            200, OS + f"_servers_{CREATED.replace('-', '_')}.json", lambda b: b["server"].update(metadata=sent)
        )

    def _v2_1_p_123_servers_srv_1(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            if self.type == "GONE_ON_DELETE":
                return self.recorded(404, OS + "_os_keypairs_not_found.json")
            return self.reply(204)  # Nova answers a delete with 204 and no body
        mine = {**owner("uid-1").to_tags(), "backup": "daily"}
        return self.recorded(200, OS + "_servers_12064.json", lambda b: b["server"].update(id="srv-1", metadata=mine))

    def _v2_1_p_123_servers_srv_1_metadata(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # Nova answers the metadata it now has: libcloud's recorded metadata answer, holding what we sent.
        sent = json.loads(body)["metadata"]
        return self.recorded(200, OS + "_servers_12063_metadata_two_keys.json", lambda b: b.update(metadata=sent))

    def _v2_1_p_123_servers_srv_x(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # A server someone else made: libcloud's recording, metadata and all.
        return self.recorded(200, OS + "_servers_12064.json", lambda b: b["server"].update(id="srv-x"))

    def _v2_1_p_123_servers_srv_gone(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # Nova's itemNotFound fault, as libcloud recorded it (for a keypair: one shape for all).
        return self.recorded(404, OS + "_os_keypairs_not_found.json")

    def _tag(self, listing: dict[str, Any]) -> None:
        for server in listing["servers"]:
            server["metadata"] = self.metadata.get(str(server["id"]), server["metadata"])


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
        owner=owner(uid),
        disk_gib=disk_gib,
    )


async def test_create_sends_metadata_and_userdata(connector: LibcloudConnector) -> None:
    NovaMockHttp.reset("RECORDED")  # the lookup reads libcloud's recorded list: none of them ours
    node = await connector.create(dataclasses.replace(request("uid-new"), subnet="net-builders"))

    lookup, post, read = NovaMockHttp.sent
    assert (lookup.method, lookup.path) == ("GET", "/v2.1/p-123/servers/detail")
    assert (post.method, post.path) == ("POST", "/v2.1/p-123/servers")
    server = post.json()["server"]
    assert server["name"] == vm_name("shop-web-uid-new", cluster_id=CLUSTER, namespace="team-a")
    assert server["metadata"] == owner("uid-new").to_tags()
    assert base64.b64decode(server["user_data"]).decode() == "#cloud-config\nruncmd: [true]\n"
    assert server["imageRef"] == "img-ubuntu-2404"
    assert server["flavorRef"] == "m1.small"
    assert server["availability_zone"] == "nova"
    assert server["networks"] == [{"uuid": "net-builders"}]
    assert post.headers["X-Auth-Token"] == CANARY
    # libcloud's recorded answer: the new server's id, then the server itself, still building.
    assert (read.method, read.path) == ("GET", f"/v2.1/p-123/servers/{CREATED}")
    assert node.provider_id == CREATED
    assert node.state is NodeState.PENDING
    assert node.zone == "testaz"
    assert (node.public_ips, node.private_ips) == ((), ())
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-new"


async def test_recorded_servers_are_found_by_their_metadata(connector: LibcloudConnector) -> None:
    NovaMockHttp.reset("RECORDED")
    NovaMockHttp.metadata = {"12064": owner("uid-a").to_tags(), "12065": owner("uid-b", cluster="elsewhere").to_tags()}

    (mine,) = await connector.list_cluster(CLUSTER)
    (theirs,) = await connector.find_by_tags({OwnerTags.INSTANCE_UID: "uid-b"})

    assert mine.provider_id == "12064"
    assert mine.state is NodeState.RUNNING  # ACTIVE
    assert mine.public_ips == ("50.57.94.30", "2001:4801:7808:52:16:3eff:fe77:32e3")
    assert mine.private_ips == ("10.182.64.29", "fec0:4801:7808:52:16:3eff:fe6e:b7e2")
    assert mine.tags == owner("uid-a").to_tags()
    assert theirs.provider_id == "12065"
    assert theirs.state is NodeState.PENDING  # BUILD
    assert theirs.tags[OwnerTags.CLUSTER_ID] == "elsewhere"
    listings = [s for s in NovaMockHttp.sent if s.path == "/v2.1/p-123/servers/detail"]
    assert [s.query for s in listings] == [{"limit": "2"}, {"limit": "2"}]  # one page: no servers_links


async def test_a_server_gone_before_its_delete_counts_as_deleted(connector: LibcloudConnector) -> None:
    NovaMockHttp.reset("GONE_ON_DELETE")  # Nova's recorded itemNotFound answers the DELETE

    await connector.destroy("srv-1", owner("uid-1"))

    assert [(s.method, s.path) for s in changes(NovaMockHttp)] == [("DELETE", "/v2.1/p-123/servers/srv-1")]


async def test_a_refused_token_is_invalid_credentials(connector: LibcloudConnector) -> None:
    NovaMockHttp.reset("UNAUTHORIZED")

    with pytest.raises(InvalidCredentials) as caught:
        await connector.create(request("uid-new"))

    assert len([s for s in NovaMockHttp.sent if s.method == "POST"]) == 1
    assert CANARY not in repr(caught.value)


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
    deletes = await destroyed(connector, NovaMockHttp, ours="srv-1", foreign="srv-x", missing="srv-gone")
    assert deletes == ["/v2.1/p-123/servers/srv-1"]


async def test_concurrent_destroys_still_go_one_vm_at_a_time(connector: LibcloudConnector) -> None:
    # Nova deletes one server per request: no batching, each VM described and deleted alone.
    assert connector.capabilities.destroy_batch == 1
    await asyncio.gather(connector.destroy("srv-1", owner("uid-1")), connector.destroy("srv-gone", owner("uid-1")))
    assert [s.path for s in NovaMockHttp.sent if s.method == "DELETE"] == ["/v2.1/p-123/servers/srv-1"]


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
    await create_fails_as(connector, NovaMockHttp, request("uid-new"), scenario, expected, attempts=attempts)


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
