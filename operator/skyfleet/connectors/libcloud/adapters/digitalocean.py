"""DigitalOcean (API v2).

Tags are bare strings limited to ``[A-Za-z0-9_:-]``, so ``skyfleet.io/instance-uid=abc``
travels as ``skyfleet_instance-uid:abc``; values are spelt with ``LowercaseCodec`` (``prod.eu``
is ``prod_-eu``, ``prod_eu`` is ``prod__eu``), so no two values share a tag. The droplet list
filters server-side by ONE tag (``tag_name``), so we filter by the most selective one and check
the rest client-side. No idempotency token: duplicate protection is the owner-tag lookup before
each create. Release takes our identity tags off the droplet, one untag request per tag.

libcloud's DigitalOcean driver refuses ``host``/``port`` arguments (its ``__new__`` passes them
on to ``object``), so an endpoint override is set on the driver's connection afterwards.

Secret keys: ``token`` (or ``api_token``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from libcloud.common.exceptions import BaseHTTPError
from libcloud.compute.base import Node
from libcloud.compute.types import Provider

from skyfleet.connectors.base import (
    BakedImage,
    Capabilities,
    CloudNode,
    CreateRequest,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    NodeState,
    OwnerTags,
)
from skyfleet.connectors.errors import ConnectorError, QuotaExceeded, Throttled
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter, first_secret
from skyfleet.connectors.libcloud.adapters.tagcodec import LowercaseCodec
from skyfleet.connectors.libcloud.errors import describe, http_status, map_generic

__all__ = ["DigitalOceanAdapter"]

_PREFIX = "skyfleet.io/"
_ENCODED_PREFIX = "skyfleet_"
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_\-]")
_PAGE_SIZE = 200
_TAG_MAX = 255
# The longest key is "skyfleet_instance-uid"; a value must leave room for it and the colon.
_VALUES = LowercaseCodec(_TAG_MAX - len("skyfleet_instance-uid:"))


class DigitalOceanAdapter(ProviderAdapter):
    provider = "digitalocean"
    libcloud_provider = Provider.DIGITAL_OCEAN
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=False,
        idempotency_token=False,
        release=True,
        max_user_data_bytes=65536,  # DigitalOcean: 64 KiB
        subnet=True,  # vpc_uuid: a droplet's network is its VPC
    )

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (first_secret(self.config, "token", "api_token"),), {"api_version": "v2"}

    def make_driver(self) -> Driver:
        driver = super().make_driver()
        if self.endpoint:
            connection = driver.connection
            connection.host = self.endpoint.netloc_host
            connection.port = self.endpoint.port
            connection.secure = self.endpoint.secure
            if self.endpoint.path.strip("/"):
                connection.request_path = self.endpoint.path.rstrip("/")
            connection.connect()  # the driver connected to the public endpoint on construction
        return driver

    def verify(self, driver: Driver) -> None:
        driver.ex_account_info()

    # -- tags -----------------------------------------------------------------------------
    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        return {_encode_key(k): _VALUES.encode(v) for k, v in tags.items()}

    def tag_strings(self, tags: Mapping[str, str]) -> list[str]:
        return [f"{k}:{v}" for k, v in self.encode_tags(tags).items()]

    def decode_tags(self, raw: Mapping[str, str]) -> dict[str, str]:
        return {_decode_key(k): (_VALUES.decode(v) if k.startswith(_ENCODED_PREFIX) else v) for k, v in raw.items()}

    def raw_tags(self, node: Node) -> Mapping[str, str]:
        pairs = (str(t).split(":", 1) for t in (node.extra or {}).get("tags") or [])
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}

    # -- nodes ----------------------------------------------------------------------------
    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        selective = next((k for k in (OwnerTags.INSTANCE_UID, OwnerTags.CLUSTER_ID) if k in tags), next(iter(tags)))
        (tag_name,) = self.tag_strings({selective: tags[selective]})
        nodes: list[CloudNode] = []
        page = 1
        while True:
            params = {"tag_name": tag_name, "per_page": _PAGE_SIZE, "page": page}
            body = driver.connection.request("/v2/droplets", params=params).object
            nodes.extend(self.droplet(driver, d) for d in body.get("droplets", []))
            if not (body.get("links") or {}).get("pages", {}).get("next"):
                break
            page += 1
        return [n for n in nodes if n.state is not NodeState.TERMINATED and self.carries(tags, n.tags)]

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        try:
            body = driver.connection.request(f"/v2/droplets/{provider_id}").object
        except BaseHTTPError as exc:
            if http_status(exc) == 404:
                return None
            raise
        return self.droplet(driver, body["droplet"])

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        # Posted directly rather than through create_node, which keeps only the region's
        # display name; the raw droplet has the slug the operator places by.
        payload = {
            "name": self.cloud_name(req),
            "size": req.size_id,
            "image": req.image_id,
            "region": req.zone or req.region or self.config.region,
            "user_data": req.user_data,
            "tags": self.tag_strings(req.tags()),
            **({"vpc_uuid": req.subnet} if req.subnet else {}),
        }
        body = driver.connection.request("/v2/droplets", data=json.dumps(payload), method="POST").object
        return self.droplet(driver, body["droplet"])

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # DELETE /v2/tags/{tag}/resources takes the tag off the droplets in the body only; the
        # tag itself lives on for other droplets. One request per tag, cluster-id first: a
        # release stopped halfway already hides the droplet from list_cluster and from
        # identity lookups, and the connector's retry removes what is left.
        body = json.dumps({"resources": [{"resource_id": node.provider_id, "resource_type": "droplet"}]})
        for key in keys:
            (tag,) = self.tag_strings({key: node.tags[key]})
            driver.connection.request(f"/v2/tags/{quote(tag, safe=':')}/resources", data=body, method="DELETE")

    def droplet(self, driver: Driver, data: Mapping[str, Any]) -> CloudNode:
        cloud = self.to_cloud_node(driver._to_node(data))
        image = data.get("image") or {}
        return dataclasses.replace(
            cloud,
            size_id=data.get("size_slug") or cloud.size_id,
            image_id=str(image.get("slug") or image.get("id") or "") or cloud.image_id,
            zone=(data.get("region") or {}).get("slug") or cloud.zone,
        )

    # -- baking: droplet snapshots -----------------------------------------------------------
    # The snapshot action answers an action, not an image: until it completes the image is
    # known as "action/<action id>/<droplet id>", and get_image answers the snapshot's own id
    # once it exists. Snapshots cannot be tagged when made, so the connector tags them then.
    capabilities = dataclasses.replace(capabilities, bake=True)

    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        # A builder is snapshotted once: an earlier snapshot action on it (a lost answer) counts.
        actions = driver.connection.request(f"/v2/droplets/{req.source_id}/actions", params={"per_page": 50}).object
        earlier = [
            a for a in actions.get("actions") or [] if a.get("type") == "snapshot" and a.get("status") != "errored"
        ]
        if earlier:
            action = earlier[0]
        else:
            body = json.dumps({"type": "snapshot", "name": req.name})
            action = driver.connection.request(
                f"/v2/droplets/{req.source_id}/actions", data=body, method="POST"
            ).object["action"]
        return BakedImage(
            id=f"action/{action['id']}/{req.source_id}",
            name=req.name,
            state=ImageState.PENDING,
            region=self.config.region,
        )

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        if image_id.startswith("action/"):
            _, action_id, droplet = image_id.split("/", 2)
            action = driver.connection.request(f"/v2/actions/{action_id}").object["action"]
            if action.get("status") == "errored":
                return BakedImage(
                    id=image_id, name="", state=ImageState.FAILED, region=self.config.region, reason="errored"
                )
            if action.get("status") != "completed":
                return BakedImage(id=image_id, name="", state=ImageState.PENDING, region=self.config.region)
            snapshots = driver.connection.request(f"/v2/droplets/{droplet}/snapshots").object.get("snapshots") or []
            if not snapshots:
                return None
            image_id = str(max(snapshots, key=lambda i: str(i.get("created_at", "")))["id"])
        try:
            body = driver.connection.request(f"/v2/images/{image_id}").object
        except BaseHTTPError as exc:
            if http_status(exc) == 404:
                return None
            raise
        return self._baked(body["image"])

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        preferred = (ImageOwnerTags.BAKE_KEY, ImageOwnerTags.IMAGE_UID)
        selective = next((k for k in preferred if k in tags), next(iter(tags)))
        (tag_name,) = self.tag_strings({selective: tags[selective]})
        images: list[BakedImage] = []
        page = 1
        while True:
            params = {"private": "true", "tag_name": tag_name, "per_page": _PAGE_SIZE, "page": page}
            body = driver.connection.request("/v2/images", params=params).object
            images.extend(i for i in (self._baked(d) for d in body.get("images", [])) if i is not None)
            if not (body.get("links") or {}).get("pages", {}).get("next"):
                break
            page += 1
        wanted = self.decode_tags(self.encode_tags(tags))
        return [i for i in images if all(i.tags.get(k) == v for k, v in wanted.items())]

    def tag_image(self, driver: Driver, image: BakedImage, tags: Mapping[str, str]) -> None:
        body = json.dumps({"resources": [{"resource_id": image.id, "resource_type": "image"}]})
        for tag in self.tag_strings(tags):
            # A tag must exist before it is attached; creating one that exists answers it as is.
            driver.connection.request("/v2/tags", data=json.dumps({"name": tag}), method="POST")
            driver.connection.request(f"/v2/tags/{quote(tag, safe=':')}/resources", data=body, method="POST")

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        driver.connection.request(f"/v2/images/{image.id}", method="DELETE")

    def _baked(self, data: Mapping[str, Any]) -> BakedImage | None:
        status = str(data.get("status") or "available")
        if status in ("deleted", "retired"):
            return None
        pairs = (str(t).split(":", 1) for t in data.get("tags") or [])
        created = data.get("created_at")
        return BakedImage(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            state=ImageState.AVAILABLE if status == "available" else ImageState.PENDING,
            tags=self.decode_tags({p[0]: (p[1] if len(p) > 1 else "") for p in pairs}),
            region=self.config.region,
            created_at=datetime.fromisoformat(str(created).replace("Z", "+00:00")) if created else None,
        )

    # -- end of baking ------------------------------------------------------------------------

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:
        status = http_status(exc)
        text = describe(exc)
        if status == 429:
            return Throttled(text, retry_after=_reset_after(exc), provider=self.provider, code="too_many_requests")
        if status == 422 and "limit" in text.lower():
            return QuotaExceeded(text, provider=self.provider, code="droplet_limit")
        return map_generic(exc, self.provider)


def _encode_key(key: str) -> str:
    if key.startswith(_PREFIX):
        key = _ENCODED_PREFIX + key[len(_PREFIX) :]
    return _NOT_ALLOWED.sub("_", key)


def _decode_key(key: str) -> str:
    if key.startswith(_ENCODED_PREFIX):
        return _PREFIX + key[len(_ENCODED_PREFIX) :]
    return key


def _reset_after(exc: BaseException) -> float | None:
    # DigitalOcean sends the epoch second its hourly window resets, not a delay.
    headers = getattr(exc, "headers", None) or {}
    reset = headers.get("ratelimit-reset") if hasattr(headers, "get") else None
    if reset is None:
        return None
    try:
        return max(0.0, float(reset) - time.time())
    except ValueError:
        return None
