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
from tests.connector.recorded import (
    RecordedHttp,
    Reply,
    Sent,
    changes,
    create_fails_as,
    destroyed,
    recording,
    release_refusals,
)

pytestmark = pytest.mark.connector

GROUP = "/subscriptions/0000-sub/resourceGroups/shop-rg"
VMS = f"{GROUP}/providers/Microsoft.Compute/virtualMachines"


# libcloud's recordings of Azure Resource Manager (azure_arm/). Our owner tags are written into
# the recorded resources' ``tags`` map, where ARM returns them. libcloud ships no ARM error body.
AZ = "azure_arm/"
RECORDED_GROUP = AZ + "_subscriptions_99999999_resourceGroups_000000_providers_"
RECORDED_VM = RECORDED_GROUP + "Microsoft_Compute_virtualMachines_test_node_1.json"
RECORDED_VIEW = RECORDED_GROUP + "Microsoft_Compute_virtualMachines_test_node_1_InstanceView.json"
RECORDED_NIC = RECORDED_GROUP + "Microsoft_Network_networkInterfaces_test_node_1_nic.json"
RECORDED_TEST_NIC = (
    AZ + "_subscriptions_99999999_resourceGroups_REVIZOR_providers_Microsoft_Network_networkInterfaces_test_nic.json"
)
RECORDED_LIST = AZ + "_subscriptions_99999999_providers_Microsoft_Compute_virtualMachines.json"
NO_ERRORS = "libcloud ships no recorded ARM error body"


def azure_tags(uid: str) -> dict[str, str]:
    return {k.replace("skyfleet.io/", "skyfleet.io_"): v for k, v in owner(uid).to_tags().items()}


class AzureMockHttp(RecordedHttp):
    """Recorded answers for the recordings' VMs, and a stateful resource group for new ones: PUT
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
                return self.handwritten(404, "error_not_found.json", why=NO_ERRORS)
            return 200, json.dumps(current), {"content-type": "application/json"}, "OK"
        assert method == "PUT", method
        is_vm = path.rsplit("/", 2)[-2] == "virtualMachines"
        if is_vm:
            if self.type == "THROTTLED":
                return self.handwritten(429, "error_throttled.json", why=NO_ERRORS, headers={"retry-after": "0"})
            if self.type == "QUOTA":
                return self.handwritten(409, "error_quota.json", why=NO_ERRORS)
            if self.type == "CAPACITY":
                return self.handwritten(409, "error_capacity.json", why=NO_ERRORS)
        if current is not None and headers.get("If-None-Match") == "*":
            # Hand-written: libcloud ships no recorded ARM error body (412 PreconditionFailed).
            return 412, json.dumps({"error": {"code": "PreconditionFailed"}}), {}, "Precondition Failed"
        # ARM answers a PUT with the whole resource: libcloud's recorded VM or NIC, carrying
        # what we sent (name, location, tags, zones, properties) and still being created.
        sent = json.loads(body)
        stored = recording(RECORDED_VM if is_vm else RECORDED_NIC)
        properties = {**stored["properties"], **sent.get("properties", {}), "provisioningState": "Creating"}
        if not is_vm:  # the NIC keeps its recorded ipConfigurations, private address and all
            properties["ipConfigurations"] = stored["properties"]["ipConfigurations"]
        stored.update({**sent, "id": path, "name": path.rsplit("/", 1)[-1], "properties": properties})
        self.resources[path] = stored
        return 201 if current is None else 200, json.dumps(stored), {"content-type": "application/json"}, "Created"

    def _tenant_1_oauth2_token(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.recorded(200, AZ + "_77777777_7777_7777_7777_777777777777_oauth2_token.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if "$skiptoken" not in self.sent[-1].query:

            def first(listing: dict[str, Any]) -> None:
                # The recorded page 1 (test-node-1), ours; its nextLink, with the recorded skip
                # token, points at this resource group's list instead of the subscription's.
                listing["value"][0]["tags"] = azure_tags("uid-1")
                listing["nextLink"] = f"https://management.azure.com:443{VMS}?" + listing["nextLink"].split("?", 1)[1]

            return self.recorded(200, RECORDED_LIST, first)
        second = RECORDED_LIST.replace(".json", "_1.json")  # the recorded last page: test-node-2
        return self.recorded(200, second, lambda b: b["value"][0].update(tags=azure_tags("uid-2")))

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Network_networkInterfaces(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        # The group's NICs: libcloud's recorded NIC list envelope, holding its recorded NICs of
        # test-node-1 and test-node-2 (their addresses are in ipConfigurations).
        nics = [
            recording(RECORDED_GROUP + f"Microsoft_Network_networkInterfaces_test_node_{i}_nic.json") for i in (1, 2)
        ]
        return self.recorded(
            200,
            AZ + "_subscriptions_99999999_providers_Microsoft_Network_networkInterfaces.json",
            lambda b: b.update(value=nics),
        )

    def _subscriptions_99999999_9999_9999_9999_999999999999_resourceGroups_0000_providers_Microsoft_Network_networkInterfaces_test_nic(  # noqa: E501
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        # The NIC the recorded VM names: libcloud's recorded test-nic (private 172.20.2.4).
        return self.recorded(200, RECORDED_TEST_NIC)

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_shop_web_1(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if method == "DELETE":
            if self.type == "GONE_ON_DELETE":
                return self.handwritten(404, "error_not_found.json", why=NO_ERRORS)
            return 202, "", {}, "Accepted"  # ARM accepts a delete with 202 and no body

        # GET ($expand=instanceView), and PATCH answers the VM too: libcloud's recorded VM with
        # its recorded instance view embedded, ours, with a tag of the user's.
        def ours(vm: dict[str, Any]) -> None:
            vm.update(id=f"{VMS}/shop-web-1", name="shop-web-1", tags={**azure_tags("uid-1"), "cost-center": "shop"})
            vm["properties"]["instanceView"] = recording(RECORDED_VIEW)

        return self.recorded(200, RECORDED_VM, ours)

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_hand_made(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        # Someone else's VM: libcloud's recording as it is (tagged tag_key1).
        return self.recorded(200, RECORDED_VM)

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_gone(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.handwritten(404, "error_not_found.json", why=NO_ERRORS)


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
    return CreateRequest(
        name=name or f"shop-web-{uid}",
        image_id="Canonical:ubuntu-24_04-lts:server:latest",
        size_id="Standard_B1s",
        zone="1",
        user_data="#cloud-config\n",
        owner=OwnerTags(CLUSTER, uid, namespace=namespace, deployment="shop", instance=name or uid),
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
    assert vm["properties"]["hardwareProfile"] == {"vmSize": "Standard_B1s"}
    assert vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"] == puts[0].path
    nic = puts[0].json()["properties"]["ipConfigurations"][0]["properties"]
    assert nic["subnet"]["id"] == f"{GROUP}/providers/Microsoft.Network/virtualNetworks/vnet/subnets/default"
    assert puts[1].headers["Authorization"] == "Bearer " + "3" * 55  # libcloud's recorded token
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

    assert [n.name for n in nodes] == ["test-node-1", "test-node-2"]
    assert [n.tags[OwnerTags.INSTANCE_UID] for n in nodes] == ["uid-1", "uid-2"]
    assert nodes[0].provider_id.endswith(
        "/resourceGroups/000000/providers/Microsoft.Compute/virtualMachines/test-node-1"
    )
    assert (nodes[0].size_id, nodes[0].image_id) == ("Standard_A1", "OpenLogic:CentOS:7.3:latest")
    # Addresses live on the VMs' NICs, not on the VMs: one NIC list of the group finds them.
    assert [n.private_ips for n in nodes] == [("10.0.0.1",), ("10.0.0.2",)]
    (nic_list,) = [s for s in AzureMockHttp.sent if s.path.endswith("/Microsoft.Network/networkInterfaces")]
    assert (nic_list.method, nic_list.path, nic_list.query) == (
        "GET",
        f"{GROUP}/providers/Microsoft.Network/networkInterfaces",
        {"api-version": "2023-09-01"},
    )
    # The recorded provisioningState "Running" is none ARM documents: read as unknown, not as running.
    assert [n.state for n in nodes] == [NodeState.UNKNOWN, NodeState.UNKNOWN]
    listings = [s for s in AzureMockHttp.sent if s.path == VMS]
    skip = "1!/Subscriptions/99999999-9999-9999-9999-999999999999/ResourceGroups/000000/VMs/"
    skip += "DDFEBF64-E92B-4A50-9949-6E44BFC61D4G"  # the recorded skip token
    assert [s.query.get("$skiptoken") for s in listings] == [None, skip]
    assert listings[1].query["api-version"] == "2021-11-01"  # the nextLink is followed as given


async def test_disk_gib_sizes_the_os_disk(connector: LibcloudConnector) -> None:
    await connector.create(dataclasses.replace(request("uid-3"), disk_gib=64))

    vm = [s for s in AzureMockHttp.sent if s.method == "PUT"][-1]
    assert "/providers/Microsoft.Compute/virtualMachines/" in vm.path
    os_disk = vm.json()["properties"]["storageProfile"]["osDisk"]
    assert os_disk == {"createOption": "FromImage", "deleteOption": "Delete", "diskSizeGB": 64}


async def test_create_adopts_existing_vm(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-2"))

    assert node.name == "test-node-2"
    assert not [s for s in AzureMockHttp.sent if s.method == "PUT"]


async def test_destroy_checks_ownership(connector: LibcloudConnector) -> None:
    deletes = await destroyed(
        connector, AzureMockHttp, ours=f"{VMS}/shop-web-1", foreign=f"{VMS}/hand-made", missing=f"{VMS}/gone"
    )
    assert deletes == [f"{VMS}/shop-web-1"]


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
    name = cloud_name("shop-web-uid-3")

    def vm_put(sent: Sent) -> bool:
        return sent.method == "PUT" and sent.path.endswith(f"/{name}")

    await create_fails_as(
        connector, AzureMockHttp, request("uid-3"), scenario, expected, attempts=attempts, creating=vm_put
    )


async def test_a_recorded_vm_is_described_with_its_power_state(connector: LibcloudConnector) -> None:
    node = await connector.describe(f"{VMS}/shop-web-1")

    assert node is not None
    (read,) = [s for s in AzureMockHttp.sent if s.path == f"{VMS}/shop-web-1"]
    assert read.query == {"api-version": "2023-09-01", "$expand": "instanceView"}
    assert node.state is NodeState.RUNNING  # PowerState/running in the recorded instance view
    assert (node.size_id, node.region) == ("Standard_A1", "eastus")
    assert node.private_ips == ("172.20.2.4",)  # from the primary NIC the VM names
    (nic,) = [s for s in AzureMockHttp.sent if "/networkInterfaces/" in s.path]
    assert nic.path.endswith("/resourceGroups/0000/providers/Microsoft.Network/networkInterfaces/test-nic")


async def test_a_vm_gone_before_its_delete_counts_as_deleted(connector: LibcloudConnector) -> None:
    AzureMockHttp.reset("GONE_ON_DELETE")

    await connector.destroy(f"{VMS}/shop-web-1", owner("uid-1"))

    assert [(s.method, s.path) for s in changes(AzureMockHttp)] == [("DELETE", f"{VMS}/shop-web-1")]
