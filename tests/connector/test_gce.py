"""GCE adapter against recorded Compute Engine v1 responses, service-account auth included."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from libcloud.common.google import GoogleBaseAuthConnection
from libcloud.compute.drivers.gce import GCENodeDriver

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    NodeState,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.adapters.gce import label_key, label_value
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import (
    RecordedHttp,
    Reply,
    changes,
    create_fails_as,
    destroyed,
    recording,
    release_refusals,
)

pytestmark = pytest.mark.connector

BASE = "_compute_v1_projects_skyfleet_test"
ZONE = "/compute/v1/projects/skyfleet-test/zones/us-central1-a"


# libcloud's recordings of Compute Engine v1 (gce/). They predate labels: our owner labels are
# written into the instance's ``labels`` map (with its ``labelFingerprint``), where GCE returns them.
GCE = "gce/"
SET_LABELS_OP = "operation-zones_us-central1-a_instances_node-name_setTags_post"  # its recorded name
FINGERPRINT = "42WmSpB8rSM="


def labelled(instance: dict[str, Any], uid: str, name: str, **extra: str) -> None:
    labels = {label_key(k): label_value(v) for k, v in owner(uid).to_tags().items()}
    instance.update(name=name, labels={**labels, **extra}, labelFingerprint=FINGERPRINT)


class GoogleTokenMockHttp(RecordedHttp):
    provider = "gce"

    def _token(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.handwritten(200, "token.json", why="libcloud ships no recorded Google OAuth token answer")

    _o_oauth2_token = _token


class GCEMockHttp(RecordedHttp):
    """Recorded answers for the recordings' instances, and a stateful zone for new ones: names
    are unique per zone and must follow GCE's rule, label filters are evaluated on what was made."""

    provider = "gce"
    instances: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.instances = {}

    def _get_method_name(self, type: str | None, use_param: str | None, qs: Any, path: str) -> str:
        name = super()._get_method_name(type, use_param, qs, path)
        if not hasattr(self, name) and re.search(r"/zones/us-central1-a/instances/[^/]+$", path):
            return "_made_instance"
        return name

    def _filter(self) -> str:
        return self.sent[-1].query.get("filter", "")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_machineTypes(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.recorded(200, GCE + "zones_us-central1-a_machineTypes.json")

    def _compute_v1_projects_skyfleet_test_aggregated_instances(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if self._filter() == '(labels.skyfleet_cluster-id = "cluster-test")':
            second = self.sent[-1].query.get("pageToken") == "page-2"

            def page(listing: dict[str, Any]) -> None:
                # libcloud's recorded aggregated list, served one zone per page: node-name in
                # us-central1-a (RUNNING) and libcloud-demo-multiple-nodes-001 in us-central2-a
                # (SUSPENDED) are ours; the rest of the recording carries no labels at all.
                zone = "zones/us-central2-a" if second else "zones/us-central1-a"
                listing["items"] = {zone: listing["items"][zone]}
                for instance in listing["items"][zone]["instances"]:
                    if instance["name"] == "node-name":
                        labelled(instance, "uid-1", "node-name")
                    if instance["name"] == "libcloud-demo-multiple-nodes-001":
                        labelled(instance, "uid-2", instance["name"])
                if not second:
                    listing["nextPageToken"] = "page-2"

            return self.recorded(200, GCE + "aggregated_instances.json", page)
        wanted = dict(re.findall(r'labels\.([a-z0-9_-]+) = "([^"]*)"', self._filter()))
        found = [i for i in self.instances.values() if all(i["labels"].get(k) == v for k, v in wanted.items())]
        scoped = {"zones/us-central1-a": {"instances": found}} if found else {}
        return self.recorded(200, GCE + "aggregated_instances.json", lambda b: b.update(items=scoped))

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        no_errors = "libcloud ships no recorded GCE rate-limit or quota error"
        if self.type == "RATE_LIMITED":
            return self.handwritten(403, "error_rate_limit.json", why=no_errors)
        if self.type == "QUOTA":
            return self.handwritten(403, "error_quota.json", why=no_errors)
        sent = json.loads(body)
        name = sent["name"]
        # GCE's own error envelope (as in libcloud's recorded 404), the messages written here:
        # libcloud ships no recorded invalid-name or alreadyExists answer to an insert.
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            return gce_error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'")
        if name in self.instances:
            return gce_error(409, "alreadyExists", f"The resource '{name}' already exists")
        # What insert made: libcloud's recorded instance, named and labelled as sent, still provisioning.
        made = recording(GCE + "zones_us-central1-a_instances_node-name.json")
        made.update(name=name, labels=sent["labels"], status="PROVISIONING", selfLink=f"{ZONE}/instances/{name}")
        self.instances[name] = made
        return self.recorded(200, GCE + "zones_us-central1-a_instances_post.json")  # the insert operation

    def _made_instance(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        found = self.instances.get(urlsplit(url).path.rsplit("/", 1)[-1])
        if found is None:
            return self.recorded(404, GCE + "zones_us-central1-b_instances_libcloud-lb-demo-www-002.json")
        if method == "DELETE":
            return self.recorded(200, GCE + "zones_us-central1-a_instances_node-name_delete.json")
        return 200, json.dumps(found), {"content-type": "application/json"}, "OK"

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_shop_web_1(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if method == "DELETE":
            if self.type == "GONE_ON_DELETE":
                return self.recorded(404, GCE + "zones_us-central1-b_instances_libcloud-lb-demo-www-002.json")
            return self.recorded(200, GCE + "zones_us-central1-a_instances_node-name_delete.json")
        # libcloud's recorded instance, ours, with a label of the user's.
        return self.recorded(
            200,
            GCE + "zones_us-central1-a_instances_node-name.json",
            lambda i: labelled(i, "uid-1", "shop-web-1", tier="web"),
        )

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_shop_web_1_setLabels(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        first = len([s for s in self.sent if s.path.endswith("/setLabels")]) == 1
        if self.type == "STALE_FINGERPRINT" and first:
            return self.handwritten(412, "error_fingerprint.json", why="libcloud ships no recorded 412 conditionNotMet")
        # libcloud records no setLabels; its recorded setTags operation is the same compute#operation.
        return self.recorded(200, GCE + "zones_us-central1-a_instances_node-name_setTags_post.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_operations_operation_zones_us_central1_a_instances_node_name_setTags_post_wait(  # noqa: E501
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.recorded(
            200, GCE + "operations_operation_zones_us-central1-a_instances_node-name_setTags_post.json"
        )

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_hand_made(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        # Someone else's instance: libcloud's recording as it is, with no labels.
        return self.recorded(200, GCE + "zones_us-central1-a_instances_lcnode-001.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_gone(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.recorded(404, GCE + "zones_us-central1-b_instances_libcloud-lb-demo-www-002.json")


def gce_error(status: int, reason: str, message: str) -> Reply:
    """Hand-written in the envelope of GCE's recorded errors (libcloud's recorded notFound)."""
    body = {"error": {"errors": [{"domain": "global", "reason": reason, "message": message}], "code": status}}
    return status, json.dumps(body), {"content-type": "application/json"}, "Error"


@pytest.fixture(scope="module")
def service_account() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "skyfleet-test",
            "private_key_id": CANARY,
            "private_key": pem,
            "client_email": "skyfleet@skyfleet-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.fixture
async def connector(monkeypatch: pytest.MonkeyPatch, service_account: str) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(GCENodeDriver.connectionCls, "conn_class", GCEMockHttp)
    monkeypatch.setattr(GoogleBaseAuthConnection, "conn_class", GoogleTokenMockHttp)
    GCEMockHttp.reset()
    config = CredentialConfig(
        name="gcp",
        namespace="team-a",
        provider="gce",
        region="us-central1",
        parameters={"zone": "us-central1-a"},
        secret={"service_account.json": service_account, "canary": CANARY},
    )
    connector = LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    yield connector
    await connector.close()


def request(uid: str, name: str | None = None, namespace: str = "team-a", cluster: str = CLUSTER) -> CreateRequest:
    return CreateRequest(
        name=name or f"shop-web-{uid}",
        image_id="projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts",
        size_id="e2-small",
        user_data="#cloud-config\n",
        owner=OwnerTags(cluster, uid, namespace=namespace, deployment="shop", instance=name or uid),
    )


def test_label_keys_follow_gce_rules() -> None:
    assert label_key(OwnerTags.INSTANCE_UID) == "skyfleet_instance-uid"
    assert label_key("Team.Name/X") == "team_name_x"


async def test_create_sends_labels_userdata_and_request_id(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-3"))

    lookup = GCEMockHttp.sent[0]
    assert lookup.query["filter"] == (
        '(labels.skyfleet_cluster-id = "cluster-test") AND (labels.skyfleet_instance-uid = "uid-3")'
    )
    (insert,) = [s for s in GCEMockHttp.sent if s.method == "POST"]
    payload = insert.json()
    assert payload["labels"]["skyfleet_instance-uid"] == "uid-3"
    assert payload["metadata"]["items"] == [{"key": "user-data", "value": "#cloud-config\n"}]
    assert payload["machineType"] == "zones/us-central1-a/machineTypes/e2-small"
    assert uuid.UUID(insert.query["requestId"]).version == 5
    assert insert.headers["Authorization"] == "Bearer ya29.test-access-token"
    name = vm_name("shop-web-uid-3", cluster_id=CLUSTER, namespace="team-a")
    assert payload["name"] == name
    assert payload["disks"][0]["initializeParams"]["sourceImage"] == request("uid-3").image_id
    assert payload["networkInterfaces"][0]["network"] == "global/networks/default"
    # The recorded insert operation answers, then the instance is read: libcloud's recording.
    read = GCEMockHttp.sent[-1]
    assert (read.method, read.path) == ("GET", f"{ZONE}/instances/{name}")
    assert node.provider_id == f"us-central1-a/{name}"
    assert node.state is NodeState.PENDING  # PROVISIONING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"
    assert (node.public_ips, node.private_ips) == (("23.236.58.15",), ("10.240.72.75",))


async def test_disk_gib_sizes_the_boot_disk(connector: LibcloudConnector) -> None:
    await connector.create(dataclasses.replace(request("uid-3"), disk_gib=80))

    (insert,) = [s for s in GCEMockHttp.sent if s.method == "POST"]
    assert insert.path.endswith("/zones/us-central1-a/instances")
    (disk,) = insert.json()["disks"]
    assert disk["boot"] is True
    assert disk["initializeParams"] == {
        "sourceImage": "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts",
        "diskSizeGb": "80",
    }


async def test_without_disk_gib_the_boot_disk_takes_the_images_size(connector: LibcloudConnector) -> None:
    await connector.create(request("uid-3"))

    (insert,) = [s for s in GCEMockHttp.sent if s.method == "POST"]
    assert "diskSizeGb" not in insert.json()["disks"][0]["initializeParams"]


async def test_same_deployment_name_in_two_namespaces_makes_two_vms(connector: LibcloudConnector) -> None:
    first = await connector.create(request("uid-a", name="shop-web-0", namespace="team-a"))
    second = await connector.create(request("uid-b", name="shop-web-0", namespace="team-b"))

    assert first.provider_id != second.provider_id
    assert {i["labels"]["skyfleet_namespace"] for i in GCEMockHttp.instances.values()} == {"team-a", "team-b"}


async def test_a_deployment_name_starting_with_a_digit_makes_a_valid_gce_name(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-7", name="1shop-web-0"))

    (made,) = GCEMockHttp.instances
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", made)
    assert node.provider_id == f"us-central1-a/{made}"
    assert node.tags[OwnerTags.INSTANCE] == "1shop-web-0"


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [("prod.eu", "prod_eu"), ("Prod", "prod"), ("prod-eu", "prod.eu"), ("x" * 60 + "a", "x" * 60 + "b")],
)
async def test_cluster_ids_that_differ_never_share_a_label(
    connector: LibcloudConnector, mine: str, theirs: str
) -> None:
    await connector.create(request("uid-8", name="shop-web-8", cluster=mine))

    assert label_value(mine) != label_value(theirs)
    assert len(label_value(mine)) <= 63
    assert await connector.list_cluster(theirs) == []
    (listed,) = await connector.list_cluster(mine)
    assert listed.tags[OwnerTags.CLUSTER_ID] in (mine, label_value(mine))  # the digest spelling when too long
    # What a VM's labels read back as identifies it again: an orphan is destroyed by those.
    recovered = OwnerTags.from_tags(listed.tags)
    assert recovered is not None
    await connector.destroy(listed.provider_id, recovered)


async def test_list_cluster_uses_label_filter_across_zones_and_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == [
        "us-central1-a/node-name",
        "us-central2-a/libcloud-demo-multiple-nodes-001",
    ]
    assert [n.state for n in nodes] == [NodeState.RUNNING, NodeState.STOPPED]  # RUNNING, SUSPENDED
    assert [n.tags[OwnerTags.INSTANCE_UID] for n in nodes] == ["uid-1", "uid-2"]
    assert (nodes[0].public_ips, nodes[0].private_ips) == (("23.236.58.15",), ("10.240.72.75",))
    assert nodes[0].size_id == "n1-standard-1"
    listings = [s for s in GCEMockHttp.sent if s.path.endswith("/aggregated/instances")]
    assert [s.query.get("pageToken") for s in listings] == [None, "page-2"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    deletes = await destroyed(
        connector,
        GCEMockHttp,
        ours="us-central1-a/shop-web-1",
        foreign="us-central1-a/hand-made",
        missing="us-central1-a/gone",
    )
    assert deletes == ["/compute/v1/projects/skyfleet-test/zones/us-central1-a/instances/shop-web-1"]


async def test_release_sets_the_labels_but_the_identity_and_waits_for_it(connector: LibcloudConnector) -> None:
    await release_refusals(
        connector,
        GCEMockHttp,
        ours="us-central1-a/shop-web-1",
        foreign="us-central1-a/hand-made",
        missing="us-central1-a/gone",
        uid="uid-1",
    )

    await connector.release("us-central1-a/shop-web-1", owner("uid-1"))

    set_labels, wait = changes(GCEMockHttp)
    assert (set_labels.method, set_labels.path) == ("POST", f"{ZONE}/instances/shop-web-1/setLabels")
    assert set_labels.json() == {
        "labels": {
            "skyfleet_namespace": "team-a",
            "skyfleet_deployment": "shop",
            "skyfleet_instance": "uid-1",
            "tier": "web",
        },
        "labelFingerprint": "42WmSpB8rSM=",
    }
    assert (wait.method, wait.path) == ("POST", f"{ZONE}/operations/{SET_LABELS_OP}/wait")


async def test_release_retries_when_the_labels_change_under_it(connector: LibcloudConnector) -> None:
    GCEMockHttp.reset("STALE_FINGERPRINT")

    await connector.release("us-central1-a/shop-web-1", owner("uid-1"))

    assert [s.path.rsplit("/", 1)[-1] for s in changes(GCEMockHttp)] == ["setLabels", "setLabels", "wait"]
    reads = [s for s in GCEMockHttp.sent if s.method == "GET"]
    assert len(reads) == 4  # each attempt: the ownership check, then the labels and their fingerprint


@pytest.mark.parametrize(
    ("scenario", "expected", "attempts"), [("RATE_LIMITED", Throttled, 2), ("QUOTA", QuotaExceeded, 1)]
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], attempts: int
) -> None:
    await create_fails_as(connector, GCEMockHttp, request("uid-3"), scenario, expected, attempts=attempts)


async def test_closing_the_connector_removes_the_cached_access_token(connector: LibcloudConnector) -> None:
    await connector.create(request("uid-3"))  # authenticates, so libcloud caches a token
    token_dir = Path(connector.adapter.token_dir())
    assert (token_dir / "token.json").exists()
    await connector.close()
    assert not token_dir.exists()  # noqa: ASYNC240 - no access token is left behind on disk


async def test_sizes_come_from_the_zones_machine_types(connector: LibcloudConnector) -> None:
    # libcloud's recording of GET zones/us-central1-a/machineTypes: 23 types.
    sizes = await connector.list_sizes()
    assert len(sizes) == 23
    chosen = await connector.resolve_size(cpu=2, memory_mib=4096)
    assert (chosen.id, chosen.vcpus, chosen.memory_mib) == ("n1-standard-2", 2.0, 7680)
    (listing,) = [s for s in GCEMockHttp.sent if s.path.endswith("/machineTypes")]
    assert (listing.method, listing.path) == (
        "GET",
        "/compute/v1/projects/skyfleet-test/zones/us-central1-a/machineTypes",
    )


async def test_create_puts_the_vm_in_the_requested_subnetwork(connector: LibcloudConnector) -> None:
    subnet = "regions/us-central1/subnetworks/builders"

    await connector.create(dataclasses.replace(request("uid-9"), subnet=subnet))

    (insert,) = [s for s in GCEMockHttp.sent if s.method == "POST"]
    assert insert.json()["networkInterfaces"][0]["subnetwork"] == subnet
    assert connector.capabilities.subnet


async def test_an_instance_gone_before_its_delete_counts_as_deleted(connector: LibcloudConnector) -> None:
    GCEMockHttp.reset("GONE_ON_DELETE")  # GCE's recorded notFound answers the DELETE

    await connector.destroy("us-central1-a/shop-web-1", owner("uid-1"))

    assert [(s.method, s.path) for s in changes(GCEMockHttp)] == [("DELETE", f"{ZONE}/instances/shop-web-1")]
