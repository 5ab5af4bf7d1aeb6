"""DigitalOcean adapter against recorded API v2 responses."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from libcloud.compute.drivers.digitalocean import DigitalOcean_v2_NodeDriver

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    InvalidCredentials,
    InvalidRequest,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector


class DigitalOceanMockHttp(RecordedHttp):
    """Recorded answers for the fixtures' droplets; droplets created here are kept and listed by tag."""

    provider = "digitalocean"
    made: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.made = []

    def _v2_account(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "UNAUTHORIZED":
            return self.reply(401, "error_unauthorized.json")
        return self.reply(200, "account.json")

    def _v2_sizes(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, "digitalocean_v2/list_sizes.json")  # 512mb: 20 GB disk, 1gb: 30 GB

    def _v2_droplets(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:  # noqa: PLR0911
        if method == "POST":
            if self.type == "DROPLET_LIMIT":
                return self.reply(422, "error_droplet_limit.json")
            if self.type == "RATE_LIMITED":
                return self.reply(429, "error_rate_limit.json", {"ratelimit-reset": "0"})
            if self.type == "INVALID_IMAGE":
                return self.recorded(422, "digitalocean_v2/error_invalid_image.json")  # libcloud's recording
            if self.type != "STATEFUL":
                return self.reply(202, "create_node.json")
            sent = json.loads(body)
            droplet = json.loads(self.fixture("create_node.json"))["droplet"]
            droplet.update(id=600 + len(self.made), name=sent["name"], tags=sent["tags"])
            self.made.append(droplet)
            return 202, json.dumps({"droplet": droplet}), {"content-type": "application/json"}, "Accepted"
        query = self.sent[-1].query
        if query.get("tag_name") == "skyfleet_instance-uid:uid-1":
            return self.reply(200, "list_nodes_uid_1.json")
        if query.get("tag_name") == "skyfleet_cluster-id:cluster-test":
            return self.reply(200, f"list_nodes_cluster_page_{query.get('page', '1')}.json")
        tagged = [d for d in self.made if query.get("tag_name") in d["tags"]]
        listing = {"droplets": tagged, "links": {}, "meta": {"total": len(tagged)}}
        return 200, json.dumps(listing), {"content-type": "application/json"}, "OK"

    def _v2_droplets_501(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            return self.reply(204)
        return self.reply(200, "get_node.json")

    def _v2_droplets_900(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "get_node_foreign.json")

    def _v2_droplets_404(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(404, "error_not_found.json")

    def _v2_tags_skyfleet_cluster_id_cluster_test_resources(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(204)

    _v2_tags_skyfleet_instance_uid_uid_0_resources = _v2_tags_skyfleet_cluster_id_cluster_test_resources


def do_connector(endpoint_url: str | None = None) -> LibcloudConnector:
    config = CredentialConfig(
        name="do",
        namespace="team-a",
        provider="digitalocean",
        region="fra1",
        endpoint_url=endpoint_url,
        secret={"token": CANARY},
    )
    return LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))


@pytest.fixture
async def connector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(DigitalOcean_v2_NodeDriver.connectionCls, "conn_class", DigitalOceanMockHttp)
    DigitalOceanMockHttp.reset()
    connector = do_connector()
    yield connector
    await connector.close()


def request(uid: str, cluster: str = CLUSTER) -> CreateRequest:
    return CreateRequest(
        name=f"shop-web-{uid}",
        image_id="ubuntu-24-04-x64",
        size_id="s-1vcpu-1gb",
        region="fra1",
        user_data="#cloud-config\n",
        tags=OwnerTags(cluster, uid, namespace="team-a", deployment="shop", instance=uid).to_tags(),
    )


async def test_create_sends_encoded_tags_and_userdata(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-0"))

    lookup, create = DigitalOceanMockHttp.sent
    assert lookup.query["tag_name"] == "skyfleet_instance-uid:uid-0"
    payload: dict[str, Any] = create.json()
    assert payload["name"] == vm_name("shop-web-uid-0", cluster_id=CLUSTER, namespace="team-a")
    assert payload["user_data"] == "#cloud-config\n"
    assert payload["size"] == "s-1vcpu-1gb"
    assert payload["region"] == "fra1"
    assert "skyfleet_cluster-id:cluster-test" in payload["tags"]
    assert "skyfleet_instance-uid:uid-0" in payload["tags"]
    assert node.provider_id == "501"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-0"
    assert node.tags[OwnerTags.CLUSTER_ID] == CLUSTER
    assert node.zone == "fra1"
    assert node.public_ips == ("164.90.1.1",)
    assert create.headers["Authorization"] == f"Bearer {CANARY}"


async def test_list_cluster_filters_server_side_and_follows_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["501", "502", "503"]
    assert [s.query.get("page") for s in DigitalOceanMockHttp.sent] == ["1", "2"]
    assert all(s.query["tag_name"] == "skyfleet_cluster-id:cluster-test" for s in DigitalOceanMockHttp.sent)


async def test_create_adopts_an_existing_droplet(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-1"))

    assert node.provider_id == "502"
    assert not [s for s in DigitalOceanMockHttp.sent if s.method == "POST"]


async def test_destroy_checks_ownership_first(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("900", owner("uid-0"))
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("501", owner("uid-9"))
    assert not [s for s in DigitalOceanMockHttp.sent if s.method == "DELETE"]

    await connector.destroy("501", owner("uid-0"))
    await connector.destroy("404", owner("uid-0"))

    assert [s.path for s in DigitalOceanMockHttp.sent if s.method == "DELETE"] == ["/v2/droplets/501"]


async def test_release_untags_the_droplet_from_both_identity_tags(connector: LibcloudConnector) -> None:
    await release_refusals(connector, DigitalOceanMockHttp, ours="501", foreign="900", missing="404", uid="uid-0")

    await connector.release("501", owner("uid-0"))

    sent = changes(DigitalOceanMockHttp)
    assert [(s.method, s.path) for s in sent] == [
        ("DELETE", "/v2/tags/skyfleet_cluster-id:cluster-test/resources"),
        ("DELETE", "/v2/tags/skyfleet_instance-uid:uid-0/resources"),
    ]
    assert all(s.json() == {"resources": [{"resource_id": "501", "resource_type": "droplet"}]} for s in sent)
    assert all(s.headers["Content-Type"] == "application/json" for s in sent)


@pytest.mark.parametrize(
    ("scenario", "expected", "retried"),
    [("DROPLET_LIMIT", QuotaExceeded, False), ("RATE_LIMITED", Throttled, True)],
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], retried: bool
) -> None:
    DigitalOceanMockHttp.reset(scenario)

    with pytest.raises(expected):
        await connector.create(request("uid-0"))

    posts = [s for s in DigitalOceanMockHttp.sent if s.method == "POST"]
    assert len(posts) == (2 if retried else 1)


async def test_bad_token_is_invalid_credentials_without_the_token(connector: LibcloudConnector) -> None:
    DigitalOceanMockHttp.reset("UNAUTHORIZED")

    with pytest.raises(InvalidCredentials) as caught:
        await connector.verify()

    assert CANARY not in repr(caught.value)


async def test_describe_missing_droplet_is_none(connector: LibcloudConnector) -> None:
    assert await connector.describe("404") is None


async def test_an_endpoint_override_is_where_requests_go(connector: LibcloudConnector) -> None:
    overridden = do_connector("https://do-gateway.example.org:8443/")
    try:
        await overridden.verify()
    finally:
        await overridden.close()

    (sent,) = DigitalOceanMockHttp.sent
    assert (sent.origin, sent.path) == ("https://do-gateway.example.org:8443", "/v2/account")


@pytest.mark.parametrize(("mine", "theirs"), [("prod.eu", "prod_eu"), ("Prod", "prod"), ("a_-b", "a.b")])
async def test_cluster_ids_that_differ_never_share_a_tag(connector: LibcloudConnector, mine: str, theirs: str) -> None:
    DigitalOceanMockHttp.reset("STATEFUL")
    await connector.create(request("uid-5", cluster=mine))

    assert await connector.list_cluster(theirs) == []
    (listed,) = await connector.list_cluster(mine)
    assert listed.tags[OwnerTags.CLUSTER_ID] == mine
    tags = DigitalOceanMockHttp.made[0]["tags"]
    assert all(re.fullmatch(r"[A-Za-z0-9_:-]{1,255}", t) for t in tags)


async def test_the_plan_fixes_the_disk_so_sizes_are_chosen_by_it(connector: LibcloudConnector) -> None:
    assert (await connector.resolve_size(cpu=1, memory_mib=512)).id == "512mb"
    assert (await connector.resolve_size(cpu=1, memory_mib=512, disk_gib=25)).id == "1gb"
    with pytest.raises(InvalidRequest, match="disk>=100 GiB"):
        await connector.resolve_size(cpu=1, memory_mib=512, disk_gib=100)
    (listing,) = [s for s in DigitalOceanMockHttp.sent if s.path == "/v2/sizes"]
    assert listing.method == "GET"


async def test_an_explicit_plan_with_a_smaller_disk_is_refused(connector: LibcloudConnector) -> None:
    with pytest.raises(InvalidRequest, match="'512mb' comes with a 20 GiB disk, smaller than diskGiB 25"):
        await connector.resolve_size(instance_type="512mb", disk_gib=25)
    assert (await connector.resolve_size(instance_type="512mb", disk_gib=20)).id == "512mb"


async def test_a_refused_image_is_an_invalid_request_not_retried(connector: LibcloudConnector) -> None:
    # The 422 body is the one libcloud recorded from DigitalOcean.
    DigitalOceanMockHttp.reset("INVALID_IMAGE")

    with pytest.raises(InvalidRequest, match="invalid image"):
        await connector.create(request("uid-0"))

    (post,) = [s for s in DigitalOceanMockHttp.sent if s.method == "POST"]
    assert post.path == "/v2/droplets"
    assert post.json()["image"] == "ubuntu-24-04-x64"


async def test_create_puts_the_droplet_in_the_requested_vpc(connector: LibcloudConnector) -> None:
    await connector.create(dataclasses.replace(request("uid-0"), subnet="5a4981aa-vpc"))

    _, create = DigitalOceanMockHttp.sent
    assert create.json()["vpc_uuid"] == "5a4981aa-vpc"
    assert connector.capabilities.subnet
