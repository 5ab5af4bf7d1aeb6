"""Linode adapter against recorded API v4 responses."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from libcloud.compute.drivers.linode import LinodeNodeDriverV4

from skyfleet.connectors import (
    CreateRequest,
    CredentialConfig,
    InvalidCredentials,
    InvalidRequest,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    Throttled,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector


class LinodeMockHttp(RecordedHttp):
    """Recorded answers; in the STATEFUL scenario an account that keeps what is created, with
    Linode's rules: labels unique per account, tags of 3-50 characters, X-Filter on tags."""

    provider = "linode"
    made: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.made = []

    def _stateful(self, method: str, body: str) -> Reply:
        if method == "POST":
            sent = json.loads(body)
            if any(not 3 <= len(t) <= 50 for t in sent["tags"]):
                return linode_error(400, "tags", "Length must be 3-50 characters")
            if any(m["label"] == sent["label"] for m in self.made):
                return linode_error(400, "label", "Label must be unique among your linodes")
            made = {**json.loads(self.fixture("instance_create.json")), "id": 8000 + len(self.made)}
            made.update(label=sent["label"], tags=sent["tags"])
            self.made.append(made)
            return 200, json.dumps(made), {"content-type": "application/json"}, "OK"
        wanted = [c["tags"] for c in json.loads(self.sent[-1].headers["X-Filter"])["+and"]]
        found = [m for m in self.made if all(t in m["tags"] for t in wanted)]
        return 200, json.dumps({"data": found, "page": 1, "pages": 1, "results": len(found)}), {}, "OK"

    def _v4_profile(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(401, "error_unauthorized.json")

    def _v4_linode_types(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, "linode_v4/list_types.json")  # disks in MB: 25600 for the nanode

    def _v4_linode_instances(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "STATEFUL":
            return self._stateful(method, body)
        if method == "POST":
            if self.type == "RATE_LIMITED":
                return self.reply(429, "error_rate_limit.json")
            if self.type == "BAD_TYPE":
                return self.reply(400, "error_bad_type.json")
            return self.reply(200, "instance_create.json")
        wanted = json.loads(self.sent[-1].headers["X-Filter"])["+and"]
        if wanted == [{"tags": "sf-cluster=cluster-test"}]:
            return self.reply(200, f"instances_cluster_page_{self.sent[-1].query['page']}.json")
        return self.reply(200, "instances_empty.json")

    def _v4_linode_instances_7001(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "{}" if method == "DELETE" else "instance_7001.json")  # PUT answers the instance

    def _v4_linode_instances_9999(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "instance_9999.json")

    def _v4_linode_instances_404(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(404, "error_not_found.json")

    def reply(self, status: int, fixture: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        if fixture == "{}":
            return status, "{}", {"content-type": "application/json"}, "OK"
        return super().reply(status, fixture, headers)


def linode_error(status: int, field: str, reason: str) -> Reply:
    return status, json.dumps({"errors": [{"field": field, "reason": reason}]}), {}, "Bad Request"


@pytest.fixture
async def connector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(LinodeNodeDriverV4.connectionCls, "conn_class", LinodeMockHttp)
    LinodeMockHttp.reset()
    config = CredentialConfig(
        name="linode", namespace="team-a", provider="linode", region="eu-central", secret={"token": CANARY}
    )
    connector = LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    yield connector
    await connector.close()


def request(uid: str) -> CreateRequest:
    return CreateRequest(
        name=f"shop-web-{uid}",
        image_id="linode/ubuntu24.04",
        size_id="g6-standard-1",
        user_data="#cloud-config\n",
        tags=owner(uid).to_tags(),
    )


async def test_create_sends_short_tags_and_metadata_userdata(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-3"))

    lookup, create = LinodeMockHttp.sent
    assert json.loads(lookup.headers["X-Filter"]) == {
        "+and": [{"tags": "sf-cluster=cluster-test"}, {"tags": "sf-uid=uid-3"}]
    }
    payload = create.json()
    assert "sf-uid=uid-3" in payload["tags"]
    assert base64.b64decode(payload["metadata"]["user_data"]).decode() == "#cloud-config\n"
    assert payload["region"] == "eu-central"
    assert len(payload["root_pass"]) >= 32
    assert node.provider_id == "7003"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"
    assert node.zone == "eu-central"


async def test_list_cluster_filters_server_side_across_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["7001", "7002"]
    assert [s.query["page"] for s in LinodeMockHttp.sent] == ["1", "2"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy("9999", owner("uid-1"))
    await connector.destroy("404", owner("uid-1"))
    await connector.destroy("7001", owner("uid-1"))

    assert [s.path for s in LinodeMockHttp.sent if s.method == "DELETE"] == ["/v4/linode/instances/7001"]


async def test_release_puts_back_every_tag_but_the_identity(connector: LibcloudConnector) -> None:
    await release_refusals(connector, LinodeMockHttp, ours="7001", foreign="9999", missing="404", uid="uid-1")

    await connector.release("7001", owner("uid-1"))

    (put,) = changes(LinodeMockHttp)
    assert (put.method, put.path) == ("PUT", "/v4/linode/instances/7001")
    assert put.json() == {"tags": ["sf-ns=team-a", "sf-deploy=shop", "sf-instance=uid-1", "prod"]}


def named(uid: str, name: str, namespace: str = "team-a", cluster: str = CLUSTER) -> CreateRequest:
    return CreateRequest(
        name=name,
        image_id="linode/ubuntu24.04",
        size_id="g6-standard-1",
        tags=OwnerTags(cluster, uid, namespace=namespace, deployment=name.rsplit("-", 2)[0], instance=name).to_tags(),
    )


async def test_names_over_38_characters_fit_linode_tags_and_are_found_again(connector: LibcloudConnector) -> None:
    LinodeMockHttp.reset("STATEFUL")
    # The longest name the CRD admits: a 40-character Deployment, a 16-character group, 5 digits.
    long_name = f"{'d' * 40}-{'g' * 16}-99999"
    other = f"{'d' * 40}-{'g' * 16}-99998"

    node = await connector.create(named("uid-l", long_name))
    again = await connector.create(named("uid-l", long_name))
    await connector.create(named("uid-m", other))

    assert again.provider_id == node.provider_id  # the owner-tag lookup found it: no second VM
    assert len(LinodeMockHttp.made) == 2
    tags = [t for m in LinodeMockHttp.made for t in m["tags"]]
    assert all(3 <= len(t) <= 50 for t in tags)
    instance_tags = {m["id"]: next(t for t in m["tags"] if t.startswith("sf-instance=")) for m in LinodeMockHttp.made}
    assert len(set(instance_tags.values())) == 2  # two long names never share a tag
    labels = [m["label"] for m in LinodeMockHttp.made]
    assert all(re.fullmatch(r"[a-z0-9](-?[a-z0-9])*", label) and len(label) <= 64 for label in labels)


async def test_same_deployment_name_in_two_namespaces_makes_two_vms(connector: LibcloudConnector) -> None:
    LinodeMockHttp.reset("STATEFUL")

    first = await connector.create(named("uid-a", "shop-web-0", namespace="team-a"))
    second = await connector.create(named("uid-b", "shop-web-0", namespace="team-b"))

    assert first.provider_id != second.provider_id
    assert len({m["label"] for m in LinodeMockHttp.made}) == 2


@pytest.mark.parametrize(
    ("scenario", "expected", "attempts"), [("RATE_LIMITED", Throttled, 2), ("BAD_TYPE", InvalidRequest, 1)]
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], attempts: int
) -> None:
    LinodeMockHttp.reset(scenario)

    with pytest.raises(expected):
        await connector.create(request("uid-3"))

    assert len([s for s in LinodeMockHttp.sent if s.method == "POST"]) == attempts


async def test_invalid_token(connector: LibcloudConnector) -> None:
    with pytest.raises(InvalidCredentials) as caught:
        await connector.verify()
    assert CANARY not in repr(caught.value)


async def test_the_plan_fixes_the_disk_so_types_are_chosen_by_it(connector: LibcloudConnector) -> None:
    # Linode reports disks in MB; a 30 GiB request passes over the 25 GiB nanode.
    assert (await connector.resolve_size(cpu=1, memory_mib=1024)).id == "g6-nanode-1"
    assert (await connector.resolve_size(cpu=1, memory_mib=1024, disk_gib=30)).id == "g6-standard-1"
    with pytest.raises(InvalidRequest, match="'g6-nanode-1' comes with a 25 GiB disk"):
        await connector.resolve_size(instance_type="g6-nanode-1", disk_gib=30)
    (listing, *_) = [s for s in LinodeMockHttp.sent if s.path == "/v4/linode/types"]
    assert listing.method == "GET"
