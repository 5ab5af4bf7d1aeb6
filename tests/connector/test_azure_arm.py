"""Azure Resource Manager adapter against recorded responses, OAuth login included."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

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
)
from skyfleet.connectors.libcloud import LibcloudConnector
from skyfleet.connectors.libcloud.resilience import RetryPolicy
from tests.connector.conftest import CANARY, CLUSTER, owner, provenance
from tests.connector.recorded import RecordedHttp, Reply, changes, release_refusals

pytestmark = pytest.mark.connector

GROUP = "/subscriptions/0000-sub/resourceGroups/shop-rg"
VMS = f"{GROUP}/providers/Microsoft.Compute/virtualMachines"


class AzureMockHttp(RecordedHttp):
    provider = "azure_arm"

    def _tenant_1_oauth2_token(self, method: str, url: str, body: str, headers: dict[str, str]) -> Reply:
        return self.reply(200, "token.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        page = 2 if self.sent[-1].query.get("$skiptoken") == "page2" else 1
        return self.reply(200, f"vms_page_{page}.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Network_networkInterfaces_shop_web_uid_3_nic(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        return self.reply(201, "nic_put.json")

    def _subscriptions_0000_sub_resourceGroups_shop_rg_providers_Microsoft_Compute_virtualMachines_shop_web_uid_3(
        self, method: str, url: str, body: str, headers: dict[str, str]
    ) -> Reply:
        if self.type == "THROTTLED":
            return self.reply(429, "error_throttled.json", {"retry-after": "0"})
        if self.type == "QUOTA":
            return self.reply(409, "error_quota.json")
        if self.type == "CAPACITY":
            return self.reply(409, "error_capacity.json")
        return self.reply(201, "vm_put.json")

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


def request(uid: str) -> CreateRequest:
    return CreateRequest(
        name=f"shop-web-{uid}",
        image_id="Canonical:ubuntu-24_04-lts:server:latest",
        size_id="Standard_B1s",
        zone="1",
        user_data="#cloud-config\n",
        tags=owner(uid).to_tags(),
    )


async def test_create_puts_nic_then_vm_with_tags_and_custom_data(connector: LibcloudConnector) -> None:
    node = await connector.create(request("uid-3"))

    puts = [s for s in AzureMockHttp.sent if s.method == "PUT"]
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == ["shop-web-uid-3-nic", "shop-web-uid-3"]
    vm = puts[1].json()
    assert vm["tags"]["skyfleet.io_instance-uid"] == "uid-3"
    assert base64.b64decode(vm["properties"]["osProfile"]["customData"]).decode() == "#cloud-config\n"
    assert vm["properties"]["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert vm["properties"]["storageProfile"]["imageReference"]["offer"] == "ubuntu-24_04-lts"
    assert vm["zones"] == ["1"]
    assert puts[1].headers["Authorization"] == "Bearer eyJ0eXAi.test.token"
    login = AzureMockHttp.sent[0]
    assert login.path == "/tenant-1/oauth2/token"
    assert node.provider_id == f"{VMS}/shop-web-uid-3"
    assert node.state is NodeState.PENDING
    assert node.tags[OwnerTags.INSTANCE_UID] == "uid-3"


async def test_lookup_follows_next_link_and_filters_client_side(connector: LibcloudConnector) -> None:
    nodes = await connector.list_cluster(CLUSTER)

    assert [n.name for n in nodes] == ["shop-web-1", "shop-web-2"]
    listings = [s for s in AzureMockHttp.sent if s.path == VMS]
    assert [s.query.get("$skiptoken") for s in listings] == [None, "page2"]


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

    vm_puts = [s for s in AzureMockHttp.sent if s.method == "PUT" and s.path.endswith("/shop-web-uid-3")]
    assert len(vm_puts) == attempts
    assert CANARY not in repr(caught.value)
