"""What every provider adapter provides to the libcloud connector.

Adapter methods are synchronous and run in the connector's worker threads with a driver
that belongs to that thread; they never touch asyncio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from libcloud.compute.base import Node, NodeImage, NodeLocation, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState as LibcloudState

from skyfleet.connectors.base import (
    ANY_OWNER,
    BakedImage,
    Capabilities,
    CloudImage,
    CloudLocation,
    CloudNode,
    CloudSize,
    CreateRequest,
    CredentialConfig,
    ImageOwnerTags,
    ImageRequest,
    NodeState,
    OwnerTags,
    read_parameters,
)
from skyfleet.connectors.errors import ConnectorError, InvalidCredentials, NotFound, Unsupported
from skyfleet.connectors.libcloud.errors import map_generic
from skyfleet.connectors.libcloud.transport import STOCK_CONNECTIONS, GuardedConnection
from skyfleet.connectors.naming import vm_name

__all__ = ["Driver", "Endpoint", "ProviderAdapter", "parse_endpoint"]

# Provider-specific driver methods (ex_*) and attributes are what adapters exist for, and
# libcloud's base class declares none of them: drivers are typed loosely on purpose.
Driver = Any

_STATES = {
    LibcloudState.RUNNING: NodeState.RUNNING,
    LibcloudState.PENDING: NodeState.PENDING,
    LibcloudState.STARTING: NodeState.PENDING,
    LibcloudState.REBOOTING: NodeState.RUNNING,
    LibcloudState.RECONFIGURING: NodeState.RUNNING,
    LibcloudState.STOPPED: NodeState.STOPPED,
    LibcloudState.STOPPING: NodeState.STOPPED,
    LibcloudState.SUSPENDED: NodeState.STOPPED,
    LibcloudState.PAUSED: NodeState.STOPPED,
    LibcloudState.TERMINATED: NodeState.TERMINATED,
    LibcloudState.ERROR: NodeState.UNKNOWN,
    LibcloudState.UNKNOWN: NodeState.UNKNOWN,
}


class Endpoint:
    """A parsed endpoint override: private clouds and emulators live at arbitrary URLs."""

    def __init__(self, secure: bool, host: str, port: int, path: str) -> None:
        self.secure = secure
        self.host = host
        self.port = port
        self.path = path

    @property
    def netloc_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    def driver_kwargs(self) -> dict[str, Any]:
        return {"secure": self.secure, "host": self.netloc_host, "port": self.port}

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://{self.netloc_host}:{self.port}{self.path}"


def parse_endpoint(url: str | None) -> Endpoint | None:
    if not url:
        return None
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must be http(s)://host[:port][/path], got {url!r}")
    secure = parts.scheme == "https"
    return Endpoint(secure, parts.hostname, parts.port or (443 if secure else 80), parts.path or "/")


def first_secret(config: CredentialConfig, *names: str) -> str:
    for name in names:
        if name in config.secret:
            return config.secret[name]
    raise InvalidCredentials(
        f"secret of credential {config.namespace}/{config.name} lacks a key; expected one of {list(names)}",
        provider=config.provider,
    )


class ProviderAdapter:
    """Default behaviour: tags in ``extra``-metadata, client-side tag filtering, no token."""

    provider: ClassVar[str]
    libcloud_provider: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    # Seconds a single read may take; the connector bounds the whole call (Limits.call_timeout).
    request_timeout: ClassVar[float] = 30.0
    # The parameters the adapter reads (snake_case; users may write them camelCase): any other
    # key in a credential's parameters is refused by name (UnknownParameter).
    parameters: ClassVar[tuple[str, ...]] = ()
    # Parameters holding URLs the driver connects to: checked like the endpoint itself.
    url_parameters: ClassVar[tuple[str, ...]] = ()
    # The provider's rules for VM names (see skyfleet.connectors.naming).
    name_max_length: ClassVar[int] = 63
    name_letter_first: ClassVar[bool] = False

    def __init__(self, config: CredentialConfig) -> None:
        config = dataclasses.replace(
            config, parameters=read_parameters(config.parameters, self.parameters, self.provider)
        )
        self.config = config
        self.endpoint = parse_endpoint(config.endpoint_url)
        policy = config.endpoint_policy
        if config.endpoint_url:
            policy.check_url(self.endpoint.url if self.endpoint else config.endpoint_url, what="endpoint")
        for name in self.url_parameters:
            if config.parameters.get(name):
                policy.check_url(config.parameters[name], what=f"parameter {name!r}")
        self._ca_lock = threading.Lock()
        self._ca_file: str | None = None

    def tls_verify(self) -> bool | str:
        """What the HTTP layer verifies the endpoint's certificate with: True (the default trust
        store), False (insecureSkipTlsVerify) or the path of the credential's CA bundle."""
        tls = self.config.tls
        if tls.insecure_skip_verify:
            return False
        if not tls.ca_bundle:
            return True
        with self._ca_lock:
            if self._ca_file is None or not os.path.exists(self._ca_file):
                fd, path = tempfile.mkstemp(prefix="skyfleet-ca-", suffix=".pem")
                with os.fdopen(fd, "w") as out:
                    out.write(tls.ca_bundle)
                self._ca_file = path
            return self._ca_file

    def cloud_name(self, req: CreateRequest) -> str:
        """The VM's name in the cloud: the Instance name made unique per installation and namespace."""
        return vm_name(
            req.name,
            cluster_id=req.owner.cluster_id,
            namespace=req.owner.namespace or "",
            max_length=self.name_max_length,
            letter_first=self.name_letter_first,
        )

    # -- driver ---------------------------------------------------------------------------
    def driver_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        raise NotImplementedError

    def make_driver(self) -> Driver:
        cls = get_driver(self.libcloud_provider)
        args, kwargs = self.driver_args()
        driver = cls(*args, **kwargs)
        driver.connection.timeout = self.request_timeout
        if driver.connection.conn_class in STOCK_CONNECTIONS:
            # Sub-connections (Keystone's catalogue, logins) inherit the instance's class.
            driver.connection.conn_class = GuardedConnection
        return driver

    def close(self) -> None:
        """Release what the adapter holds outside the process (files); what is needed again
        later is made again."""
        with self._ca_lock:
            if self._ca_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._ca_file)
                self._ca_file = None

    # -- catalogue ------------------------------------------------------------------------
    def verify(self, driver: Driver) -> None:
        driver.list_locations()

    def list_sizes(self, driver: Driver) -> list[CloudSize]:
        return [self.to_cloud_size(s) for s in driver.list_sizes()]

    def list_images(self, driver: Driver, owner: str | None = None) -> list[CloudImage]:
        """The catalogue; ``owner`` narrows it where the provider filters server-side (the
        caller filters by owner again either way)."""
        return [self.to_cloud_image(i) for i in driver.list_images()]

    def image_by_id(self, driver: Driver, image_id: str) -> CloudImage | None:
        """The image with exactly this id, or None."""
        return next((i for i in self.list_images(driver) if i.id == image_id), None)

    def lookup_owner(self, owner: str | None) -> str | None:
        """The owner a name lookup keeps to (``ANY_OWNER`` for every publisher); providers
        whose catalogue is the whole public's refuse a lookup that names none."""
        return owner

    def images_named(self, driver: Driver, name_pattern: str, owner: str | None) -> list[CloudImage]:
        """Candidates for a name lookup: as few as the provider can filter to server-side."""
        return self.list_images(driver, owner=None if owner == ANY_OWNER else owner)

    def list_locations(self, driver: Driver) -> list[CloudLocation]:
        return [
            CloudLocation(id=str(loc.id), name=str(loc.name), country=getattr(loc, "country", None))
            for loc in driver.list_locations()
        ]

    def vcpus(self, size: NodeSize) -> float | None:
        extra = size.extra or {}
        for key in ("vcpus", "cpu", "cpus", "numberOfCores", "guestCpus", "vcpu"):
            value = extra.get(key)
            if value is not None:
                try:
                    return float(value)
                except (TypeError, ValueError):
                    continue
        return None

    def to_cloud_size(self, size: NodeSize) -> CloudSize:
        return CloudSize(
            id=str(size.id),
            name=str(size.name),
            vcpus=self.vcpus(size),
            memory_mib=int(size.ram or 0),
            disk_gib=int(size.disk) if size.disk else None,
            price=float(size.price) if size.price else None,
        )

    def to_cloud_image(self, image: NodeImage) -> CloudImage:
        extra = image.extra or {}
        created = None
        for key in ("creation_date", "created_at", "creationTimestamp", "created"):
            if extra.get(key):
                created = _parse_time(str(extra[key]))
                break
        owner = next((str(extra[k]) for k in ("owner_id", "owner") if extra.get(k)), None)
        return CloudImage(id=str(image.id), name=str(image.name or image.id), created_at=created, owner=owner)

    # -- tags -----------------------------------------------------------------------------
    def encode_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        """Our tag keys in the provider's syntax."""
        return dict(tags)

    def decode_tags(self, raw: Mapping[str, str]) -> dict[str, str]:
        """Provider tags back to our keys; keys we did not write pass through unchanged."""
        return dict(raw)

    def normalized(self, tags: Mapping[str, str]) -> dict[str, str]:
        """What ``tags`` look like on a VM once read back: how to compare them with a VM's tags.
        Equal to ``tags`` wherever the provider's encoding can be reversed."""
        return self.decode_tags(self.encode_tags(tags))

    def carries(self, tags: Mapping[str, str], node_tags: Mapping[str, str]) -> bool:
        """Whether a VM with ``node_tags`` carries every one of ``tags``."""
        return all(node_tags.get(k) == v for k, v in self.normalized(tags).items())

    def owned_by(self, owner: OwnerTags, node_tags: Mapping[str, str]) -> bool:
        return self.carries(owner.identity(), node_tags)

    def raw_tags(self, node: Node) -> Mapping[str, str]:
        extra = node.extra or {}
        for key in ("tags", "metadata", "labels"):
            value = extra.get(key)
            if isinstance(value, Mapping):
                return {str(k): str(v) for k, v in value.items()}
        return {}

    # -- nodes ----------------------------------------------------------------------------
    def list_all(self, driver: Driver) -> list[Node]:
        nodes: list[Node] = driver.list_nodes()
        return nodes

    def find_by_tags(self, driver: Driver, tags: Mapping[str, str]) -> list[CloudNode]:
        found = [self.to_cloud_node(n) for n in self.list_all(driver)]
        return [n for n in found if n.state is not NodeState.TERMINATED and self.carries(tags, n.tags)]

    def describe(self, driver: Driver, provider_id: str) -> CloudNode | None:
        try:
            node = driver.ex_get_node(provider_id) if hasattr(driver, "ex_get_node") else None
        except Exception as exc:
            if isinstance(self.map_error(exc), NotFound):
                return None
            raise
        if node is None:
            for candidate in self.list_all(driver):
                if str(candidate.id) == provider_id:
                    node = candidate
                    break
        return self.to_cloud_node(node) if node is not None else None

    def describe_many(self, driver: Driver, ids: Sequence[str]) -> dict[str, CloudNode]:
        """The VMs of ``ids`` that exist, by id (one description each; providers that describe
        many at once in one request override this)."""
        found: dict[str, CloudNode] = {}
        for provider_id in dict.fromkeys(ids):
            node = self.describe(driver, provider_id)
            if node is not None:
                found[provider_id] = node
        return found

    def create(self, driver: Driver, req: CreateRequest) -> CloudNode:
        raise NotImplementedError

    def destroy(self, driver: Driver, provider_id: str) -> None:
        driver.destroy_node(self.node_stub(driver, provider_id))

    def destroy_many(self, driver: Driver, ids: Sequence[str]) -> set[str]:
        """Delete the VMs of ``ids`` (described and checked as ours moments ago); answer the ids
        this call deleted. An id left out was found gone already; any other outcome raises, so
        no VM is ever reported deleted that was not. One request per VM here; providers whose
        delete takes many ids (``Capabilities.destroy_batch``) override this."""
        deleted: set[str] = set()
        for provider_id in dict.fromkeys(ids):
            try:
                self.destroy(driver, provider_id)
            except Exception as exc:
                if isinstance(self.map_error(exc), NotFound):
                    continue
                raise
            deleted.add(provider_id)
        return deleted

    def resize(self, driver: Driver, provider_id: str, size_id: str) -> CloudNode:
        raise Unsupported(f"{self.provider} cannot resize an instance in place", provider=self.provider)

    def untag(self, driver: Driver, node: CloudNode, keys: Sequence[str]) -> None:
        """Remove the tags ``keys`` (our spelling) from ``node``, leaving every other tag as it is.

        ``node`` is a description read moments ago in the same attempt, after the connector
        checked ownership. Adapters that implement this declare ``Capabilities(release=True)``.
        """
        raise Unsupported(f"{self.provider} cannot remove tags from an instance", provider=self.provider)

    def node_stub(self, driver: Driver, provider_id: str) -> Node:
        return Node(provider_id, provider_id, LibcloudState.UNKNOWN, [], [], driver)

    def size_stub(self, driver: Driver, size_id: str) -> NodeSize:
        return NodeSize(size_id, size_id, 0, 0, 0, 0, driver)

    def image_stub(self, driver: Driver, image_id: str) -> NodeImage:
        return NodeImage(image_id, image_id, driver)

    def location_stub(self, driver: Driver, location_id: str) -> NodeLocation:
        return NodeLocation(location_id, location_id, "", driver)

    def to_cloud_node(self, node: Node) -> CloudNode:
        extra = node.extra or {}
        size = getattr(node, "size", None)
        image = getattr(node, "image", None)
        return CloudNode(
            provider_id=str(node.id),
            name=str(node.name or ""),
            state=_STATES.get(node.state, NodeState.UNKNOWN),
            public_ips=tuple(str(i) for i in (node.public_ips or []) if i),
            private_ips=tuple(str(i) for i in (node.private_ips or []) if i),
            size_id=_first_str(extra, "instance_type", "flavorId", "machineType", "size", "type")
            or (str(size.id) if size is not None and getattr(size, "id", None) else None),
            image_id=_first_str(extra, "image_id", "imageId", "image")
            or (str(image.id) if image is not None and getattr(image, "id", None) else None),
            region=self.config.region,
            zone=_first_str(extra, "availability", "availability_zone", "zone", "location"),
            tags=self.decode_tags(self.raw_tags(node)),
            created_at=node.created_at if isinstance(node.created_at, datetime) else None,
        )

    # -- baking (Capabilities.bake) ---------------------------------------------------------
    # Every method runs in a worker thread with that thread's driver, like the node methods;
    # the connector checks ownership and routes writes through the write budget.
    def create_image(self, driver: Driver, req: ImageRequest) -> BakedImage:
        """Start making an image from the stopped VM ``req.source_id``; do not wait for it."""
        raise Unsupported(f"{self.provider} cannot make images", provider=self.provider)

    def get_image(self, driver: Driver, image_id: str) -> BakedImage | None:
        """The image, or None when it does not exist (or is being deleted)."""
        raise Unsupported(f"{self.provider} cannot read images", provider=self.provider)

    def find_images(self, driver: Driver, tags: Mapping[str, str]) -> list[BakedImage]:
        """This account's images carrying all of ``tags`` (our spelling), any state."""
        raise Unsupported(f"{self.provider} cannot find images by tags", provider=self.provider)

    def tag_image(self, driver: Driver, image: BakedImage, tags: Mapping[str, str]) -> None:
        """Add ``tags`` to an image made without them (only where create cannot tag)."""
        raise Unsupported(f"{self.provider} cannot tag images", provider=self.provider)

    def deregister_image(self, driver: Driver, image: BakedImage, owner: ImageOwnerTags) -> None:
        """Deregister ``image`` (described moments ago, ownership checked) and its snapshots."""
        raise Unsupported(f"{self.provider} cannot deregister images", provider=self.provider)

    def delete_image_leftovers(self, driver: Driver, image_id: str, owner: ImageOwnerTags) -> None:
        """The image is gone: delete what an interrupted deregister left of it (if anything)."""

    def copy_image(
        self, driver: Driver, source_region: str, source_image_id: str, name: str, tags: Mapping[str, str]
    ) -> BakedImage:
        raise Unsupported(f"{self.provider} cannot copy images between regions", provider=self.provider)

    def share_image(self, driver: Driver, image: BakedImage, accounts: Sequence[str]) -> None:
        raise Unsupported(f"{self.provider} cannot share images", provider=self.provider)

    def console_output(self, driver: Driver, provider_id: str) -> str | None:
        raise Unsupported(f"{self.provider} offers no console output", provider=self.provider)

    # -- end of baking ----------------------------------------------------------------------

    # -- errors ---------------------------------------------------------------------------
    def map_error(self, exc: BaseException) -> ConnectorError:
        return map_generic(exc, self.provider)


def _first_str(extra: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = extra.get(key)
        if isinstance(value, str) and value:
            return value.rsplit("/", 1)[-1]
        name = getattr(value, "name", None)
        if isinstance(name, str) and name:
            return name
    return None


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(re.sub(r"Z$", "+00:00", text.strip()))
    except ValueError:
        return None
