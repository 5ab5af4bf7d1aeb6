"""Baking on OpenStack, DigitalOcean, GCE and Linode against recorded responses; Azure says it cannot.

Response bodies come from the recordings libcloud ships in its wheel
(``libcloud/test/compute/fixtures/<provider>/``), with our owner tags and the state under test
written into them (``recorded(...)`` below). Where libcloud has no recording for a call, the
answer is hand-written after the provider's API reference and marked HAND-WRITTEN. Every test
checks the request the adapter sends (method, path, body) against the provider's documented
API, not only what it parses.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from libcloud.common.google import GoogleBaseAuthConnection
from libcloud.compute.drivers.digitalocean import DigitalOcean_v2_NodeDriver
from libcloud.compute.drivers.gce import GCENodeDriver
from libcloud.compute.drivers.linode import LinodeNodeDriverV4
from libcloud.compute.drivers.openstack import OpenStack_2_NodeDriver
from libcloud.test.file_fixtures import ComputeFileFixtures

from skyfleet.connectors import (
    CredentialConfig,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    OwnershipMismatch,
    QuotaExceeded,
    Unsupported,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER
from tests.connector.recorded import RecordedHttp, Reply, changes
from tests.connector.test_gce import GoogleTokenMockHttp, service_account  # noqa: F401 - fixture

pytestmark = pytest.mark.connector

UID = "7d1c6f0e-0f4b-4d0e-9a53-3b4c8f1e2a10"
KEY = "5f0c2a1b9e8d7c6b5a4f3e2d1c0b9a88"
OWNER = ImageOwnerTags(cluster_id=CLUSTER, image_uid=UID, bake_key=KEY, namespace="team-a", image="web")
NAME = f"sf-web-7d1c6f0e-{KEY[:12]}"


def recorded(provider: str, name: str, path: tuple[str, ...] = (), **fields: Any) -> str:
    """libcloud's recording ``name``, with ``fields`` set on the object at ``path``."""
    doc = json.loads(ComputeFileFixtures(provider).load(name))
    target = doc
    for key in path:
        target = target[key]
    target.update(fields)
    return json.dumps(doc)


def ok(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
    return status, body, {"content-type": "application/json", **(headers or {})}, "OK"


def request(source: str) -> ImageRequest:
    return ImageRequest(name=NAME, source_id=source, tags=OWNER.to_tags())


def connector_for(config: CredentialConfig) -> LibcloudConnector:
    return LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))


# -- OpenStack: Nova createImage, Nova's image API ---------------------------------------------


class NovaImagesMockHttp(RecordedHttp):
    provider = "openstack"

    def _v2_1_p_123_servers_srv_1_action(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # HAND-WRITTEN like libcloud's own test: 202, no body, the image in the Location header.
        return 202, "", {"location": "https://nova.test:8774/v2.1/p-123/images/img-baked"}, "Accepted"

    def _v2_1_p_123_images_img_baked(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            return 204, "", {}, "No Content"
        status = "SAVING" if self.type == "SAVING" else "ACTIVE"
        return ok(
            recorded(
                "openstack_v1_1", "_images_13.json", ("image",), id="img-baked", status=status, metadata=OWNER.to_tags()
            )
        )

    def _v2_1_p_123_images_13(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return ok(ComputeFileFixtures("openstack_v1_1").load("_images_13.json"))  # a stranger's image

    def _v2_1_p_123_images_detail(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        doc = json.loads(ComputeFileFixtures("openstack_v1_1").load("_images_detail.json"))
        if self.type != "SAVING":  # SAVING: a fresh bake, nothing of this key listed yet
            doc["images"][0].update(id="img-baked", status="ACTIVE", metadata=OWNER.to_tags())
        return ok(json.dumps(doc))


@pytest.fixture
async def nova(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(OpenStack_2_NodeDriver.connectionCls, "conn_class", NovaImagesMockHttp)
    NovaImagesMockHttp.reset()
    config = CredentialConfig(
        name="os",
        namespace="team-a",
        provider="openstack",
        region="RegionOne",
        endpoint_url="https://keystone.test:5000",
        parameters={"project": "shop", "compute_url": "https://nova.test:8774/v2.1/p-123"},
        secret={"token": CANARY},
    )
    connector = connector_for(config)
    yield connector
    await connector.close()


async def test_openstack_create_image_sends_createimage_with_our_metadata(nova: LibcloudConnector) -> None:
    NovaImagesMockHttp.type = "SAVING"

    made = await nova.create_image(request("srv-1"))

    post = next(s for s in NovaImagesMockHttp.sent if s.method == "POST")
    assert post.path == "/v2.1/p-123/servers/srv-1/action"
    assert post.json() == {"createImage": {"name": NAME, "metadata": OWNER.to_tags()}}
    assert made.id == "img-baked"
    seen = await nova.get_image("img-baked")
    assert seen is not None
    assert seen.state is ImageState.PENDING
    assert seen.tags == OWNER.to_tags()


async def test_openstack_create_image_adopts_a_bake_that_exists(nova: LibcloudConnector) -> None:
    made = await nova.create_image(request("srv-1"))

    assert made.id == "img-baked"
    assert made.state is ImageState.AVAILABLE
    assert changes(NovaImagesMockHttp) == []
    listing = next(s for s in NovaImagesMockHttp.sent if s.path.endswith("/images/detail"))
    assert listing.query[f"property-{ImageOwnerTags.BAKE_KEY}"] == KEY
    assert listing.query[f"property-{ImageOwnerTags.IMAGE_UID}"] == UID


async def test_openstack_deregister_checks_ownership(nova: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await nova.deregister_image("13", OWNER)
    await nova.deregister_image("img-baked", OWNER)

    assert [(s.method, s.path) for s in changes(NovaImagesMockHttp)] == [("DELETE", "/v2.1/p-123/images/img-baked")]


# -- DigitalOcean: snapshot action, then the snapshot is found and tagged ----------------------


class DigitalOceanImagesMockHttp(RecordedHttp):
    provider = "digitalocean"

    def _v2_droplets_501_actions(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "POST":
            return ok(ComputeFileFixtures("digitalocean_v2").load("create_image.json"), 201)
        # HAND-WRITTEN (GET /v2/droplets/{id}/actions): the builder's earlier actions.
        earlier = [json.loads(ComputeFileFixtures("digitalocean_v2").load("create_image.json"))["action"]]
        return ok(json.dumps({"actions": earlier if self.type == "EARLIER" else [], "links": {}, "meta": {"total": 0}}))

    def _v2_actions_36805022(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        status = "completed" if self.type in ("DONE", "TAGGED") else "in-progress"
        return ok(recorded("digitalocean_v2", "create_image.json", ("action",), status=status))

    def _v2_droplets_501_snapshots(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # HAND-WRITTEN (GET /v2/droplets/{id}/snapshots): the snapshot the action made.
        image = json.loads(ComputeFileFixtures("digitalocean_v2").load("get_image.json"))["image"]
        return ok(json.dumps({"snapshots": [image], "links": {}, "meta": {"total": 1}}))

    def _v2_images_12345(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            return 204, "", {}, "No Content"
        tags = [f"{k}:{v}" for k, v in DO_TAGS.items()] if self.type == "TAGGED" else []
        return ok(recorded("digitalocean_v2", "get_image.json", ("image",), tags=tags, status="available"))

    def _get_method_name(self, type: str | None, use_param: str | None, qs: Any, path: str) -> str:
        # Every tag's /resources path lands in one handler (the tag is in the path).
        if path.startswith("/v2/tags/") and path.endswith("/resources"):
            return "_tag_resources"
        name: str = super()._get_method_name(type, use_param, qs, path)
        return name

    def _tag_resources(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return 204, "", {}, "No Content"

    def _v2_tags(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return ok(json.dumps({"tag": {"name": json.loads(body)["name"]}}), 201)  # HAND-WRITTEN

    def _v2_images(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return ok(ComputeFileFixtures("digitalocean_v2").load("list_images.json"))


DO_TAGS = {
    "skyfleet_cluster-id": CLUSTER,
    "skyfleet_namespace": "team-a",
    "skyfleet_image": "web",
    "skyfleet_image-uid": UID,
    "skyfleet_bake-key": KEY,
}


@pytest.fixture
async def digitalocean(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(DigitalOcean_v2_NodeDriver.connectionCls, "conn_class", DigitalOceanImagesMockHttp)
    DigitalOceanImagesMockHttp.reset()
    config = CredentialConfig(
        name="do", namespace="team-a", provider="digitalocean", region="fra1", secret={"token": CANARY}
    )
    connector = connector_for(config)
    yield connector
    await connector.close()


async def test_digitalocean_snapshot_action_then_the_snapshot_by_its_own_id(digitalocean: LibcloudConnector) -> None:
    made = await digitalocean.create_image(request("501"))

    (post,) = [s for s in DigitalOceanImagesMockHttp.sent if s.method == "POST"]
    assert post.path == "/v2/droplets/501/actions"
    assert post.json() == {"type": "snapshot", "name": NAME}
    assert (made.id, made.state) == ("action/36805022/501", ImageState.PENDING)
    pending = await digitalocean.get_image(made.id, OWNER.to_tags())
    assert pending is not None
    assert (pending.id, pending.state) == (made.id, ImageState.PENDING)

    DigitalOceanImagesMockHttp.reset("DONE")
    done = await digitalocean.get_image(made.id, OWNER.to_tags())

    assert done is not None
    assert done.id == "12345"  # the final id, which the bake records in place of the action
    # Snapshots cannot be tagged when made: the first look at the finished one tags it.
    tagged = [s for s in DigitalOceanImagesMockHttp.sent if s.method == "POST" and s.path.endswith("/resources")]
    assert sorted(s.path for s in tagged) == sorted(f"/v2/tags/{k}:{v}/resources" for k, v in DO_TAGS.items())
    assert all(s.json() == {"resources": [{"resource_id": "12345", "resource_type": "image"}]} for s in tagged)


async def test_digitalocean_a_second_snapshot_is_never_requested(digitalocean: LibcloudConnector) -> None:
    DigitalOceanImagesMockHttp.reset("EARLIER")

    made = await digitalocean.create_image(request("501"))

    assert made.id == "action/36805022/501"
    assert changes(DigitalOceanImagesMockHttp) == []


async def test_digitalocean_deregister_only_our_tagged_snapshot(digitalocean: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await digitalocean.deregister_image("12345", OWNER)  # untagged: not provably ours
    DigitalOceanImagesMockHttp.reset("TAGGED")
    seen = await digitalocean.get_image("12345", OWNER.to_tags())
    assert seen is not None
    assert ImageOwnerTags.from_tags(seen.tags) == OWNER

    await digitalocean.deregister_image("12345", OWNER)

    assert [(s.method, s.path) for s in changes(DigitalOceanImagesMockHttp)] == [("DELETE", "/v2/images/12345")]


# -- GCE: an image from the builder's boot disk -------------------------------------------------


class GCEImagesMockHttp(RecordedHttp):
    provider = "gce"
    base = "_compute_v1_projects_skyfleet_test"

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_node_name(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return ok(ComputeFileFixtures("gce").load("zones_us-central1-a_instances_node-name.json"))

    def _compute_v1_projects_skyfleet_test_global_images(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if method == "POST":
            return ok(ComputeFileFixtures("gce").load("operations_operation_global_image_post.json"))
        doc = json.loads(ComputeFileFixtures("gce").load("global_images.json"))
        doc["items"][0].update(name=NAME, labels=self.labels())
        if self.type == "PENDING":  # a fresh bake: no image of this key in the listing yet
            doc["items"] = [i for i in doc["items"] if i["name"] != NAME]
        return ok(json.dumps(doc))

    def _compute_v1_projects_skyfleet_test_global_images_sf_web_7d1c6f0e_5f0c2a1b9e8d(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if method == "DELETE":
            return ok(ComputeFileFixtures("gce").load("operations_operation_global_images_debian7_delete.json"))
        item = json.loads(ComputeFileFixtures("gce").load("global_images.json"))["items"][0]
        item.update(name=NAME, labels=self.labels(), status="PENDING" if self.type == "PENDING" else "READY")
        return ok(json.dumps(item))

    @staticmethod
    def labels() -> dict[str, str]:
        return {
            "skyfleet_cluster-id": CLUSTER,
            "skyfleet_namespace": "team-a",
            "skyfleet_image": "web",
            "skyfleet_image-uid": UID,
            "skyfleet_bake-key": KEY,
        }


@pytest.fixture
async def gce(monkeypatch: pytest.MonkeyPatch, service_account: str) -> AsyncIterator[LibcloudConnector]:  # noqa: F811
    monkeypatch.setattr(GCENodeDriver.connectionCls, "conn_class", GCEImagesMockHttp)
    monkeypatch.setattr(GoogleBaseAuthConnection, "conn_class", GoogleTokenMockHttp)
    GCEImagesMockHttp.reset("PENDING")
    config = CredentialConfig(
        name="gcp",
        namespace="team-a",
        provider="gce",
        region="us-central1",
        parameters={"zone": "us-central1-a"},
        secret={"service_account.json": service_account},
    )
    connector = connector_for(config)
    yield connector
    await connector.close()


async def test_gce_image_from_the_boot_disk_labelled_and_idempotent(gce: LibcloudConnector) -> None:
    made = await gce.create_image(request("us-central1-a/node-name"))

    (post,) = changes(GCEImagesMockHttp)
    assert (post.method, post.path) == ("POST", "/compute/v1/projects/skyfleet-test/global/images")
    assert post.json() == {
        "name": NAME,
        "sourceDisk": "https://www.googleapis.com/compute/v1/projects/project_name/zones/us-central1-a/disks/node-name",
        "labels": GCEImagesMockHttp.labels(),
    }
    assert post.query["requestId"]
    assert (made.id, made.state) == (NAME, ImageState.PENDING)
    seen = await gce.get_image(NAME)
    assert seen is not None
    assert seen.state is ImageState.PENDING
    assert ImageOwnerTags.from_tags(seen.tags) == OWNER


async def test_gce_finds_and_deregisters_by_labels(gce: LibcloudConnector) -> None:
    GCEImagesMockHttp.reset()
    found = await gce.find_images(OWNER.lookup())
    assert [(i.id, i.state) for i in found] == [(NAME, ImageState.AVAILABLE)]
    listing = next(s for s in GCEImagesMockHttp.sent if s.path.endswith("/global/images"))
    assert f'(labels.skyfleet_bake-key = "{KEY}")' in listing.query["filter"]

    await gce.deregister_image(NAME, OWNER)

    assert [(s.method, s.path) for s in changes(GCEImagesMockHttp)] == [
        ("DELETE", f"/compute/v1/projects/skyfleet-test/global/images/{NAME}")
    ]


# -- Linode: an image from the builder's disk, within a small quota ---------------------------


class LinodeImagesMockHttp(RecordedHttp):
    provider = "linode"

    def _v4_linode_instances_7001_disks(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return ok(ComputeFileFixtures("linode_v4").load("list_disks.json"))

    def _v4_images(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "POST":
            if self.type == "QUOTA":
                # HAND-WRITTEN after Linode's error shape: 400 with a reason.
                return ok(json.dumps({"errors": [{"reason": "You have reached your image limit."}]}), 400)
            return ok(recorded("linode_v4", "create_image.json", status="creating", tags=json.loads(body)["tags"]))
        return ok(json.dumps({"data": [], "page": 1, "pages": 1, "results": 0}))


@pytest.fixture
async def linode(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(LinodeNodeDriverV4.connectionCls, "conn_class", LinodeImagesMockHttp)
    LinodeImagesMockHttp.reset()
    config = CredentialConfig(
        name="linode", namespace="team-a", provider="linode", region="eu-central", secret={"token": CANARY}
    )
    connector = connector_for(config)
    yield connector
    await connector.close()


async def test_linode_image_from_the_root_disk_with_short_tags(linode: LibcloudConnector) -> None:
    made = await linode.create_image(request("7001"))

    (post,) = changes(LinodeImagesMockHttp)
    assert (post.method, post.path) == ("POST", "/v4/images")
    sent = post.json()
    assert sent["disk_id"] == 23517413  # the ext4 disk, not the swap disk
    assert sent["label"] == NAME
    assert all(len(t) <= 50 for t in sent["tags"])  # Linode's tag limit
    assert f"sf-bake={KEY}" in sent["tags"]
    assert f"sf-image-uid={UID}" in sent["tags"]
    assert (made.id, made.state) == ("private/12345", ImageState.PENDING)
    assert ImageOwnerTags.from_tags(made.tags) == OWNER
    listing = next(s for s in LinodeImagesMockHttp.sent if s.method == "GET" and s.path == "/v4/images")
    assert {"tags": f"sf-bake={KEY}"} in json.loads(listing.headers["X-Filter"])["+and"]


async def test_linode_image_quota_is_quota_exceeded(linode: LibcloudConnector) -> None:
    LinodeImagesMockHttp.reset("QUOTA")

    with pytest.raises(QuotaExceeded):
        await linode.create_image(request("7001"))

    assert len(changes(LinodeImagesMockHttp)) == 1  # a quota is not retried


# -- Azure: no baking (yet), said up front ------------------------------------------------------


async def test_azure_reports_baking_unsupported_without_calling() -> None:
    config = CredentialConfig(
        name="azure",
        namespace="team-a",
        provider="azure_arm",
        region="westeurope",
        parameters={"resource_group": "shop-rg"},
        secret={"tenant_id": "t", "subscription_id": "s", "client_id": "c", "client_secret": CANARY},
    )
    connector = connector_for(config)
    try:
        assert not connector.capabilities.bake
        assert not connector.capabilities.image_copy
        with pytest.raises(Unsupported, match="azure_arm"):
            await connector.create_image(request("vm"))
        with pytest.raises(Unsupported):
            await connector.find_images(OWNER.lookup())
        with pytest.raises(Unsupported):
            await connector.deregister_image("img", OWNER)
    finally:
        await connector.close()
