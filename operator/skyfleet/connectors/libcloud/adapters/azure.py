"""Microsoft Azure Resource Manager.

A VM needs a network interface, so create is two PUTs (NIC, then VM) named after the
Instance, made unique per installation and namespace (``skyfleet.connectors.naming``). PUT is
create-or-update: on a name someone else holds it would rewrite their resource. So before any
write the adapter reads both names: a VM or NIC that is there and carries this Instance's
identity is adopted (a retry after a lost response), one that does not is refused
(``OwnershipMismatch``), and both PUTs carry ``If-None-Match: *`` so that ARM refuses to
overwrite what appeared in between. Both carry ``deleteOption: Delete`` so one DELETE of the
VM also removes its NIC and OS disk. Tag names may not contain ``/``: ours travel as
``skyfleet.io_instance-uid``. The VM list cannot filter by tag, so lookups page through
``nextLink`` and filter client-side. User data is the base64 ``customData`` cloud-init reads.
Release PATCHes the VM with its tags minus our identity: tags in a PATCH replace the set.
A VM's addresses are not on the VM but on its network interfaces (``ipConfigurations``): a
lookup lists the group's NICs once, a describe reads the VM's primary NIC. Only private
addresses are read (the NICs we make carry no public IP resource).

Provider ids are ARM resource ids. Secret keys: ``tenant_id``, ``subscription_id``,
``client_id``, ``client_secret``. Parameters: ``resource_group`` (required), ``subnet_id``
(ARM id, required to create), ``admin_username`` (default ``skyfleet``), ``ssh_public_key``,
and with an endpoint override ``login_endpoint`` (checked against the operator's endpoint
rules like the endpoint), ``login_resource``, ``storage_suffix``.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.types import Provider

from skyfleet.connectors.base import Capabilities, CloudNode, CreateRequest, NodeState
from skyfleet.connectors.errors import (
    CapacityUnavailable,
    ConnectorError,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    OwnershipMismatch,
    QuotaExceeded,
    Throttled,
)
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter, first_secret
from skyfleet.connectors.libcloud.errors import describe, http_status, map_generic, retry_after_from

__all__ = ["AzureARMAdapter"]

COMPUTE_API = "2023-09-01"
NETWORK_API = "2023-09-01"
_PREFIX = "skyfleet.io/"
_ENCODED_PREFIX = "skyfleet.io_"
_CAPACITY = {"AllocationFailed", "ZonalAllocationFailed", "SkuNotAvailable", "OverconstrainedAllocationRequest"}
_QUOTA = {"QuotaExceeded", "OperationNotAllowed"}
_PROVISIONING = {
    "Creating": NodeState.PENDING,
    "Updating": NodeState.PENDING,
    "Succeeded": NodeState.RUNNING,
    "Deleting": NodeState.TERMINATED,
    "Failed": NodeState.UNKNOWN,
}
_POWER = {
    "PowerState/starting": NodeState.PENDING,
    "PowerState/running": NodeState.RUNNING,
    "PowerState/stopping": NodeState.STOPPED,
    "PowerState/stopped": NodeState.STOPPED,
    "PowerState/deallocating": NodeState.STOPPED,
    "PowerState/deallocated": NodeState.STOPPED,
}


class AzureARMAdapter(ProviderAdapter):
    provider = "azure_arm"
    libcloud_provider = Provider.AZURE_ARM
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=True,
        idempotency_token=False,
        release=True,
        max_user_data_bytes=49149,  # Azure customData: 65,535 characters of base64
        root_disk_sizing=True,
        subnet=True,  # the NIC's subnet id, else the credential's subnet_id
    )
    parameters = (
        "resource_group",
        "subnet_id",
        "admin_username",
        "ssh_public_key",
        "login_endpoint",
        "login_resource",
        "storage_suffix",
    )
    url_parameters = ("login_endpoint",)
    # Linux VM names and computer names: at most 64 characters.
    name_max_length = 64

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        tenant = first_secret(self.config, "tenant_id")
        subscription = first_secret(self.config, "subscription_id")
        client = first_secret(self.config, "client_id")
        secret = first_secret(self.config, "client_secret")
        kwargs: dict[str, Any] = {"region": self.config.region}
        if self.endpoint:
            # Sovereign and private clouds: the endpoint is Resource Manager, login is separate.
            params = self.config.parameters
            kwargs["cloud_environment"] = {
                "resourceManagerEndpointUrl": self.endpoint.url,
                "activeDirectoryEndpointUrl": params.get("login_endpoint", "https://login.microsoftonline.com/"),
                "activeDirectoryResourceId": params.get("login_resource", "https://management.core.windows.net/"),
                "storageEndpointSuffix": params.get("storage_suffix", "core.windows.net"),
            }
        return (tenant, subscription, client, secret), kwargs

    @property
    def subscription(self) -> str:
        return self.config.secret["subscription_id"]

    @property
    def group_path(self) -> str:
        group = self.config.parameters.get("resource_group")
        if not group:
            raise InvalidRequest("Azure credentials need parameter 'resource_group'", provider=self.provider)
        return f"/subscriptions/{self.subscription}/resourceGroups/{group}"

    def verify(self, driver: Driver) -> None:
        driver.connection.request(self.group_path, params={"api-version": "2021-04-01"})

    # -- tags -----------------------------------------------------------------------------
    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        encoded = {}
        for key, value in tags.items():
            name = _ENCODED_PREFIX + key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
            if any(c in name for c in "<>%&\\?/"):
                raise InvalidRequest(f"Azure tag names cannot contain <>%&\\?/: {key!r}", provider=self.provider)
            encoded[name] = value
        return encoded

    def decode_tags(self, raw: Mapping[str, str]) -> dict[str, str]:
        return {
            (_PREFIX + k[len(_ENCODED_PREFIX) :] if k.startswith(_ENCODED_PREFIX) else k): v for k, v in raw.items()
        }

    # -- nodes ----------------------------------------------------------------------------
    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        path: str | None = f"{self.group_path}/providers/Microsoft.Compute/virtualMachines"
        params: dict[str, str] | None = {"api-version": COMPUTE_API}
        found: list[tuple[CloudNode, dict[str, Any]]] = []
        for data in self._list(driver, path, params):
            node = self.vm(data)
            if node.state is not NodeState.TERMINATED and all(node.tags.get(k) == v for k, v in tags.items()):
                found.append((node, data))
        if not found:
            return []
        nics = {
            str(nic.get("id", "")).lower(): nic
            for nic in self._list(
                driver, f"{self.group_path}/providers/Microsoft.Network/networkInterfaces", {"api-version": NETWORK_API}
            )
        }
        return [self._addressed(n, nics.get((_primary_nic(v) or "").lower())) for n, v in found]

    def _list(self, driver: Driver, path: str | None, params: dict[str, str] | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while path:
            body = driver.connection.request(path, params=params).object
            items.extend(body.get("value", []))
            next_link = body.get("nextLink")
            # nextLink is absolute and already carries api-version and the skip token.
            path, params = (_path_of(next_link), None) if next_link else (None, None)
        return items

    @staticmethod
    def _addressed(node: CloudNode, nic: Mapping[str, Any] | None) -> CloudNode:
        configs = ((nic or {}).get("properties") or {}).get("ipConfigurations") or []
        private = tuple(
            str(c["properties"]["privateIPAddress"])
            for c in configs
            if (c.get("properties") or {}).get("privateIPAddress")
        )
        return dataclasses.replace(node, private_ips=private)

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        try:
            body = driver.connection.request(
                provider_id, params={"api-version": COMPUTE_API, "$expand": "instanceView"}
            ).object
        except BaseHTTPError as exc:
            if http_status(exc) == 404:
                return None
            raise
        nic_id = _primary_nic(body)
        return self._addressed(self.vm(body), self._read(driver, nic_id, NETWORK_API) if nic_id else None)

    def _read(self, driver: Driver, resource_id: str, api: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = driver.connection.request(resource_id, params={"api-version": api}).object
        except BaseHTTPError as exc:
            if http_status(exc) == 404:
                return None
            raise
        return body

    def _put_new(self, driver: Driver, resource_id: str, api: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """PUT that only creates: None when ARM answers that the resource exists already."""
        try:
            answer: dict[str, Any] = driver.connection.request(
                resource_id, params={"api-version": api}, method="PUT", data=body, headers={"If-None-Match": "*"}
            ).object
        except BaseHTTPError as exc:
            if http_status(exc) == 412:
                return None
            raise
        return answer

    def _claim(self, existing: Mapping[str, Any] | None, identity: Mapping[str, str], what: str) -> bool:
        """True when ``existing`` is this Instance's (adopt it), False when there is none;
        refuses a resource by that name that carries another identity."""
        if existing is None:
            return False
        if self.carries(identity, self.decode_tags(existing.get("tags") or {})):
            return True
        raise OwnershipMismatch(
            f"a {what} named {str(existing.get('name') or '?')!r} exists and is not this Instance's; "
            "nothing was changed",
            provider=self.provider,
        )

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        params = self.config.parameters
        subnet = req.subnet or params.get("subnet_id")
        if not subnet:
            raise InvalidRequest("Azure credentials need parameter 'subnet_id' to create VMs", provider=self.provider)
        location = req.region or self.config.region
        tags = self.encode_tags(req.tags())
        identity = req.owner.identity()
        name = self.cloud_name(req)
        nic_id = f"{self.group_path}/providers/Microsoft.Network/networkInterfaces/{name}-nic"
        vm_id = f"{self.group_path}/providers/Microsoft.Compute/virtualMachines/{name}"
        # Read before writing: a PUT on a name that is not ours would take the resource over.
        vm_found = self._read(driver, vm_id, COMPUTE_API)
        if self._claim(vm_found, identity, "VM"):
            assert vm_found is not None
            return self.vm(vm_found)
        if not self._claim(self._read(driver, nic_id, NETWORK_API), identity, "network interface"):
            nic = {
                "location": location,
                "tags": tags,
                "properties": {
                    "ipConfigurations": [
                        {
                            "name": "primary",
                            "properties": {"subnet": {"id": subnet}, "privateIPAllocationMethod": "Dynamic"},
                        }
                    ]
                },
            }
            if self._put_new(driver, nic_id, NETWORK_API, nic) is None:
                self._claim(self._read(driver, nic_id, NETWORK_API), identity, "network interface")
        image = _image_reference(req.image_id)
        os_profile: dict[str, Any] = {
            "computerName": name[:64],
            "adminUsername": params.get("admin_username", "skyfleet"),
            "linuxConfiguration": {"disablePasswordAuthentication": True},
        }
        key = params.get("ssh_public_key")
        if key:
            os_profile["linuxConfiguration"]["ssh"] = {
                "publicKeys": [{"path": f"/home/{os_profile['adminUsername']}/.ssh/authorized_keys", "keyData": key}]
            }
        if req.user_data:
            os_profile["customData"] = base64.b64encode(req.user_data.encode()).decode()
        vm: dict[str, Any] = {
            "location": location,
            "tags": tags,
            "properties": {
                "hardwareProfile": {"vmSize": req.size_id},
                "storageProfile": {
                    "imageReference": image,
                    "osDisk": _os_disk(req.disk_gib),
                },
                "osProfile": os_profile,
                "networkProfile": {
                    "networkInterfaces": [{"id": nic_id, "properties": {"primary": True, "deleteOption": "Delete"}}]
                },
            },
        }
        if req.zone:
            vm["zones"] = [req.zone]
        body = self._put_new(driver, vm_id, COMPUTE_API, vm)
        if body is None:
            # Created in between: ours (a racing retry) is adopted, anyone else's refused.
            body = self._read(driver, vm_id, COMPUTE_API)
            if not self._claim(body, identity, "VM") or body is None:
                raise NotFound(f"VM {name} vanished while it was being created", provider=self.provider)
        return self.vm(body)

    def destroy(self, driver: Driver, provider_id: str) -> None:
        driver.connection.request(provider_id, params={"api-version": COMPUTE_API}, method="DELETE")

    def resize(self, driver: Driver, provider_id: str, size_id: str) -> CloudNode:
        body = driver.connection.request(
            provider_id,
            params={"api-version": COMPUTE_API},
            method="PATCH",
            data={"properties": {"hardwareProfile": {"vmSize": size_id}}},
        ).object
        return self.vm(body)

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # Tags in a PATCH replace the whole set. The Tags API (operation Delete) could remove
        # single tags, but needs Microsoft.Resources/tags/write, which a role made for this
        # operator may lack; writing the VM is what create and resize need already.
        kept = {k: v for k, v in node.tags.items() if k not in keys}
        driver.connection.request(
            node.provider_id, params={"api-version": COMPUTE_API}, method="PATCH", data={"tags": self.encode_tags(kept)}
        )

    def vm(self, data: Mapping[str, Any]) -> CloudNode:
        props = data.get("properties") or {}
        state = _PROVISIONING.get(str(props.get("provisioningState")), NodeState.UNKNOWN)
        for status in (props.get("instanceView") or {}).get("statuses", []):
            state = _POWER.get(str(status.get("code")), state)
        image = ((props.get("storageProfile") or {}).get("imageReference")) or {}
        created = props.get("timeCreated")
        zones = data.get("zones") or []
        return CloudNode(
            provider_id=str(data["id"]),
            name=str(data.get("name", "")),
            state=state,
            size_id=(props.get("hardwareProfile") or {}).get("vmSize"),
            image_id=image.get("id")
            or ":".join(str(image[k]) for k in ("publisher", "offer", "sku", "version") if k in image)
            or None,
            region=data.get("location") or self.config.region,
            zone=str(zones[0]) if zones else None,
            tags=self.decode_tags(data.get("tags") or {}),
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
        )

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:
        if isinstance(exc, BaseHTTPError):
            status = http_status(exc)
            text = describe(exc)
            code = str(exc.message)[1:].split("]", 1)[0] if str(exc.message).startswith("[") else None
            if status == 429:
                return Throttled(text, retry_after=retry_after_from(exc), provider=self.provider, code=code)
            if code in _CAPACITY:
                return CapacityUnavailable(text, provider=self.provider, code=code)
            if code in _QUOTA and "quota" in text.lower():
                return QuotaExceeded(text, provider=self.provider, code=code)
            if status == 404 or code in ("ResourceNotFound", "NotFound"):
                return NotFound(text, provider=self.provider, code=code)
            if status in (401, 403) or code in (
                "AuthenticationFailed",
                "AuthorizationFailed",
                "InvalidAuthenticationToken",
            ):
                return InvalidCredentials(text, provider=self.provider, code=code)
        return map_generic(exc, self.provider)


def _image_reference(image_id: str) -> dict[str, str]:
    """``publisher:offer:sku:version`` (the az CLI URN) or an ARM image id."""
    if image_id.startswith("/"):
        return {"id": image_id}
    parts = image_id.split(":")
    if len(parts) != 4:
        raise InvalidRequest(f"Azure images are URNs publisher:offer:sku:version or ARM ids, got {image_id!r}")
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def _primary_nic(vm: Mapping[str, Any]) -> str | None:
    """The id of the VM's primary network interface (the only one, or the one marked primary)."""
    nics = ((vm.get("properties") or {}).get("networkProfile") or {}).get("networkInterfaces") or []
    primary = [n for n in nics if (n.get("properties") or {}).get("primary")]
    chosen = (primary or nics)[:1]
    return str(chosen[0]["id"]) if chosen and chosen[0].get("id") else None


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _os_disk(disk_gib: int | None) -> dict[str, Any]:
    """The OS disk, made from the image; ``diskSizeGB`` grows it (Azure refuses to shrink one)."""
    disk: dict[str, Any] = {"createOption": "FromImage", "deleteOption": "Delete"}
    if disk_gib is not None:
        disk["diskSizeGB"] = disk_gib
    return disk
