"""Google Compute Engine.

Tags become labels (lowercase ``[a-z0-9_-]``, at most 63 characters), which the instance list
filters server-side; the aggregated list covers every zone of the project in one paged call.
Label values are spelt with ``LowercaseCodec`` (``Prod.EU`` is ``_prod_-_e_u``), so that case
folding and replaced characters never make two values one. Instance names must start with a
letter: a name starting with a digit gets a ``vm-`` prefix (see ``skyfleet.connectors.naming``).
Instance inserts take a ``requestId`` (a UUID), GCE's idempotency key: we derive it from the
idempotency token, so a retried insert after a lost response creates nothing new. User data
goes into the ``user-data`` metadata item that cloud-init reads. Release sets the labels
without our identity (``setLabels``, guarded by the label fingerprint) and waits for it.

The provider id is ``<zone>/<name>``: GCE addresses instances by zone and name.
Secret: the service account key JSON under ``service_account.json`` (or ``client_email`` +
``private_key``). Parameters: ``project`` (default: from the key), ``network`` (default
``global/networks/default``).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from libcloud.common.google import GoogleBaseError
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
)
from skyfleet.connectors.errors import (
    CapacityUnavailable,
    ConnectorError,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Throttled,
    Transient,
)
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter
from skyfleet.connectors.libcloud.adapters.tagcodec import LowercaseCodec
from skyfleet.connectors.libcloud.errors import describe, map_generic

__all__ = ["GCEAdapter", "label_key", "label_value"]

_PREFIX = "skyfleet.io/"
_LABEL_INVALID = re.compile(r"[^a-z0-9_-]")
_LABEL_MAX = 63
_STATES = {
    "PROVISIONING": NodeState.PENDING,
    "STAGING": NodeState.PENDING,
    "RUNNING": NodeState.RUNNING,
    "REPAIRING": NodeState.RUNNING,
    "STOPPING": NodeState.STOPPED,
    "STOPPED": NodeState.STOPPED,
    "SUSPENDING": NodeState.STOPPED,
    "SUSPENDED": NodeState.STOPPED,
    # GCE's TERMINATED means "stopped, disk kept": the VM still exists and costs storage.
    "TERMINATED": NodeState.STOPPED,
}
_THROTTLING = {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
_QUOTA = {"QUOTA_EXCEEDED", "quotaExceeded"}
_CAPACITY = {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "resourcePoolExhausted"}
_TOKEN_NAMESPACE = uuid.UUID("8f0d8e38-3a55-4b8a-9a37-5b1d3c3f0a11")


_VALUES = LowercaseCodec(_LABEL_MAX)


def label_key(key: str) -> str:
    if key.startswith(_PREFIX):
        key = "skyfleet_" + key[len(_PREFIX) :]
    return _LABEL_INVALID.sub("_", key.lower())[:_LABEL_MAX]


def label_value(value: str) -> str:
    return _VALUES.encode(value)


def _unlabel_key(key: str) -> str:
    return _PREFIX + key[len("skyfleet_") :] if key.startswith("skyfleet_") else key


class GCEAdapter(ProviderAdapter):
    provider = "gce"
    libcloud_provider = Provider.GCE
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=False,
        idempotency_token=True,
        release=True,
        max_user_data_bytes=262144,  # GCE: 256 KB per metadata value
        root_disk_sizing=True,
        subnet=True,  # networkInterfaces[].subnetwork
    )
    parameters = ("project", "zone", "network")
    name_letter_first = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token_dir: str | None = None
        self._cleanup: weakref.finalize[Any, GCEAdapter] | None = None

    def token_dir(self) -> str:
        """Where libcloud caches the OAuth token (by default under $HOME): a private directory,
        made again when a closed adapter is used once more."""
        if self._token_dir is None or not Path(self._token_dir).is_dir():
            self._token_dir = tempfile.mkdtemp(prefix="skyfleet-gce-")
            # close() removes the cached access token at once; the finalizer covers adapters never closed.
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._token_dir, True)
        return self._token_dir

    def close(self) -> None:
        super().close()
        if self._cleanup is not None:
            self._cleanup()

    def _service_account(self) -> dict[str, Any]:
        secret = self.config.secret
        if "service_account.json" in secret:
            try:
                parsed: dict[str, Any] = json.loads(secret["service_account.json"])
            except ValueError:
                raise InvalidCredentials(
                    "service_account.json in the secret is not valid JSON", provider=self.provider
                ) from None
            return parsed
        if "client_email" in secret and "private_key" in secret:
            return {"client_email": secret["client_email"], "private_key": secret["private_key"]}
        raise InvalidCredentials(
            f"secret of credential {self.config.namespace}/{self.config.name} needs service_account.json "
            "or client_email + private_key",
            provider=self.provider,
        )

    @property
    def project(self) -> str:
        project = self.config.parameters.get("project") or self._service_account().get("project_id")
        if not project:
            raise InvalidRequest("GCE credentials need a project (parameter 'project')", provider=self.provider)
        return str(project)

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        account = self._service_account()
        kwargs: dict[str, Any] = {
            "project": self.project,
            "auth_type": "SA",
            "credential_file": str(Path(self.token_dir()) / "token.json"),
        }
        if self.endpoint:
            kwargs.update(self.endpoint.driver_kwargs())
        return (account["client_email"], account), kwargs

    def verify(self, driver: Driver) -> None:
        driver.connection.request("/zones", params={"maxResults": 1})

    def list_sizes(self, driver: Driver) -> list[CloudSize]:
        zone = self.config.parameters.get("zone") or f"{self.config.region or 'us-central1'}-a"
        body = driver.connection.request(f"/zones/{zone}/machineTypes").object
        return [
            CloudSize(
                id=item["name"],
                name=item["name"],
                vcpus=float(item.get("guestCpus", 0)),
                memory_mib=int(item.get("memoryMb", 0)),
            )
            for item in body.get("items", [])
        ]

    # -- tags -----------------------------------------------------------------------------
    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        return {label_key(k): label_value(v) for k, v in tags.items()}

    def decode_tags(self, raw: Mapping[str, str]) -> dict[str, str]:
        return {(_unlabel_key(k)): (_VALUES.decode(v) if k.startswith("skyfleet_") else v) for k, v in raw.items()}

    # -- nodes ----------------------------------------------------------------------------
    def _pages(self, driver: Driver, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = dict(params, maxResults=500)
            if token:
                page["pageToken"] = token
            body: dict[str, Any] = driver.connection.request(path, params=page).object
            yield body
            token = body.get("nextPageToken")
            if not token:
                return

    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        encoded = self.encode_tags(tags)
        expression = " AND ".join(f'(labels.{k} = "{v}")' for k, v in encoded.items())
        nodes: list[CloudNode] = []
        for body in self._pages(driver, "/aggregated/instances", {"filter": expression}):
            for scoped in (body.get("items") or {}).values():
                nodes.extend(self.instance(i) for i in scoped.get("instances", []))
        wanted = self.decode_tags(encoded)
        return [n for n in nodes if all(n.tags.get(k) == v for k, v in wanted.items())]

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        zone, name = self._split(provider_id)
        try:
            return self.instance(driver.connection.request(f"/zones/{zone}/instances/{name}").object)
        except GoogleBaseError as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        zone = req.zone or self.config.parameters.get("zone") or f"{req.region or self.config.region}-a"
        image = req.image_id if "/" in req.image_id else f"global/images/{req.image_id}"
        name = self.cloud_name(req)
        body: dict[str, Any] = {
            "name": name,
            "machineType": f"zones/{zone}/machineTypes/{req.size_id}",
            "labels": self.encode_tags(req.tags()),
            "disks": [{"boot": True, "autoDelete": True, "initializeParams": self.boot_disk(image, req.disk_gib)}],
            "networkInterfaces": [
                {
                    "network": self.config.parameters.get("network", "global/networks/default"),
                    "accessConfigs": [{"name": "External NAT", "type": "ONE_TO_ONE_NAT"}],
                }
            ],
        }
        if req.user_data:
            body["metadata"] = {"items": [{"key": "user-data", "value": req.user_data}]}
        if req.subnet:
            body["networkInterfaces"][0]["subnetwork"] = req.subnet
        params = {}
        token = req.effective_token
        if token:
            params["requestId"] = str(uuid.uuid5(_TOKEN_NAMESPACE, token))
        # The Google connection JSON-encodes request bodies itself.
        driver.connection.request(f"/zones/{zone}/instances", method="POST", data=body, params=params)
        # Insert is asynchronous; describe what now exists rather than trusting the request.
        created = self.describe(driver, f"{zone}/{name}")
        if created is not None:
            return created
        return CloudNode(
            provider_id=f"{zone}/{name}",
            name=name,
            state=NodeState.PENDING,
            size_id=req.size_id,
            image_id=req.image_id,
            region=self.config.region,
            zone=zone,
            tags=self.normalized(req.tags()),
        )

    @staticmethod
    def boot_disk(image: str, disk_gib: int | None) -> dict[str, Any]:
        """The boot disk's initializeParams; GCE sizes the disk to the image when none is given
        and refuses a size below the image's."""
        params: dict[str, Any] = {"sourceImage": image}
        if disk_gib is not None:
            params["diskSizeGb"] = str(disk_gib)  # int64 travels as a string in Google's JSON
        return params

    def destroy(self, driver: Driver, provider_id: str) -> None:
        zone, name = self._split(provider_id)
        driver.connection.request(f"/zones/{zone}/instances/{name}", method="DELETE")

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # setLabels replaces the whole set and takes the labelFingerprint it replaces, so the
        # labels are read raw once more. Should they change in between, GCE answers 412
        # conditionNotMet, and the connector retries from a fresh ownership check.
        zone, name = self._split(node.provider_id)
        path = f"/zones/{zone}/instances/{name}"
        current = driver.connection.request(path).object
        drop = {label_key(k) for k in keys}
        body = {
            "labels": {k: v for k, v in (current.get("labels") or {}).items() if k not in drop},
            "labelFingerprint": current.get("labelFingerprint"),
        }
        operation = driver.connection.request(f"{path}/setLabels", method="POST", data=body).object
        # The labels change when the operation is done; until then lookups would still find
        # the VM. The wait call blocks on GCE's side, and a failed operation raises here.
        if operation.get("status") != "DONE":
            wait = f"/zones/{zone}/operations/{operation['name']}/wait"
            if driver.connection.request(wait, method="POST").object.get("status") != "DONE":
                raise Transient(f"setLabels on {node.provider_id} has not finished yet", provider=self.provider)

    def instance(self, data: Mapping[str, Any]) -> CloudNode:
        interfaces = data.get("networkInterfaces") or []
        private = tuple(i["networkIP"] for i in interfaces if i.get("networkIP"))
        public = tuple(a["natIP"] for i in interfaces for a in i.get("accessConfigs") or [] if a.get("natIP"))
        zone = str(data.get("zone", "")).rsplit("/", 1)[-1]
        created = data.get("creationTimestamp")
        return CloudNode(
            provider_id=f"{zone}/{data['name']}",
            name=str(data["name"]),
            state=_STATES.get(str(data.get("status")), NodeState.UNKNOWN),
            public_ips=public,
            private_ips=private,
            size_id=str(data.get("machineType", "")).rsplit("/", 1)[-1] or None,
            image_id=None,
            region=zone.rsplit("-", 1)[0] if zone else self.config.region,
            zone=zone or None,
            tags=self.decode_tags(data.get("labels") or {}),
            created_at=datetime.fromisoformat(created) if created else None,
        )

    def _split(self, provider_id: str) -> tuple[str, str]:
        zone, _, name = provider_id.rpartition("/")
        if not zone or not name:
            raise InvalidRequest(f"GCE provider ids look like <zone>/<name>, got {provider_id!r}")
        return zone, name

    # -- baking: images from the builder's boot disk ------------------------------------------
    # Images are global to the project (every region boots them), named uniquely per bake, and
    # labelled like instances. The insert takes a requestId, and a name that exists already
    # (a lost answer) is adopted when its labels say it is ours.
    capabilities = dataclasses.replace(capabilities, bake=True)

    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        zone, name = self._split(req.source_id)
        instance = driver.connection.request(f"/zones/{zone}/instances/{name}").object
        boot = next((d for d in instance.get("disks") or [] if d.get("boot")), None)
        if boot is None or not boot.get("source"):
            raise InvalidRequest(f"instance {req.source_id} has no boot disk", provider=self.provider)
        body = {"name": req.name, "sourceDisk": boot["source"], "labels": self.encode_tags(req.tags)}
        params = {"requestId": str(uuid.uuid5(_TOKEN_NAMESPACE, f"image/{req.name}"))}
        try:
            driver.connection.request("/global/images", method="POST", data=body, params=params)
        except GoogleBaseError as exc:
            if str(exc.code or "") != "alreadyExists":
                raise
            existing = self.get_image(driver, req.name)
            wanted = self.decode_tags(self.encode_tags(req.tags))
            if existing is None or any(existing.tags.get(k) != v for k, v in wanted.items()):
                raise
            return existing
        return BakedImage(
            id=req.name,
            name=req.name,
            state=ImageState.PENDING,
            tags=self.decode_tags(self.encode_tags(req.tags)),
            region=self.config.region,
        )

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        try:
            return self._baked(driver.connection.request(f"/global/images/{image_id}").object)
        except GoogleBaseError as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        encoded = self.encode_tags(tags)
        expression = " AND ".join(f'(labels.{k} = "{v}")' for k, v in encoded.items())
        images = [
            image
            for body in self._pages(driver, "/global/images", {"filter": expression})
            for image in (self._baked(item) for item in body.get("items") or [])
            if image is not None
        ]
        wanted = self.decode_tags(encoded)
        return [i for i in images if all(i.tags.get(k) == v for k, v in wanted.items())]

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        driver.connection.request(f"/global/images/{image.id}", method="DELETE")

    def _baked(self, data: Mapping[str, Any]) -> BakedImage | None:
        state = _IMAGE_STATES.get(str(data.get("status")))
        if state is None:  # DELETING
            return None
        created = data.get("creationTimestamp")
        return BakedImage(
            id=str(data["name"]),
            name=str(data["name"]),
            state=state,
            tags=self.decode_tags(data.get("labels") or {}),
            region=self.config.region,
            created_at=datetime.fromisoformat(created) if created else None,
        )

    # -- end of baking --------------------------------------------------------------------------

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:  # noqa: PLR0911 - a decision table
        if isinstance(exc, GoogleBaseError):
            reason = str(exc.code or "")
            status = getattr(exc, "http_code", None)
            text = describe(exc)
            if reason in _THROTTLING or status == 429:
                return Throttled(text, provider=self.provider, code=reason or "429")
            if reason in _QUOTA:
                return QuotaExceeded(text, provider=self.provider, code=reason)
            if reason in _CAPACITY:
                return CapacityUnavailable(text, provider=self.provider, code=reason)
            if reason == "conditionNotMet" or status == 412:
                # A fingerprint (labels) gone stale: read again and retry.
                return Transient(text, provider=self.provider, code=reason or "412")
            if reason == "notFound" or status == 404:
                return NotFound(text, provider=self.provider, code=reason or "404")
            if status in (401, 403):
                return InvalidCredentials(text, provider=self.provider, code=reason or str(status))
            if isinstance(status, int) and status >= 500:
                return Transient(text, provider=self.provider, code=reason or str(status))
            if status in (400, 409):
                return InvalidRequest(text, provider=self.provider, code=reason or str(status))
        return map_generic(exc, self.provider)


_IMAGE_STATES = {"PENDING": ImageState.PENDING, "READY": ImageState.AVAILABLE, "FAILED": ImageState.FAILED}
