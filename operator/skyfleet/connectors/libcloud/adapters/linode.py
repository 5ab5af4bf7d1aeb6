"""Linode (API v4).

Tags are free strings of 3-50 characters, filterable server-side with ``X-Filter``. Our
keys are abbreviated so an Instance UID fits (``sf-uid=<36 chars>``); a longer value (an
Instance name over 38 characters) is spelt with ``LengthCodec``: its start, ``~`` and a digest
of the whole, so it fits and still differs from every other value. Linode's metadata
service takes user data on create, which libcloud's ``create_node`` does not expose, so we
post the instance ourselves. No idempotency token. Release puts the instance's tag list back
without our identity tags.

Secret keys: ``token`` (or ``api_token``). Parameters: ``authorized_keys`` (comma-separated).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from libcloud.common.types import LibcloudError
from libcloud.compute.base import Node, NodeSize
from libcloud.compute.types import Provider

from skyfleet.connectors.base import (
    BakedImage,
    Capabilities,
    CloudNode,
    CloudSize,
    CreateRequest,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    NodeState,
    OwnerTags,
)
from skyfleet.connectors.errors import ConnectorError, InvalidRequest, NotFound, QuotaExceeded, Throttled, Transient
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter, first_secret
from skyfleet.connectors.libcloud.adapters.tagcodec import LengthCodec
from skyfleet.connectors.libcloud.errors import describe, map_generic

__all__ = ["LinodeAdapter"]

_KEYS = {
    OwnerTags.CLUSTER_ID: "sf-cluster",
    OwnerTags.NAMESPACE: "sf-ns",
    OwnerTags.DEPLOYMENT: "sf-deploy",
    OwnerTags.INSTANCE: "sf-instance",
    OwnerTags.INSTANCE_UID: "sf-uid",
}
# Baking's keys, abbreviated the same way so an Image UID and a bake key fit in 50 characters.
_KEYS.update(
    {
        ImageOwnerTags.IMAGE: "sf-image",
        ImageOwnerTags.IMAGE_UID: "sf-image-uid",
        ImageOwnerTags.BAKE_KEY: "sf-bake",
        ImageOwnerTags.ROLE: "sf-role",
    }
)
_KEYS_BACK = {v: k for k, v in _KEYS.items()}
_TAG_MAX = 50
_STATUS = re.compile(r"Status code: (\d{3})")


class LinodeAdapter(ProviderAdapter):
    provider = "linode"
    libcloud_provider = Provider.LINODE
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=True,
        idempotency_token=False,
        release=True,
        max_user_data_bytes=49149,  # Linode metadata user_data: 65,535 characters of base64
    )
    parameters = ("authorized_keys",)
    # Labels: 3-64 characters, no two dashes in a row (vm_name never makes any).
    name_max_length = 64

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        kwargs: dict[str, Any] = {"api_version": "4.0"}
        if self.endpoint:
            kwargs.update(self.endpoint.driver_kwargs())
        return (first_secret(self.config, "token", "api_token"),), kwargs

    def verify(self, driver: Driver) -> None:
        driver.connection.request("/v4/profile")

    # -- tags -----------------------------------------------------------------------------
    def to_cloud_size(self, size: NodeSize) -> CloudSize:
        # Linode reports a type's disk in MB (25600 for 25 GiB); the plan fixes the root disk.
        cloud = super().to_cloud_size(size)
        return dataclasses.replace(cloud, disk_gib=int(size.disk) // 1024 if size.disk else None)

    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        encoded = {}
        for key, value in tags.items():
            short = _KEYS.get(key, key)
            room = _TAG_MAX - len(short) - 1
            if room < 12:
                raise InvalidRequest(
                    f"the tag key {key!r} leaves no room for a value on Linode", provider=self.provider
                )
            encoded[short] = LengthCodec(room).encode(value)
        return encoded

    def tag_strings(self, tags: Mapping[str, str]) -> list[str]:
        return [f"{k}={v}" for k, v in self.encode_tags(tags).items()]

    def raw_tags(self, node: Node) -> Mapping[str, str]:
        pairs = (str(t).split("=", 1) for t in (node.extra or {}).get("tags") or [])
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}

    def decode_tags(self, raw: Mapping[str, str]) -> dict[str, str]:
        return {_KEYS_BACK.get(k, k): v for k, v in raw.items()}

    # -- nodes ----------------------------------------------------------------------------
    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        wanted = self.tag_strings(tags)
        # X-Filter ANDs every condition server-side; one request per page.
        x_filter = json.dumps({"+and": [{"tags": t} for t in wanted]})
        nodes: list[CloudNode] = []
        page, pages = 1, 1
        while page <= pages:
            body = driver.connection.request(
                "/v4/linode/instances", params={"page": page, "page_size": 500}, headers={"X-Filter": x_filter}
            ).object
            nodes.extend(self.to_cloud_node(driver._to_node(d)) for d in body.get("data", []))
            pages = int(body.get("pages", 1))
            page += 1
        return [n for n in nodes if n.state is not NodeState.TERMINATED and self.carries(tags, n.tags)]

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        try:
            body = driver.connection.request(f"/v4/linode/instances/{provider_id}").object
        except Exception as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise
        return self.to_cloud_node(driver._to_node(body))

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        payload: dict[str, Any] = {
            "label": self.cloud_name(req),
            "region": req.zone or req.region or self.config.region,
            "type": req.size_id,
            "image": req.image_id,
            "tags": self.tag_strings(req.tags()),
            # Linode insists on a root password; a random one nobody knows keeps login key-only.
            "root_pass": secrets.token_urlsafe(32),
        }
        keys = self.config.parameters.get("authorized_keys")
        if keys:
            payload["authorized_keys"] = [k.strip() for k in keys.split(",") if k.strip()]
        if req.user_data:
            payload["metadata"] = {"user_data": base64.b64encode(req.user_data.encode()).decode()}
        body = driver.connection.request("/v4/linode/instances", data=json.dumps(payload), method="POST").object
        return self.to_cloud_node(driver._to_node(body))

    def destroy(self, driver: Driver, provider_id: str) -> None:
        driver.connection.request(f"/v4/linode/instances/{provider_id}", method="DELETE")

    def resize(self, driver: Driver, provider_id: str, size_id: str) -> CloudNode:
        driver.connection.request(
            f"/v4/linode/instances/{provider_id}/resize", data=json.dumps({"type": size_id}), method="POST"
        )
        node = self.describe(driver, provider_id)
        if node is None:
            raise NotFound(f"instance {provider_id} vanished during resize", provider=self.provider)
        return node

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # An instance's tags change only as a whole list (PUT); Linode's DELETE /v4/tags/{label}
        # would strip the tag from every entity. The list is read raw once more so tags we did
        # not write go back byte for byte, whatever their shape.
        path = f"/v4/linode/instances/{node.provider_id}"
        current = driver.connection.request(path).object.get("tags") or []
        drop = set(self.tag_strings({k: node.tags[k] for k in keys}))
        driver.connection.request(path, data=json.dumps({"tags": [t for t in current if t not in drop]}), method="PUT")

    def to_cloud_node(self, node: Node) -> CloudNode:
        cloud = super().to_cloud_node(node)
        location = (node.extra or {}).get("location")
        return dataclasses.replace(
            cloud,
            size_id=str(node.size) if isinstance(node.size, str) else cloud.size_id,
            image_id=str(node.image) if isinstance(node.image, str) else cloud.image_id,
            zone=str(location) if location else cloud.zone,
        )

    # -- baking: images from the builder's disk ----------------------------------------------
    # Accounts hold few private images (a small quota), so running into it is QuotaExceeded,
    # which the bake reports as such instead of retrying.
    capabilities = dataclasses.replace(capabilities, bake=True)

    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        disks = driver.connection.request(f"/v4/linode/instances/{req.source_id}/disks").object.get("data") or []
        disk = next((d for d in disks if d.get("filesystem") != "swap"), None)
        if disk is None:
            raise InvalidRequest(f"instance {req.source_id} has no disk to image", provider=self.provider)
        payload = {
            "disk_id": disk["id"],
            "label": req.name,
            "description": req.description or f"baked by Skyfleet from {req.source_id}",
            "tags": self.tag_strings(req.tags),
        }
        try:
            body = driver.connection.request("/v4/images", data=json.dumps(payload), method="POST").object
        except LibcloudError as exc:
            mapped = self.map_error(exc)
            text = describe(exc).lower()
            if isinstance(mapped, InvalidRequest) and ("limit" in text or "quota" in text):
                raise QuotaExceeded(describe(exc), provider=self.provider, code="ImageLimit") from None
            raise
        image = self._baked(body)
        if image is None:
            raise InvalidRequest(f"the new image of {req.source_id} is already gone", provider=self.provider)
        return image

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        try:
            body = driver.connection.request(f"/v4/images/{image_id}").object
        except Exception as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise
        return self._baked(body)

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        wanted = self.tag_strings(tags)
        x_filter = json.dumps({"+and": [{"is_public": False}, *({"tags": t} for t in wanted)]})
        images: list[BakedImage] = []
        page, pages = 1, 1
        while page <= pages:
            body = driver.connection.request(
                "/v4/images", params={"page": page, "page_size": 500}, headers={"X-Filter": x_filter}
            ).object
            images.extend(i for i in (self._baked(d) for d in body.get("data", [])) if i is not None)
            pages = int(body.get("pages", 1))
            page += 1
        return [i for i in images if all(i.tags.get(k) == v for k, v in tags.items())]

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        driver.connection.request(f"/v4/images/{image.id}", method="DELETE")

    def _baked(self, data: Mapping[str, Any]) -> BakedImage | None:
        status = str(data.get("status") or "available")
        if status == "deleted":
            return None
        pairs = (str(t).split("=", 1) for t in data.get("tags") or [])
        created = data.get("created")
        return BakedImage(
            id=str(data["id"]),
            name=str(data.get("label") or ""),
            state=ImageState.AVAILABLE if status == "available" else ImageState.PENDING,
            tags=self.decode_tags({p[0]: (p[1] if len(p) > 1 else "") for p in pairs}),
            region=self.config.region,
            created_at=datetime.fromisoformat(str(created)) if created else None,
        )

    # -- end of baking ------------------------------------------------------------------------

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:
        # libcloud turns Linode errors into LibcloudError("<reason> Status code: NNN.").
        if isinstance(exc, LibcloudError) and not isinstance(exc, ConnectorError):
            match = _STATUS.search(str(getattr(exc, "value", exc)))
            status = int(match.group(1)) if match else None
            text = describe(exc)
            if status == 429:
                return Throttled(text, provider=self.provider, code="429")
            if status is not None and status >= 500:
                return Transient(text, provider=self.provider, code=str(status))
            if status == 404:
                return NotFound(text, provider=self.provider, code="404")
            if status in (400, 409, 422):
                return InvalidRequest(text, provider=self.provider, code=str(status))
        return map_generic(exc, self.provider)
