"""OpenStack Nova (through Keystone v3, or a pre-issued token).

Tags travel as server metadata, which takes our keys verbatim. Nova cannot filter the
server list by metadata, so lookups page through ``/servers/detail`` (``limit`` + ``marker``;
libcloud's ``list_nodes`` reads one page only) and filter client-side. No idempotency token.
Release writes the metadata back without our identity keys.

``endpoint_url`` is the Keystone URL. Parameters: ``project``, ``domain`` (default
``Default``), ``auth_version`` (default ``3.x_password``), ``compute_url`` (skip the service
catalogue; checked against the operator's endpoint rules like the endpoint), ``page_size``.
Secret keys: ``username`` + ``password``, or ``token``. The compute URLs Keystone's catalogue
hands out are checked when they are connected to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from libcloud.compute.base import Node, NodeImage, NodeSize
from libcloud.compute.drivers.openstack import OpenStackNetwork
from libcloud.compute.types import Provider

from skyfleet.connectors.base import (
    BakedImage,
    Capabilities,
    CloudNode,
    CreateRequest,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
)
from skyfleet.connectors.errors import ConnectorError, InvalidRequest, NotFound, QuotaExceeded, Throttled
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter, first_secret
from skyfleet.connectors.libcloud.errors import describe, http_status, map_generic, retry_after_from

__all__ = ["OpenStackAdapter"]

_PAGE_SIZE = 500
_METADATA_LIMIT = 255


class OpenStackAdapter(ProviderAdapter):
    provider = "openstack"
    libcloud_provider = Provider.OPENSTACK
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=False,
        idempotency_token=False,
        release=True,
        max_user_data_bytes=49149,  # Nova user_data: 65,535 characters of base64
        root_disk_sizing=True,
        subnet=True,  # networks[].uuid
    )
    parameters = ("project", "domain", "auth_version", "compute_url", "page_size")
    url_parameters = ("compute_url",)

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        params = self.config.parameters
        kwargs: dict[str, Any] = {
            "api_version": "2.0",
            "ex_force_auth_version": params.get("auth_version", "3.x_password"),
            "ex_tenant_name": params.get("project"),
            "ex_domain_name": params.get("domain", "Default"),
        }
        if self.config.endpoint_url:
            kwargs["ex_force_auth_url"] = self.config.endpoint_url
        if self.config.region:
            kwargs["ex_force_service_region"] = self.config.region
        if "compute_url" in params:
            kwargs["ex_force_base_url"] = params["compute_url"]
        if "token" in self.config.secret:
            kwargs["ex_force_auth_token"] = self.config.secret["token"]
            return (self.config.secret.get("username", "token"), ""), kwargs
        username = first_secret(self.config, "username", "user")
        return (username, first_secret(self.config, "password")), kwargs

    def verify(self, driver: Driver) -> None:
        driver.connection.request("/flavors", params={"limit": 1})

    def vcpus(self, size: NodeSize) -> float | None:
        value = getattr(size, "vcpus", None)
        return float(value) if value is not None else super().vcpus(size)

    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if len(key) > _METADATA_LIMIT or len(value) > _METADATA_LIMIT:
                raise InvalidRequest(f"metadata {key!r} exceeds Nova's {_METADATA_LIMIT}-character limit")
        return dict(tags)

    def list_all(self, driver: Driver) -> list[Node]:
        page_size = int(self.config.parameters.get("page_size", _PAGE_SIZE))
        nodes: list[Node] = []
        marker: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if marker:
                params["marker"] = marker
            body = driver.connection.request("/servers/detail", params=params).object
            servers = body.get("servers", [])
            nodes.extend(driver._to_node(s) for s in servers)
            has_next = any(link.get("rel") == "next" for link in body.get("servers_links", []))
            if not servers or not has_next:
                return nodes
            marker = str(servers[-1]["id"])

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        node = driver.ex_get_node_details(provider_id)
        return self.to_cloud_node(node) if node is not None else None

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        kwargs: dict[str, Any] = {"ex_metadata": self.encode_tags(req.tags()), "ex_userdata": req.user_data}
        if req.zone:
            kwargs["ex_availability_zone"] = req.zone
        image: NodeImage | None = self.image_stub(driver, req.image_id)
        volume = self.boot_volume(driver, req)
        if volume is not None:
            # Booting from a volume, the image is the volume's source; Nova wants no imageRef then.
            kwargs["ex_blockdevicemappings"] = volume
            image = None
        if req.subnet:  # Nova boots into networks: the id is the network's
            kwargs["networks"] = [OpenStackNetwork(req.subnet, None, None, driver)]  # type: ignore[no-untyped-call]
        node = driver.create_node(
            name=self.cloud_name(req), size=self.size_stub(driver, req.size_id), image=image, **kwargs
        )
        return self.to_cloud_node(node)

    def boot_volume(self, driver: Driver, req: CreateRequest) -> list[dict[str, Any]] | None:
        """A boot volume of ``req.disk_gib`` made from the image, when the flavor's own root
        disk is smaller (flavors with disk 0 boot from volume by design); None: the flavor's
        disk is large enough, and the server boots from the image as usual."""
        if req.disk_gib is None:
            return None
        flavor_disk = int(driver.ex_get_size(req.size_id).disk or 0)
        if flavor_disk >= req.disk_gib:
            return None
        return [
            {
                "boot_index": 0,
                "uuid": req.image_id,
                "source_type": "image",
                "destination_type": "volume",
                "volume_size": req.disk_gib,
                "delete_on_termination": True,
            }
        ]

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # PUT /servers/{id}/metadata replaces the whole set (Nova's update_all), so what we
        # send is exactly what stays. Deleting item by item is no option: the item's key goes
        # into the URL path, and the slash in ours splits it.
        kept = {k: v for k, v in node.tags.items() if k not in keys}
        driver.ex_set_metadata(self.node_stub(driver, node.provider_id), self.encode_tags(kept))

    # -- baking: Nova createImage, read and found through Nova's image API ------------------
    # Nova's /images API proxies Glance and filters by image property ("property-<key>"),
    # which is where createImage's metadata ends up: our owner tags, verbatim.
    capabilities = dataclasses.replace(capabilities, bake=True)

    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        body = {"createImage": {"name": req.name, "metadata": self.encode_tags(req.tags)}}
        resp = driver.connection.request(f"/servers/{req.source_id}/action", method="POST", data=body)
        # Before microversion 2.45 the id is only in the Location header; from 2.45 in the body.
        image_id = (resp.object or {}).get("image_id") if isinstance(resp.object, dict) else None
        image_id = image_id or str(resp.headers.get("location", "")).rstrip("/").rsplit("/", 1)[-1]
        if not image_id:
            raise InvalidRequest(f"createImage on {req.source_id} answered no image id", provider=self.provider)
        return BakedImage(
            id=image_id, name=req.name, state=ImageState.PENDING, tags=dict(req.tags), region=self.config.region
        )

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        try:
            body = driver.connection.request(f"/images/{image_id}").object
        except Exception as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise
        return self._baked(body["image"])

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        params: dict[str, Any] = {f"property-{k}": v for k, v in self.encode_tags(tags).items()}
        images: list[BakedImage] = []
        marker: str | None = None
        while True:
            page = dict(params, limit=_PAGE_SIZE, **({"marker": marker} if marker else {}))
            body = driver.connection.request("/images/detail", params=page).object
            items = body.get("images", [])
            images.extend(i for i in (self._baked(item) for item in items) if i is not None)
            if not items or not any(link.get("rel") == "next" for link in body.get("images_links", [])):
                break
            marker = str(items[-1]["id"])
        # Checked again: a cloud that ignores property filters must not hand us a stranger's image.
        return [i for i in images if all(i.tags.get(k) == v for k, v in tags.items())]

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        # The image's data lives in Glance; an image-backed builder leaves no volume snapshots.
        driver.connection.request(f"/images/{image.id}", method="DELETE")

    def _baked(self, data: Mapping[str, Any]) -> BakedImage | None:
        state = _IMAGE_STATES.get(str(data.get("status", "")).upper())
        if state is None:
            return None
        created = data.get("created")
        return BakedImage(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            state=state,
            tags={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            region=self.config.region,
            created_at=datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None,
        )

    # -- end of baking ----------------------------------------------------------------------

    def map_error(self, exc: BaseException) -> ConnectorError:
        status = http_status(exc)
        text = describe(exc)
        lowered = text.lower()
        if status in (403, 413) and "quota" in lowered:
            return QuotaExceeded(text, provider=self.provider, code="QuotaExceeded")
        if status in (413, 429):
            # Older Nova rate limiting answered 413 with Retry-After; newer deployments 429.
            return Throttled(text, retry_after=retry_after_from(exc), provider=self.provider, code=str(status))
        return map_generic(exc, self.provider)


# Nova's image API states (Glance's, upper-cased): DELETED and unknown ones count as gone.
_IMAGE_STATES = {
    "QUEUED": ImageState.PENDING,
    "SAVING": ImageState.PENDING,
    "IMPORTING": ImageState.PENDING,
    "ACTIVE": ImageState.AVAILABLE,
    "ERROR": ImageState.FAILED,
    "KILLED": ImageState.FAILED,
}
