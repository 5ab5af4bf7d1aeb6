"""Amazon EC2 (and EC2-compatible endpoints).

What differs from the default: tags are real EC2 tags and filterable server-side;
RunInstances takes a ClientToken, so a lost create response is harmless; DescribeInstances
pages with NextToken, which libcloud's ``list_nodes`` ignores, so we page ourselves.

Secret keys: ``accessKeyId`` and ``secretAccessKey`` (as the README documents; also
``aws_access_key_id``/``access_key_id`` and ``aws_secret_access_key``/``secret_access_key``),
optional ``sessionToken``/``aws_session_token``/``session_token``.
Parameters: ``architecture`` (``x86_64``, the default, or ``arm64``: which instance types a
size given as cpu/memory is chosen from), ``image_owner`` (the owner of name lookups that name
none), ``describe_page_size`` (MaxResults, 5-1000), ``client_token`` (``false`` for an
EC2-compatible endpoint that ignores ClientToken: a create whose outcome is unknown then waits
for the listing instead of being re-sent), ``terminate_batch_size`` (the most instance ids one
TerminateInstances names, 1-1000, default 1000; 1 for an EC2-compatible endpoint that takes one).

Deletes: TerminateInstances and DescribeInstances take many ids (``InstanceId.N``), so the
connector deletes concurrent destroys together (``Capabilities.destroy_batch``). Either call fails
whole with ``InvalidInstanceID.NotFound`` when one id is unknown; ``describe_many`` and
``destroy_many`` find which and go on with the rest.

Images: EC2 lists every public AMI (the whole public catalogue, hundreds of MB) to anyone who
does not say whose images they want, and anyone can publish an AMI with a familiar name. So an
explicit id is asked for exactly (``ImageId.1``), a name lookup asks for one owner's images
(``Owner.1``) whose name matches (``Filter name``), and a name lookup without owner is refused
unless the Image says ``owner: "*"`` (any publisher, knowingly).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeSize
from libcloud.compute.drivers.ec2 import (
    NAMESPACE,
    EC2NetworkSubnet,
    EC2NodeLocation,
    ExEC2AvailabilityZone,
    IdempotentParamError,
)
from libcloud.compute.types import Provider

from skyfleet.connectors.base import (
    ANY_OWNER,
    BakedImage,
    Capabilities,
    CloudImage,
    CloudNode,
    CloudSize,
    CreateRequest,
    CredentialConfig,
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
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter, first_secret
from skyfleet.connectors.libcloud.errors import describe, http_status, map_generic, retry_after_from

__all__ = ["EC2Adapter", "client_token"]

_NS = f"{{{NAMESPACE}}}"
_LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
_PAGE_SIZE = 1000  # AWS's maximum; fewer round trips per sweep
# The most instance ids one DescribeInstances or TerminateInstances names.
_ID_BATCH = 1000
_INSTANCE_ID = re.compile(r"\bi-[0-9A-Za-z]+\b")

_THROTTLING = {"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"}
_TRANSIENT = {"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"}
_QUOTA = {"InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "ResourceLimitExceeded"}
_CAPACITY = {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity"}
_NOT_FOUND = {"InvalidInstanceID.NotFound"}
# Owner aliases DescribeImages understands besides account ids.
_OWNER_ALIASES = {"amazon", "aws-marketplace", "aws-backup-vault"}
_AUTH = {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "OptInRequired", "UnauthorizedOperation"}
_BY_CODE: dict[str, type[ConnectorError]] = {
    **dict.fromkeys(_THROTTLING, Throttled),
    **dict.fromkeys(_TRANSIENT, Transient),
    **dict.fromkeys(_QUOTA, QuotaExceeded),
    **dict.fromkeys(_CAPACITY, CapacityUnavailable),
    **dict.fromkeys(_NOT_FOUND, NotFound),
    **dict.fromkeys(_AUTH, InvalidCredentials),
}


def client_token(token: str) -> str:
    """EC2 accepts at most 64 ASCII characters; longer or non-ASCII tokens are hashed to fit."""
    if len(token) <= 64 and token.isascii():
        return token
    return hashlib.sha256(token.encode()).hexdigest()


class EC2Adapter(ProviderAdapter):
    provider = "ec2"
    libcloud_provider = Provider.EC2
    capabilities = Capabilities(
        tags=True,
        user_data=True,
        resize=True,
        idempotency_token=True,
        release=True,
        max_user_data_bytes=16384,  # EC2: 16 KB before base64
        root_disk_sizing=True,
        subnet=True,  # RunInstances SubnetId
        destroy_batch=_ID_BATCH,  # TerminateInstances InstanceId.1..N
    )
    parameters = ("architecture", "image_owner", "describe_page_size", "client_token", "terminate_batch_size")

    def __init__(self, config: CredentialConfig) -> None:
        super().__init__(config)
        honoured = self.config.parameters.get("client_token", "true").lower()
        if honoured not in ("true", "false"):
            raise InvalidRequest(f"parameter client_token must be true or false, not {honoured[:20]!r}", provider="ec2")
        if honoured == "false":
            self.capabilities = dataclasses.replace(self.capabilities, idempotency_token=False)  # type: ignore[misc]
        batch = self.config.parameters.get("terminate_batch_size", str(_ID_BATCH))
        if not batch.isdigit() or not 1 <= int(batch) <= _ID_BATCH:
            raise InvalidRequest(
                f"parameter terminateBatchSize must be a whole number from 1 to {_ID_BATCH}, not {batch[:20]!r}",
                provider="ec2",
            )
        if int(batch) != _ID_BATCH:
            self.capabilities = dataclasses.replace(self.capabilities, destroy_batch=int(batch))  # type: ignore[misc]

    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        key = first_secret(self.config, "accessKeyId", "aws_access_key_id", "access_key_id", "key")
        secret = first_secret(self.config, "secretAccessKey", "aws_secret_access_key", "secret_access_key", "secret")
        # SigV4 keeps the access key id out of URLs (and so out of HTTP debug logs), and is
        # what every current AWS region requires anyway.
        kwargs: dict[str, Any] = {"region": self.config.region or "us-east-1", "signature_version": "4"}
        token = next(
            (
                self.config.secret[k]
                for k in ("sessionToken", "aws_session_token", "session_token")
                if k in self.config.secret
            ),
            None,
        )
        if token:
            kwargs["token"] = token
        if self.endpoint:
            kwargs.update(self.endpoint.driver_kwargs())
        return (key, secret), kwargs

    def make_driver(self) -> Driver:
        driver = super().make_driver()
        if self.endpoint:
            driver.path = self.endpoint.path
        return driver

    def verify(self, driver: Driver) -> None:
        driver.connection.request(driver.path, params={"Action": "DescribeAvailabilityZones"})

    def to_cloud_size(self, size: NodeSize) -> CloudSize:
        return dataclasses.replace(super().to_cloud_size(size), architecture=_architecture(size.extra or {}))

    def list_images(self, driver: Driver, owner: str | None = None) -> list[CloudImage]:
        # Without an owner EC2 lists every public AMI (tens of thousands): the account's own then.
        owner = owner or self.config.parameters.get("image_owner") or "self"
        return [self.to_cloud_image(i) for i in driver.list_images(ex_owner=owner)]

    def image_by_id(self, driver: Driver, image_id: str) -> CloudImage | None:
        try:
            found = driver.list_images(ex_image_ids=[image_id])
        except Exception as exc:
            # InvalidAMIID.NotFound, .Unavailable, .Malformed: there is no such image to boot.
            if (self.map_error(exc).code or "").startswith("InvalidAMIID."):
                return None
            raise
        return next((self.to_cloud_image(i) for i in found if str(i.id) == image_id), None)

    def lookup_owner(self, owner: str | None) -> str | None:
        owner = owner or self.config.parameters.get("image_owner")
        if not owner:
            raise InvalidRequest(
                "EC2 offers every public image to a name lookup, and anyone can publish one with a "
                "familiar name: give lookup.owner (an account id, 'self' or 'amazon'), or '*' to "
                "accept any publisher",
                provider=self.provider,
                code="OwnerRequired",
            )
        return owner

    def images_named(self, driver: Driver, name_pattern: str, owner: str | None) -> list[CloudImage]:
        filters: dict[str, str] = {}
        # EC2 name filters know * and ? as fnmatch does; a pattern with [] is matched client-side only.
        if not re.search(r"[\[\]\\]", name_pattern):
            filters["name"] = name_pattern
        by = None if owner in (None, ANY_OWNER) else owner
        images: list[CloudImage] = []
        for image in driver.list_images(ex_owner=by, ex_filters=filters or None):
            cloud = self.to_cloud_image(image)
            if by in _OWNER_ALIASES:
                # Asked for by alias, EC2 reports the account id: keep what carries the alias.
                if (image.extra or {}).get("owner_alias") != by:
                    continue
                cloud = dataclasses.replace(cloud, owner=by)
            elif by == "self":
                # Only EC2 knows which account "self" is; its answer is taken as it is.
                cloud = dataclasses.replace(cloud, owner=by)
            images.append(cloud)
        return images

    # -- listing: our own pagination ----------------------------------------------------
    def describe_instances(self, driver: Driver, params: Mapping[str, str]) -> list[Node]:
        nodes: list[Node] = []
        token: str | None = None
        while True:
            page = {"Action": "DescribeInstances", **params}
            if token:
                page["NextToken"] = token
            elem = driver.connection.request(driver.path, params=page).object
            for reservation in elem.findall(f"{_NS}reservationSet/{_NS}item"):
                nodes.extend(driver._to_nodes(reservation, "instancesSet/item"))
            token = elem.findtext(f"{_NS}nextToken")
            if not token:
                return nodes

    def _filter_params(self, filters: Mapping[str, list[str]]) -> dict[str, str]:
        page_size = self.config.parameters.get("describe_page_size", str(_PAGE_SIZE))
        params: dict[str, str] = {"MaxResults": page_size}
        for i, (name, values) in enumerate(filters.items(), start=1):
            params[f"Filter.{i}.Name"] = name
            for j, value in enumerate(values, start=1):
                params[f"Filter.{i}.Value.{j}"] = value
        return params

    def list_all(self, driver: Driver) -> list[Node]:
        return self.describe_instances(driver, self._filter_params({}))

    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        filters = {f"tag:{k}": [v] for k, v in self.encode_tags(tags).items()}
        filters["instance-state-name"] = _LIVE_STATES
        nodes = [self.to_cloud_node(n) for n in self.describe_instances(driver, self._filter_params(filters))]
        # The server filtered already; checking again costs nothing and guards against
        # EC2-compatible clouds that silently ignore unknown filters.
        return [n for n in nodes if all(n.tags.get(k) == v for k, v in tags.items())]

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        try:
            nodes = self.describe_instances(driver, {"InstanceId.1": provider_id})
        except Exception as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise
        return self.to_cloud_node(nodes[0]) if nodes else None

    def describe_many(self, driver: Driver, ids: Sequence[str]) -> dict[str, CloudNode]:
        """One DescribeInstances per 1000 ids. EC2 refuses the whole call when one id is unknown
        (long terminated, or never ours) or malformed (no VM has it): the ids its error names are
        dropped and the rest asked again; where it names none, the ids are halved until the
        unknown ones are found."""
        wanted = list(dict.fromkeys(ids))
        found: dict[str, CloudNode] = {}
        chunks = [wanted[i : i + _ID_BATCH] for i in range(0, len(wanted), _ID_BATCH)]
        while chunks:
            chunk = chunks.pop()
            try:
                nodes = self.describe_instances(driver, _numbered("InstanceId", chunk))
            except Exception as exc:
                mapped = self.map_error(exc)
                if not isinstance(mapped, NotFound) and mapped.code != "InvalidInstanceID.Malformed":
                    raise
                named = set(_INSTANCE_ID.findall(str(mapped))) & set(chunk)
                if named:
                    rest = [i for i in chunk if i not in named]
                    chunks.extend([rest] if rest else [])
                elif len(chunk) > 1:
                    half = len(chunk) // 2
                    chunks.extend([chunk[:half], chunk[half:]])
                continue
            asked = set(chunk)
            for node in nodes:
                cloud = self.to_cloud_node(node)
                if cloud.provider_id in asked:
                    found[cloud.provider_id] = cloud
        return found

    # -- mutations ------------------------------------------------------------------------
    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        location = None
        if req.zone:
            # libcloud's constructors are unannotated; the arguments match their docstrings.
            zone = ExEC2AvailabilityZone(req.zone, "available", driver.region_name)  # type: ignore[no-untyped-call]
            location = EC2NodeLocation(req.zone, req.zone, "", driver, zone)  # type: ignore[no-untyped-call]
        token = req.effective_token
        node = driver.create_node(
            name=self.cloud_name(req),
            size=self.size_stub(driver, req.size_id),
            image=self.image_stub(driver, req.image_id),
            location=location,
            ex_userdata=req.user_data,
            ex_metadata=self.encode_tags(req.tags()),
            ex_clienttoken=client_token(token) if token else None,
            ex_blockdevicemappings=self.root_volume(driver, req),
            ex_subnet=EC2NetworkSubnet(req.subnet, req.subnet, "available") if req.subnet else None,  # type: ignore[no-untyped-call]
        )
        return self.to_cloud_node(node)

    def root_volume(self, driver: Driver, req: CreateRequest) -> list[dict[str, Any]] | None:
        """The block device mapping that sizes the root EBS volume to ``req.disk_gib``.

        The root device's name is the AMI's (``/dev/xvda``, ``/dev/sda1``, ...), so the image is
        read first; the volume never shrinks below the AMI's snapshot, which EC2 would refuse.
        """
        if req.disk_gib is None:
            return None
        # libcloud's image parser drops rootDeviceName, so the image is read here.
        elem = driver.connection.request(
            driver.path, params={"Action": "DescribeImages", "ImageId.1": req.image_id}
        ).object
        image = next(
            (i for i in elem.findall(f"{_NS}imagesSet/{_NS}item") if i.findtext(f"{_NS}imageId") == req.image_id), None
        )
        if image is None:
            raise NotFound(f"image {req.image_id} not found", provider=self.provider, code="InvalidAMIID.NotFound")
        root = image.findtext(f"{_NS}rootDeviceName")
        if not root or image.findtext(f"{_NS}rootDeviceType") == "instance-store":
            raise InvalidRequest(
                f"image {req.image_id} has no EBS root device, so its root disk cannot be sized; drop diskGiB",
                provider=self.provider,
                code="RootDiskNotSizable",
            )
        current = next(
            (
                m.findtext(f"{_NS}ebs/{_NS}volumeSize")
                for m in image.findall(f"{_NS}blockDeviceMapping/{_NS}item")
                if m.findtext(f"{_NS}deviceName") == root
            ),
            None,
        )
        return [{"DeviceName": root, "Ebs": {"VolumeSize": max(req.disk_gib, int(current or 0))}}]

    def destroy_many(self, driver: Driver, ids: Sequence[str]) -> set[str]:
        """One TerminateInstances per ``destroy_batch`` ids, sent by hand (libcloud's destroy_node
        names one). EC2 refuses the whole call when one id is unknown: the ids are described
        again and the request sent once more for those still there and not terminated; an id
        counts as deleted only when the answer names it."""
        wanted = list(dict.fromkeys(ids))
        size = self.capabilities.destroy_batch
        deleted: set[str] = set()
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            for _ in range(_TERMINATE_ROUNDS):
                try:
                    elem = driver.connection.request(
                        driver.path, params={"Action": "TerminateInstances", **_numbered("InstanceId", chunk)}
                    ).object
                except Exception as exc:
                    if not isinstance(self.map_error(exc), NotFound):
                        raise
                    present = self.describe_many(driver, chunk)
                    chunk = [i for i in chunk if i in present and present[i].state is not NodeState.TERMINATED]
                    if not chunk:
                        break
                    continue
                answered = {
                    str(item.findtext(f"{_NS}instanceId")) for item in elem.findall(f"{_NS}instancesSet/{_NS}item")
                }
                deleted.update(i for i in chunk if i in answered)
                # An id the answer leaves out is checked again rather than taken as deleted.
                chunk = [i for i in chunk if i not in answered]
                if not chunk:
                    break
                present = self.describe_many(driver, chunk)
                chunk = [i for i in chunk if i in present and present[i].state is not NodeState.TERMINATED]
                if not chunk:
                    break
            else:
                raise Transient(
                    f"TerminateInstances left {len(chunk)} instance(s) neither terminated nor unknown",
                    provider=self.provider,
                    code="TerminateIncomplete",
                )
        return deleted

    def resize(self, driver: Driver, provider_id: str, size_id: str) -> CloudNode:
        current = self.describe(driver, provider_id)
        if current is None:
            raise NotFound(f"instance {provider_id} not found", provider=self.provider)
        if current.state is not NodeState.STOPPED:
            raise InvalidRequest(
                f"EC2 changes the instance type only while stopped; {provider_id} is {current.state.value}",
                provider=self.provider,
            )
        driver.ex_change_node_size(self.node_stub(driver, provider_id), self.size_stub(driver, size_id))
        resized = self.describe(driver, provider_id)
        assert resized is not None
        return resized

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        # DeleteTags with values removes a tag only while it still has that value, so a tag
        # rewritten since the ownership check stays. Sent by hand: libcloud's ex_delete_tags
        # numbers the lists from 0 (ResourceId.0), the API documents them from 1, and
        # EC2-compatible endpoints (moto among them) reject the 0-based form.
        params = {"Action": "DeleteTags", "ResourceId.1": node.provider_id}
        for i, (key, value) in enumerate(self.encode_tags({k: node.tags[k] for k in keys}).items(), start=1):
            params[f"Tag.{i}.Key"] = key
            params[f"Tag.{i}.Value"] = value
        driver.connection.request(driver.path, params=params)

    # -- baking: AMIs from stopped builders ----------------------------------------------
    # Requests are sent by hand like DeleteTags above: libcloud's create_image cannot tag, its
    # copy_image takes (image, source_region) where the base class takes (source_region,
    # image), and neither pages nor reports an image's tags and snapshots together.
    capabilities = dataclasses.replace(capabilities, bake=True, image_copy=True, image_share=True)

    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        # TagSpecification tags the AMI in the same request: there is no moment in which it
        # exists untagged. The builder is stopped already, so NoReboot changes nothing.
        params = {"Action": "CreateImage", "InstanceId": req.source_id, "Name": req.name, "NoReboot": "true"}
        if req.description:
            params["Description"] = req.description
        params.update(_tag_specification("image", self.encode_tags(req.tags)))
        try:
            elem = driver.connection.request(driver.path, params=params).object
        except BaseHTTPError as exc:
            # AMI names are unique per account and region: a duplicate means an earlier attempt
            # made it and its answer was lost. That one counts, if it is ours.
            if _error_code(str(exc.message)) == "InvalidAMIName.Duplicate":
                for image in self._describe_images(driver, {"Owner.1": "self", **_filters({"name": [req.name]})}):
                    if all(image.tags.get(k) == v for k, v in req.tags.items()):
                        return image
            raise
        return BakedImage(
            id=str(elem.findtext(f"{_NS}imageId")),
            name=req.name,
            state=ImageState.PENDING,
            tags=dict(req.tags),
            region=self.config.region,
        )

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        try:
            found = self._describe_images(driver, {"ImageId.1": image_id})
        except BaseHTTPError as exc:
            if (_error_code(str(exc.message)) or "").startswith("InvalidAMIID."):
                return None
            raise
        return found[0] if found else None

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        filters = {f"tag:{k}": [v] for k, v in self.encode_tags(tags).items()}
        found = self._describe_images(driver, {"Owner.1": "self", **_filters(filters)})
        return [i for i in found if all(i.tags.get(k) == v for k, v in tags.items())]

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        if image.snapshot_ids:
            # Our identity goes on the snapshots first: should this call stop after the
            # deregistration, the next one finds them by tags, the AMI that vouched for them gone.
            params = {"Action": "CreateTags"}
            for i, snapshot in enumerate(image.snapshot_ids, start=1):
                params[f"ResourceId.{i}"] = snapshot
            params.update(_tag_params(self.encode_tags(owner.identity())))
            driver.connection.request(driver.path, params=params)
        driver.connection.request(driver.path, params={"Action": "DeregisterImage", "ImageId": image.id})
        for snapshot in image.snapshot_ids:
            self._delete_snapshot(driver, snapshot)

    def delete_image_leftovers(self, driver: Driver, image_id: str, owner: ImageOwnerTags) -> None:
        filters = {f"tag:{k}": [v] for k, v in self.encode_tags(owner.identity()).items()}
        # CreateImage describes its snapshots "Created by CreateImage(i-...) for ami-...", CopyImage
        # "Copied for DestinationAmi ami-... from SourceAmi ...": the id ends the text or a word.
        filters["description"] = [f"* {image_id}", f"* {image_id} *"]
        params = {"Action": "DescribeSnapshots", "Owner.1": "self", **_filters(filters)}
        elem = driver.connection.request(driver.path, params=params).object
        for snapshot in elem.findall(f"{_NS}snapshotSet/{_NS}item"):
            self._delete_snapshot(driver, str(snapshot.findtext(f"{_NS}snapshotId")))

    def copy_image(
        self, driver: Driver, source_region: str, source_image_id: str, name: str, tags: Mapping[str, str]
    ) -> BakedImage:
        # CopyImage runs in the destination region (this connector's). Its ClientToken makes a
        # retry answer the copy already made, so a copy whose tagging was interrupted is found
        # and tagged by the next attempt instead of copied again.
        params = {
            "Action": "CopyImage",
            "SourceRegion": source_region,
            "SourceImageId": source_image_id,
            "Name": name,
            "ClientToken": client_token(f"copy/{source_region}/{source_image_id}/{name}"),
        }
        elem = driver.connection.request(driver.path, params=params).object
        image_id = str(elem.findtext(f"{_NS}imageId"))
        tagging = {"Action": "CreateTags", "ResourceId.1": image_id, **_tag_params(self.encode_tags(tags))}
        driver.connection.request(driver.path, params=tagging)
        return BakedImage(id=image_id, name=name, state=ImageState.PENDING, tags=dict(tags), region=self.config.region)

    def share_image(self, driver: Driver, image: BakedImage, accounts: Sequence[str]) -> None:
        params = {"Action": "ModifyImageAttribute", "ImageId": image.id}
        for i, account in enumerate(accounts, start=1):
            params[f"LaunchPermission.Add.{i}.UserId"] = account
        driver.connection.request(driver.path, params=params)

    def console_output(self, driver: Driver, provider_id: str) -> str | None:
        params = {"Action": "GetConsoleOutput", "InstanceId": provider_id}
        encoded = driver.connection.request(driver.path, params=params).object.findtext(f"{_NS}output")
        if not encoded:
            return None
        return base64.b64decode(encoded).decode("utf-8", errors="replace")

    def _describe_images(self, driver: Driver, params: Mapping[str, str]) -> list[BakedImage]:
        images: list[BakedImage] = []
        token: str | None = None
        while True:
            page = {"Action": "DescribeImages", **params}
            if token:
                page["NextToken"] = token
            elem = driver.connection.request(driver.path, params=page).object
            images.extend(
                image for item in elem.findall(f"{_NS}imagesSet/{_NS}item") if (image := self._baked(item)) is not None
            )
            token = elem.findtext(f"{_NS}nextToken")
            if not token:
                return images

    def _baked(self, item: Any) -> BakedImage | None:
        state = _IMAGE_STATES.get(str(item.findtext(f"{_NS}imageState")))
        if state is None:  # deregistered: gone, whatever DescribeImages still shows
            return None
        raw = {
            str(t.findtext(f"{_NS}key")): str(t.findtext(f"{_NS}value") or "")
            for t in item.findall(f"{_NS}tagSet/{_NS}item")
        }
        snapshots = tuple(
            str(e.text) for e in item.findall(f"{_NS}blockDeviceMapping/{_NS}item/{_NS}ebs/{_NS}snapshotId") if e.text
        )
        created = item.findtext(f"{_NS}creationDate")
        return BakedImage(
            id=str(item.findtext(f"{_NS}imageId")),
            name=str(item.findtext(f"{_NS}name") or ""),
            state=state,
            tags=self.decode_tags(raw),
            region=self.config.region,
            created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
            snapshot_ids=snapshots,
            reason=item.findtext(f"{_NS}stateReason/{_NS}code") if state is ImageState.FAILED else None,
        )

    def _delete_snapshot(self, driver: Driver, snapshot_id: str) -> None:
        try:
            driver.connection.request(driver.path, params={"Action": "DeleteSnapshot", "SnapshotId": snapshot_id})
        except BaseHTTPError as exc:
            if _error_code(str(exc.message)) != "InvalidSnapshot.NotFound":
                raise

    # -- end of baking ------------------------------------------------------------------

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:
        if isinstance(exc, IdempotentParamError):
            return InvalidRequest(
                f"idempotency token reused with different parameters: {describe(exc)}",
                provider=self.provider,
                code="IdempotentParameterMismatch",
            )
        if isinstance(exc, InvalidCredsError):
            code = _error_code(str(getattr(exc, "value", "") or ""))
            return InvalidCredentials(f"credentials rejected: {describe(exc)}", provider=self.provider, code=code)
        if isinstance(exc, BaseHTTPError):
            code = _error_code(str(exc.message))
            kind = _BY_CODE.get(code or "")
            if kind is None and code and code.startswith(("Invalid", "Missing")) and (http_status(exc) or 400) < 500:
                kind = InvalidRequest
            if kind in (Throttled, Transient):
                return kind(describe(exc), retry_after=retry_after_from(exc), provider=self.provider, code=code)
            if kind is not None:
                return kind(describe(exc), provider=self.provider, code=code)
        return map_generic(exc, self.provider)


# How often one TerminateInstances batch is sent again after EC2 refused an unknown id in it.
_TERMINATE_ROUNDS = 3


def _numbered(name: str, values: Sequence[str]) -> dict[str, str]:
    """``Name.1``, ``Name.2``, ...: the Query API's lists."""
    return {f"{name}.{i}": value for i, value in enumerate(values, start=1)}


def _architecture(extra: Mapping[str, Any]) -> str:
    return "arm64" if "graviton" in str(extra.get("physicalProcessor", "")).lower() else "x86_64"


def _error_code(message: str) -> str | None:
    # libcloud's EC2 error text is "Code: message" (several joined by newlines).
    head = message.split(":", 1)[0].strip()
    return head if head and " " not in head else None


# -- baking helpers ---------------------------------------------------------------------------
_IMAGE_STATES = {
    "pending": ImageState.PENDING,
    "transient": ImageState.PENDING,
    "available": ImageState.AVAILABLE,
    "failed": ImageState.FAILED,
    "error": ImageState.FAILED,
    "invalid": ImageState.FAILED,
    "disabled": ImageState.FAILED,
}


def _filters(filters: Mapping[str, Sequence[str]]) -> dict[str, str]:
    params: dict[str, str] = {}
    for i, (name, values) in enumerate(filters.items(), start=1):
        params[f"Filter.{i}.Name"] = name
        for j, value in enumerate(values, start=1):
            params[f"Filter.{i}.Value.{j}"] = value
    return params


def _tag_params(tags: Mapping[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for i, (key, value) in enumerate(tags.items(), start=1):
        params[f"Tag.{i}.Key"] = key
        params[f"Tag.{i}.Value"] = value
    return params


def _tag_specification(resource_type: str, tags: Mapping[str, str]) -> dict[str, str]:
    params = {"TagSpecification.1.ResourceType": resource_type}
    params.update({f"TagSpecification.1.{k}": v for k, v in _tag_params(tags).items()})
    return params
