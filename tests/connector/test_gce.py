"""GCE adapter against recorded Compute Engine v1 responses, service-account auth included."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from libcloud.common.google import GoogleBaseAuthConnection
from libcloud.compute.drivers.gce import GCENodeDriver

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    QuotaExceeded,
    Throttled,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.adapters.gce import label_key
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector

BASE = "_compute_v1_projects_skyfleet_test"
ZONE = "/compute/v1/projects/skyfleet-test/zones/us-central1-a"


class GoogleTokenMockHttp(RecordedHttp):
    provider = "gce"

    def _token(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "token.json")

    _o_oauth2_token = _token


class GCEMockHttp(RecordedHttp):
    provider = "gce"

    def _filter(self) -> str:
        return self.sent[-1].query.get("filter", "")

    def _compute_v1_projects_skyfleet_test_aggregated_instances(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if self._filter() == '(labels.skyfleet_cluster-id = "cluster-test")':
            page = 2 if self.sent[-1].query.get("pageToken") == "page-2" else 1
            return self.reply(200, f"aggregated_cluster_page_{page}.json")
        return self.reply(200, "aggregated_empty.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if self.type == "RATE_LIMITED":
            return self.reply(403, "error_rate_limit.json")
        if self.type == "QUOTA":
            return self.reply(403, "error_quota.json")
        return self.reply(200, "insert_operation.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_shop_web_uid_3(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(200, "instance_new.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_shop_web_1(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(200, "delete_operation.json" if method == "DELETE" else "instance_1.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_shop_web_1_setLabels(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        first = len([s for s in self.sent if s.path.endswith("/setLabels")]) == 1
        if self.type == "STALE_FINGERPRINT" and first:
            return self.reply(412, "error_fingerprint.json")
        return self.reply(200, "setlabels_operation.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_operations_operation_3_wait(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(200, "setlabels_done.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_hand_made(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(200, "instance_foreign.json")

    def _compute_v1_projects_skyfleet_test_zones_us_central1_a_instances_gone(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(404, "error_not_found.json")


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


def request(uid: str) -> CreateRequest:
    return CreateRequest(
        name=f"shop-web-{uid}",
        image_id="projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts",
        size_id="e2-small",
        user_data="#cloud-config\n",
        tags=owner(uid).to_tags(),
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
    assert node.provider_id == "us-central1-a/shop-web-uid-3"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"


async def test_list_cluster_uses_label_filter_across_zones_and_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["us-central1-a/shop-web-1", "us-central1-b/shop-web-2"]
    assert [n.state for n in nodes] == [NodeState.RUNNING, NodeState.PENDING]
    assert nodes[0].public_ips == ("34.66.1.7",)


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("us-central1-a/hand-made", owner("uid-1"))
    await connector.destroy("us-central1-a/gone", owner("uid-1"))
    await connector.destroy("us-central1-a/shop-web-1", owner("uid-1"))

    deletes = [s.path for s in GCEMockHttp.sent if s.method == "DELETE"]
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
    assert (wait.method, wait.path) == ("POST", f"{ZONE}/operations/operation-3/wait")


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
    GCEMockHttp.reset(scenario)

    with pytest.raises(expected) as caught:
        await connector.create(request("uid-3"))

    assert len([s for s in GCEMockHttp.sent if s.method == "POST"]) == attempts
    assert CANARY not in repr(caught.value)


async def test_closing_the_connector_removes_the_cached_access_token(connector: LibcloudConnector) -> None:
    await connector.create(request("uid-3"))  # authenticates, so libcloud caches a token
    token_dir = Path(connector.adapter._token_dir)
    assert (token_dir / "token.json").exists()
    await connector.close()
    assert not token_dir.exists()  # noqa: ASYNC240 - no access token is left behind on disk
