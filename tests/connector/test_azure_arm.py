"""Azure Resource Manager adapter against recorded responses, OAuth login included."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from libcloud.compute.drivers.azure_arm import AzureNodeDriver

from skyfleet.connectors import (
    CapacityUnavailable,
    CreateRequest,
    CredentialConfig,
    NodeState,
    OwnershipMismatch,
    OwnerTags,
    QuotaExceeded,
    Throttled,
    vm_name,
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner, provenance
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector

GROUP = "/subscriptions/0000-sub/resourceGroups/shop-rg"
VMS = f"{GROUP}/providers/Microsoft.Compute/virtualMachines"


class AzureMockHttp(RecordedHttp):
    """Recorded answers for the fixtures' VMs, and a stateful resource group for new ones: PUT
    creates or replaces (ARM's semantics) unless it carries ``If-None-Match: *``, then an
    existing resource answers 412."""

    provider = "azure_arm"
    resources: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def reset(cls, scenario: str | None = None) -> None:
        super().reset(scenario)
        cls.resources = {}

    def _get_method_name(self, type: str | None, use_param: str | None, qs: Any, path: str) -> str:
        name = super()._get_method_name(type, use_param, qs, path)
        if not hasattr(self, name) and re.search(r"/(virtualMachines|networkInterfaces)/[^/]+$", path):
            return "_resource"
        return name

    def _resource(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:  # noqa: PLR0911
        path = urlsplit(url).path
        current = self.resources.get(path)
        if method == "GET":
            if current is None:
                return self.reply(404, "error_not_found.json")
            return 200, json.dumps(current), {"content-type": "application/json"}, "OK"
        assert method == "PUT", method
        if path.rsplit("/", 2)[-2] == "virtualMachines":
            if self.type == "THROTTLED":
                return self.reply(429, "error_throttled.json", {"retry-after": "0"})
            if self.type == "QUOTA":
                return self.reply(409, "error_quota.json")
            if self.type == "CAPACITY":
                return self.reply(409, "error_capacity.json")
        if current is not None and headers.get("If-None-Match") == "*":
            return 412, json.dumps({"error": {"code": "PreconditionFailed"}}), {}, "Precondition Failed"
        sent = json.loads(body)
        properties = {**sent.get("properties", {}), "provisioningState": "Creating"}
        stored = {**sent, "id": path, "name": path.rsplit("/", 1)[-1], "properties": properties}
        self.resources[path] = stored
        return 201 if current is None else 200, json.dumps(stored), {"content-type": "application/json"}, "Created"

    def _tenant_1_oauth2_token(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "token.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        page = 2 if self.sent[-1].query.get("$skiptoken") == "page2" else 1
        return self.reply(200, f"vms_page_{page}.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_shop_web_1(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if method == "DELETE":
            return 202, "", {}, "Accepted"
        return self.reply(200, "vm_1.json")  # GET, and PATCH answers the VM too

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_hand_made(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(200, "vm_foreign.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_gone(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(404, "error_not_found.json")


@pytest.fixture
async def connector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[LibcloudConnector]:
    monkeypatch.setattr(AzureNodeDriver.connectionCls, "conn_class", AzureMockHttp)
    AzureMockHttp.reset()
    config = CredentialConfig(
        name="azure",
        namespace="team-a",
        provider="azure_arm",
        region="westeurope",
        parameters={
            "resource_group": "shop-rg",
            "subnet_id": f"{GROUP}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default",
            "ssh_public_key": "ssh-ed25519 AAAA test",
        },
        secret={"tenant_id": "tenant-1", "subscription_id": "0000-sub", "client_id": "app-1", "client_secret": CANARY},
    )
    connector = LibcloudConnector(config, retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    yield connector
    await connector.close()


def request(uid: str, name: str | None = None, namespace: str = "team-a") -> CreateRequest:
    tags = OwnerTags(CLUSTER, uid, namespace=namespace, deployment="shop", instance=name or uid).to_tags()
    return CreateRequest(
        name=name or f"shop-web-{uid}",
        image_id="Canonical:ubuntu-24_04-lts:server:latest",
        size_id="Standard_B1s",
        zone="1",
        user_data="#cloud-config\n",
        tags=tags,
    )


def cloud_name(instance: str, namespace: str = "team-a") -> str:
    return vm_name(instance, cluster_id=CLUSTER, namespace=namespace, max_length=64)


async def test_create_puts_nic_then_vm_with_tags_and_custom_data(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-3"))

    name = cloud_name("shop-web-uid-3")
    puts = [s for s in AzureMockHttp.sent if s.method == "PUT"]
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == [f"{name}-nic", name]
    # Creates only: ARM refuses to overwrite a resource that appeared since it was read.
    assert [p.headers.get("If-None-Match") for p in puts] == ["*", "*"]
    vm = puts[1].json()
    assert vm["tags"]["skyfleet.io_instance-uid"] == "uid-3"
    assert base64.b64decode(vm["properties"]["osProfile"]["customData"]).decode() == "#cloud-config\n"
    assert vm["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert vm["properties"]["storageProfile"]["imageReference"]["offer"] == "ubuntu-24_04-lts"
    assert vm["zones"] == ["1"]
    assert puts[1].headers["Authorization"] == "Bearer eyJ0eXAi.test.token"
    login = AzureMockHttp.sent[0]
    assert login.path == "/tenant-1/oauth2/token"
    assert node.provider_id == f"{VMS}/{name}"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"


async def test_same_deployment_name_in_two_namespaces_makes_two_vms(connector: LibcloudConnector) -> None:
    first = await connector.create(request("uid-a", name="shop-web-0", namespace="team-a"))
    second = await connector.create(request("uid-b", name="shop-web-0", namespace="team-b"))

    assert first.provider_id != second.provider_id
    vms = {p.rsplit("/", 1)[-1]: r for p, r in AzureMockHttp.resources.items() if "/virtualMachines/" in p}
    assert set(vms) == {cloud_name("shop-web-0", "team-a"), cloud_name("shop-web-0", "team-b")}
    # The first tenant's VM still carries its own identity: nothing rewrote it.
    assert vms[cloud_name("shop-web-0", "team-a")]["tags"]["skyfleet.io_instance-uid"] == "uid-a"
    assert vms[cloud_name("shop-web-0", "team-b")]["tags"]["skyfleet.io_instance-uid"] == "uid-b"


async def test_a_name_held_by_another_instance_is_refused_without_a_write(connector: LibcloudConnector) -> None:
    """Same installation, namespace and name, another Instance UID (the VM of an Instance that was
    deleted and made again, still being torn down): refused, never taken over."""
    await connector.create(request("uid-old", name="shop-web-0"))
    before = json.dumps(AzureMockHttp.resources, sort_keys=True)
    AzureMockHttp.sent = []

    with pytest.raises(OwnershipMismatch, match="not this Instance"):
        await connector.create(request("uid-new", name="shop-web-0"))

    assert changes(AzureMockHttp) == []
    assert json.dumps(AzureMockHttp.resources, sort_keys=True) == before


async def test_a_vm_that_appears_between_read_and_write_is_not_overwritten(
    connector: LibcloudConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A VM created by someone else after the adapter looked: If-None-Match makes ARM refuse."""
    name = cloud_name("shop-web-0")
    path = f"{VMS}/{name}"
    original = AzureMockHttp._resource

    def racing(self: AzureMockHttp, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        if method == "PUT" and urlsplit(url).path == path and path not in self.resources:
            self.resources[path] = {"id": path, "name": name, "tags": {"owner": "someone-else"}, "properties": {}}
        return original(self, method, url, body, headers)

    monkeypatch.setattr(AzureMockHttp, "_resource", racing)

    with pytest.raises(OwnershipMismatch):
        await connector.create(request("uid-a", name="shop-web-0"))

    assert AzureMockHttp.resources[path]["tags"] == {"owner": "someone-else"}


async def test_lookup_follows_next_link_and_filters_client_side(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.name for n in nodes] == ["shop-web-1", "shop-web-2"]
    listings = [s for s in AzureMockHttp.sent if s.path == VMS]
    assert [s.query.get("$skiptoken") for s in listings] == [None, "page2"]


async def test_disk_gib_sizes_the_os_disk(connector: LibcloudConnector) -> None:
    await connector.create(dataclasses.replace(request("uid-3"), disk_gib=64))

    vm = [s for s in AzureMockHttp.sent if s.method == "PUT"][-1]
    assert "/providers/Microsoft.Compute/virtualMachines/" in vm.path
    os_disk = vm.json()["properties"]["storageProfile"]["osDisk"]
    assert os_disk == {"createOption": "FromImage", "deleteOption": "Delete", "diskSizeGB": 64}


async def test_create_adopts_existing_vm(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-2"))

    assert node.name == "shop-web-2"
    assert not [s for s in AzureMockHttp.sent if s.method == "PUT"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    with pytest.raises(OwnershipMismatch):
        await connector.destroy(f"{VMS}/hand-made", owner("uid-1"))
    await connector.destroy(f"{VMS}/gone", owner("uid-1"))
    await connector.destroy(f"{VMS}/shop-web-1", owner("uid-1"))

    assert [s.path for s in AzureMockHttp.sent if s.method == "DELETE"] == [f"{VMS}/shop-web-1"]


async def test_release_patches_the_vm_with_every_tag_but_the_identity(connector: LibcloudConnector) -> None:
    await release_refusals(
        connector,
        AzureMockHttp,
        ours=f"{VMS}/shop-web-1",
        foreign=f"{VMS}/hand-made",
        missing=f"{VMS}/gone",
        uid="uid-1",
    )

    await connector.release(f"{VMS}/shop-web-1", owner("uid-1"))

    (patch,) = changes(AzureMockHttp)
    assert (patch.method, patch.path, patch.query) == ("PATCH", f"{VMS}/shop-web-1", {"api-version": "2023-09-01"})
    kept = {k.replace("skyfleet.io/", "skyfleet.io_"): v for k, v in provenance("uid-1").items()}
    assert patch.json() == {"tags": {**kept, "cost-center": "shop"}}


@pytest.mark.parametrize(
    ("scenario", "expected", "attempts"),
    [("THROTTLED", Throttled, 2), ("QUOTA", QuotaExceeded, 1), ("CAPACITY", CapacityUnavailable, 1)],
)
async def test_error_mapping(
    connector: LibcloudConnector, scenario: str, expected: type[Exception], attempts: int
) -> None:
    AzureMockHttp.reset(scenario)

    with pytest.raises(expected) as caught:
        await connector.create(request("uid-3"))

    name = cloud_name("shop-web-uid-3")
    vm_puts = [s for s in AzureMockHttp.sent if s.method == "PUT" and s.path.endswith(f"/{name}")]
    assert len(vm_puts) == attempts
    assert CANARY not in repr(caught.value)
