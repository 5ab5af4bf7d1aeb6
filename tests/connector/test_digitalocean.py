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
from skyfleet.connectors.libcloud.adapters.digitalocean import DigitalOceanAdapter
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import RecordedHttp, Reply, changes, create_fails_as, release_refusals

pytestmark = pytest.mark.connector


# libcloud's recordings of DigitalOcean (digitalocean_v2/). Our owner tags are written into the
# recorded droplets' ``tags`` list, where DigitalOcean returns a droplet's tags.
DO = "digitalocean_v2/"
RECORDED_ID = "3164444"  # the droplet in libcloud's recordings
NO_404 = "libcloud ships no recorded DigitalOcean 404 body"


def tagged(droplet: dict[str, Any], uid: str, cluster: str = CLUSTER) -> None:
    adapter = DigitalOceanAdapter(do_config())
    droplet["tags"] = adapter.tag_strings(owner(uid, cluster=cluster).to_tags())


class DigitalOceanMockHttp(RecordedHttp):
    """Recorded answers; droplets created here are kept and listed by tag."""

    provider = "digitalocean"
    made: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.made = []

    def _v2_account(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "UNAUTHORIZED":
            return self.recorded(401, DO + "error.json")  # "Unable to authenticate you."
        return self.handwritten(200, "account.json", why="libcloud ships no recorded /v2/account")

    def _v2_sizes(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, DO + "list_sizes.json")  # 512mb: 20 GB disk, 1gb: 30 GB

    def _v2_droplets(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "POST":
            return self._create(json.loads(body))
        query = self.sent[-1].query
        if query.get("tag_name") == "skyfleet_instance-uid:uid-1":
            return self.recorded(200, DO + "list_nodes.json", lambda b: tagged(b["droplets"][0], "uid-1"))
        if query.get("tag_name") == "skyfleet_cluster-id:cluster-test":
            if query.get("page") == "1":  # recorded with links.pages.next: page 2 follows
                return self.recorded(200, DO + "list_nodes_page_1.json", lambda b: tagged(b["droplets"][0], "uid-1"))

            def second(listing: dict[str, Any]) -> None:
                listing["droplets"][0]["id"] = 3164445  # the recording's droplet again, under another id
                tagged(listing["droplets"][0], "uid-2")

            return self.recorded(200, DO + "list_nodes.json", second)  # recorded without a next page
        wanted = [d for d in self.made if query.get("tag_name") in d["tags"]]
        return self.recorded(200, DO + "list_nodes_empty.json", lambda b: b.update(droplets=wanted))

    def _create(self, sent: dict[str, Any]) -> Reply:
        if self.type == "DROPLET_LIMIT":
            return self.handwritten(422, "error_droplet_limit.json", why="libcloud ships no recorded droplet-limit 422")
        if self.type == "RATE_LIMITED":
            why = "libcloud ships no recorded DigitalOcean 429"
            return self.handwritten(429, "error_rate_limit.json", why=why, headers={"ratelimit-reset": "0"})
        if self.type == "INVALID_IMAGE":
            return self.recorded(422, DO + "error_invalid_image.json")

        # libcloud ships no recorded answer to POST /v2/droplets (its create_node.json is the
        # create *action*): the answer is its recorded droplet (GET /v2/droplets/3164444) in the
        # {"droplet": ...} envelope the API documents, freshly made ("new") with the name and
        # tags we sent, as DigitalOcean echoes them.
        def made(answer: dict[str, Any]) -> None:
            answer["droplet"].update(id=600 + len(self.made), name=sent["name"], tags=sent["tags"], status="new")
            self.made.append(answer["droplet"])

        return self.recorded(202, DO + "list_node.json", made)

    def _v2_droplets_3164444(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            if self.type == "GONE_ON_DELETE":
                return self.handwritten(404, "error_not_found.json", why=NO_404)
            return self.reply(204)  # DigitalOcean answers a delete with 204 and no body
        return self.recorded(200, DO + "list_node.json", lambda b: tagged(b["droplet"], "uid-0"))

    def _v2_droplets_900(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # Someone else's droplet: the recording as it is, tagged mytag1 and mytag2.
        return self.recorded(200, DO + "list_node.json", lambda b: b["droplet"].update(id=900))

    def _v2_droplets_404(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.handwritten(404, "error_not_found.json", why=NO_404)

    def _v2_tags_skyfleet_cluster_id_cluster_test_resources(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(204)  # untagging answers 204 and no body

    _v2_tags_skyfleet_instance_uid_uid_0_resources = _v2_tags_skyfleet_cluster_id_cluster_test_resources


def do_config(endpoint_url: str | None = None) -> CredentialConfig:
    return CredentialConfig(
        name="do",
        namespace="team-a",
        provider="digitalocean",
        region="fra1",
        endpoint_url=endpoint_url,
        secret={"token": CANARY},
    )


def do_connector(endpoint_url: str | None = None) -> LibcloudConnector:
    return LibcloudConnector(do_config(endpoint_url), retry=RetryPolicy(max_attempts=2, base_delay=0.01))


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
        owner=OwnerTags(cluster, uid, namespace="team-a", deployment="shop", instance=uid),
    )


async def test_create_sends_encoded_tags_and_userdata(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-0"))

    lookup, create = DigitalOceanMockHttp.sent
    assert lookup.query["tag_name"] == "skyfleet_instance-uid:uid-0"
    payload: dict[str, Any] = create.json()
    assert payload["name"] == vm_name("shop-web-uid-0", cluster_id=CLUSTER, namespace="team-a")
    assert payload["user_data"] == "#cloud-config\n"
    assert (create.method, create.path) == ("POST", "/v2/droplets")
    assert payload["image"] == "ubuntu-24-04-x64"
    assert payload["size"] == "s-1vcpu-1gb"
    assert payload["region"] == "fra1"
    assert "skyfleet_cluster-id:cluster-test" in payload["tags"]
    assert "skyfleet_instance-uid:uid-0" in payload["tags"]
    # Parsed from the recorded droplet: its id as made here, "new", the recording's address and region.
    assert node.provider_id == "600"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-0"
    assert node.tags[OwnerTags.CLUSTER_ID] == CLUSTER
    assert node.zone == "ams2"
    assert node.size_id == "8gb"
    assert (node.public_ips, node.private_ips) == (("36.123.0.123",), ())
    assert create.headers["Authorization"] == f"Bearer {CANARY}"


async def test_list_cluster_filters_server_side_and_follows_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["3164444", "3164445"]
    assert [n.tags[OwnerTags.INSTANCE_UID] for n in nodes] == ["uid-1", "uid-2"]
    assert [n.state for n in nodes] == [NodeState.RUNNING, NodeState.RUNNING]  # "active"
    assert nodes[0].public_ips == ("104.236.32.182",)  # libcloud reads networks.v4 only
    assert (nodes[1].public_ips[0], nodes[1].private_ips) == ("128.199.13.158", ("10.124.0.2",))
    assert [s.query.get("page") for s in DigitalOceanMockHttp.sent] == ["1", "2"]
    assert all(s.query["tag_name"] == "skyfleet_cluster-id:cluster-test" for s in DigitalOceanMockHttp.sent)


async def test_create_adopts_an_existing_droplet(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-1"))

    assert node.provider_id == RECORDED_ID
    assert not [s for s in DigitalOceanMockHttp.sent if s.method == "POST"]


async def test_destroy_checks_ownership_first(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("900", owner("uid-0"))
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(RECORDED_ID, owner("uid-9"))
    assert not [s for s in DigitalOceanMockHttp.sent if s.method == "DELETE"]

    await connector.destroy(RECORDED_ID, owner("uid-0"))
    await connector.destroy("404", owner("uid-0"))

    assert [s.path for s in DigitalOceanMockHttp.sent if s.method == "DELETE"] == [f"/v2/droplets/{RECORDED_ID}"]


async def test_release_untags_the_droplet_from_both_identity_tags(connector: LibcloudConnector) -> None:
    await release_refusals(connector, DigitalOceanMockHttp, ours=RECORDED_ID, foreign="900", missing="404", uid="uid-0")

    await connector.release(RECORDED_ID, owner("uid-0"))

    sent = changes(DigitalOceanMockHttp)
    assert [(s.method, s.path) for s in sent] == [
        ("DELETE", "/v2/tags/skyfleet_cluster-id:cluster-test/resources"),
        ("DELETE", "/v2/tags/skyfleet_instance-uid:uid-0/resources"),
    ]
    assert all(s.json() == {"resources": [{"resource_id": RECORDED_ID, "resource_type": "droplet"}]} for s in sent)
    assert all(s.headers["Content-Type"] == "application/json" for s in sent)


@pytest.mark.parametrize(
    ("scenario", "expected", "retried"),
    [("DROPLET_LIMIT", QuotaExceeded, False), ("RATE_LIMITED", Throttled, True)],
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], retried: bool
) -> None:
    attempts = 2 if retried else 1
    await create_fails_as(connector, DigitalOceanMockHttp, request("uid-0"), scenario, expected, attempts=attempts)


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


async def test_a_droplet_gone_before_its_delete_counts_as_deleted(connector: LibcloudConnector) -> None:
    DigitalOceanMockHttp.reset("GONE_ON_DELETE")

    await connector.destroy(RECORDED_ID, owner("uid-0"))

    assert [(s.method, s.path) for s in changes(DigitalOceanMockHttp)] == [("DELETE", f"/v2/droplets/{RECORDED_ID}")]
