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
    OwnerTags,
    Throttled,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.adapters.linode import LinodeAdapter
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner
from tests.connector.recorded import RecordedHttp, Reply, changes, create_fails_as, destroyed, release_refusals

pytestmark = pytest.mark.connector


# libcloud's recordings of Linode API v4 (linode_v4/). Our owner tags are written into the
# recorded instances' ``tags`` list, where Linode returns an instance's tags.
LV4 = "linode_v4/"
NO_ERRORS = "libcloud ships no recorded Linode error body"


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
            return self._created(sent)
        wanted = [c["tags"] for c in json.loads(self.sent[-1].headers["X-Filter"])["+and"]]
        found = [m for m in self.made if all(t in m["tags"] for t in wanted)]
        return self.recorded(200, LV4 + "list_nodes.json", lambda b: b.update(data=found, results=len(found)))

    def _created(self, sent: dict[str, Any]) -> Reply:
        # libcloud's recorded create answer ("provisioning"), with the label and tags we sent.
        def made(instance: dict[str, Any]) -> None:
            instance.update(id=8000 + len(self.made), label=sent["label"], tags=sent["tags"])
            self.made.append(instance)

        return self.recorded(200, LV4 + "create_node.json", made)

    def _v4_profile(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.handwritten(401, "error_unauthorized.json", why=NO_ERRORS)

    def _v4_linode_types(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, LV4 + "list_types.json")  # disks in MB: 25600 for the nanode

    def _v4_linode_instances(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if self.type == "STATEFUL":
            return self._stateful(method, body)
        if method == "POST":
            if self.type == "RATE_LIMITED":
                return self.handwritten(429, "error_rate_limit.json", why=NO_ERRORS)
            if self.type == "BAD_TYPE":
                return self.handwritten(400, "error_bad_type.json", why=NO_ERRORS)
            return self._created(json.loads(body))
        wanted = json.loads(self.sent[-1].headers["X-Filter"])["+and"]
        if wanted != [{"tags": "sf-cluster=cluster-test"}]:
            return self.recorded(200, LV4 + "list_nodes.json", lambda b: b.update(data=[], results=0))
        page = int(self.sent[-1].query["page"])

        def paged(listing: dict[str, Any]) -> None:
            # libcloud's recorded list, its two instances ours and served one per page.
            instance = listing["data"][page - 1]
            instance["tags"] = adapter().tag_strings(owner(f"uid-{page}").to_tags())
            listing.update(data=[instance], page=page, pages=2, results=2)

        return self.recorded(200, LV4 + "list_nodes.json", paged)

    def _v4_linode_instances_7001(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "DELETE":
            if self.type == "GONE_ON_DELETE":
                return self.handwritten(404, "error_not_found.json", why=NO_ERRORS)
            return 200, "{}", {"content-type": "application/json"}, "OK"  # Linode answers a delete with {}
        # GET, and PUT answers the instance too: libcloud's recording, ours, with a tag of the user's.
        mine = [*adapter().tag_strings(owner("uid-1").to_tags()), "prod"]
        return self.recorded(200, LV4 + "ex_get_node.json", lambda b: b.update(id=7001, tags=mine))

    def _v4_linode_instances_9999(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        # Someone else's instance: libcloud's recording as it is, tagged "testing".
        return self.recorded(200, LV4 + "ex_get_node.json", lambda b: b.update(id=9999))

    def _v4_linode_instances_404(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.handwritten(404, "error_not_found.json", why=NO_ERRORS)


def adapter() -> LinodeAdapter:
    return LinodeAdapter(CredentialConfig(name="l", namespace="team-a", provider="linode", secret={"token": "t"}))


def linode_error(status: int, field: str, reason: str) -> Reply:
    # Hand-written: libcloud ships no recorded Linode error body; the shape is Linode's documented one.
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
        owner=owner(uid),
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
    assert (create.method, create.path) == ("POST", "/v4/linode/instances")
    assert payload["label"] == vm_name("shop-web-uid-3", cluster_id=CLUSTER, namespace="team-a")
    assert payload["image"] == "linode/ubuntu24.04"
    assert payload["type"] == "g6-standard-1"
    assert payload["region"] == "eu-central"
    assert len(payload["root_pass"]) >= 32
    # Parsed from libcloud's recorded answer: "provisioning", its addresses, its region.
    assert node.provider_id == "8000"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"
    assert node.zone == "eu-west"
    assert (node.public_ips, node.private_ips) == (("45.32.179.25",), ("192.168.206.100",))


async def test_list_cluster_filters_server_side_across_pages(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.provider_id for n in nodes] == ["22344420", "22344421"]
    assert [n.tags[OwnerTags.INSTANCE_UID] for n in nodes] == ["uid-1", "uid-2"]
    assert [n.state for n in nodes] == [NodeState.RUNNING, NodeState.RUNNING]
    assert (nodes[0].public_ips, nodes[0].private_ips) == (("138.89.34.81",), ("192.168.1.230",))
    assert [s.query["page"] for s in LinodeMockHttp.sent] == ["1", "2"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    deletes = await destroyed(connector, LinodeMockHttp, ours="7001", foreign="9999", missing="404")
    assert deletes == ["/v4/linode/instances/7001"]


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
        owner=OwnerTags(cluster, uid, namespace=namespace, deployment=name.rsplit("-", 2)[0], instance=name),
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
    await create_fails_as(connector, LinodeMockHttp, request("uid-3"), scenario, expected, attempts=attempts)


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


async def test_an_instance_gone_before_its_delete_counts_as_deleted(connector: LibcloudConnector) -> None:
    LinodeMockHttp.reset("GONE_ON_DELETE")

    await connector.destroy("7001", owner("uid-1"))

    assert [(s.method, s.path) for s in changes(LinodeMockHttp)] == [("DELETE", "/v4/linode/instances/7001")]
