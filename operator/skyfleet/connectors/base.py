"""The connector contract: the data the operator exchanges with any cloud, and the async interface.

Everything here is provider-neutral. Provider quirks (tag syntax, idempotency tokens, paging)
live behind ``Connector`` implementations; the operator only sees these types.
"""

from __future__ import annotations

import abc
import enum
import fnmatch
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import ClassVar, Protocol, Self

from skyfleet.connectors.endpoints import EndpointPolicy, TLSOptions
from skyfleet.connectors.errors import InvalidRequest, NotFound, Unsupported

__all__ = [
    "ANY_OWNER",
    "BakedImage",
    "CallObserver",
    "Capabilities",
    "CloudImage",
    "CloudLocation",
    "CloudNode",
    "CloudSize",
    "Connector",
    "CreateRequest",
    "CredentialConfig",
    "ImageOwnerTags",
    "ImageRequest",
    "ImageState",
    "Limits",
    "NodeState",
    "OwnerTags",
    "SecretData",
]

_MASK = "***"
# An image lookup's owner that opts into every publisher's images (see pick_image).
ANY_OWNER = "*"


class SecretData(Mapping[str, str]):
    """The decoded data of a Secret, readable by key but masked in every repr/str.

    Wrapping the mapping, instead of trusting every caller to remember ``repr=False``,
    keeps values out of logs, exceptions and debugger output by construction.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data: Mapping[str, str] = MappingProxyType(dict(data or {}))

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return "SecretData({" + ", ".join(f"{k!r}: {_MASK!r}" for k in self._data) + "})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretData):
            return dict(self._data) == dict(other._data)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling is how secrets leak into caches and process pools; refuse it outright.
        raise TypeError("SecretData cannot be pickled")

    def scrub(self, text: str) -> str:
        """Return ``text`` with every secret value (longer than 3 chars) replaced by a mask."""
        for value in sorted(self._data.values(), key=len, reverse=True):
            if len(value) > 3:
                text = text.replace(value, _MASK)
        return text


@dataclass(frozen=True)
class Limits:
    """Per-credential budget: AWS-style token buckets plus a cap on calls in flight.

    ``requests_per_second``/``burst`` bound calls that change the cloud (create, destroy,
    resize). Reads get their own bucket, as clouds give them (EC2: DescribeInstances 20/s
    against RunInstances 2/s); unless set, it is ten times the mutation budget.
    """

    requests_per_second: float = 10.0
    burst: int = 20
    max_concurrency: int = 8
    max_instances: int | None = None
    read_requests_per_second: float | None = None
    read_burst: int | None = None
    # Total seconds one call to the cloud may take, every request and retry of the HTTP layer
    # included (socket timeouts bound single reads only; a dripping endpoint never trips them).
    call_timeout: float = 120.0

    @property
    def read_rate(self) -> float:
        return self.read_requests_per_second or self.requests_per_second * 10

    @property
    def read_capacity(self) -> int:
        return self.read_burst or self.burst * 10

    def __post_init__(self) -> None:
        if self.requests_per_second <= 0 or self.burst < 1 or self.max_concurrency < 1 or self.call_timeout <= 0:
            raise ValueError(
                "limits need requests_per_second > 0, burst >= 1, max_concurrency >= 1 and call_timeout > 0, got "
                f"{self.requests_per_second}, {self.burst}, {self.max_concurrency}, {self.call_timeout}"
            )


@dataclass(frozen=True)
class CredentialConfig:
    """How to reach one cloud account: what a CloudCredential plus its Secret resolve to."""

    name: str
    namespace: str
    provider: str
    region: str | None = None
    endpoint_url: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    # Stored as SecretData whatever mapping is passed, so it is masked everywhere it travels.
    secret: Mapping[str, str] = field(default_factory=SecretData, repr=False)
    limits: Limits = field(default_factory=Limits)
    # The operator's rules for where tenants' endpoints may point (default: public https only).
    endpoint_policy: EndpointPolicy = field(default_factory=EndpointPolicy)
    tls: TLSOptions = field(default_factory=TLSOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, SecretData):
            object.__setattr__(self, "secret", SecretData(self.secret))
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))

    def scrub(self, text: str) -> str:
        """``text`` with every secret value of this credential masked."""
        secret = self.secret
        return secret.scrub(text) if isinstance(secret, SecretData) else SecretData(secret).scrub(text)

    @property
    def key(self) -> str:
        """Identity used for caches and rate-limit buckets: one per credential and region."""
        return f"{self.namespace}/{self.name}@{self.region or '-'}"


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, so callers can choose strategies without knowing the provider."""

    tags: bool = True
    user_data: bool = True
    resize: bool = False
    idempotency_token: bool = False
    tag_filtering: bool = False
    # Owner tags can be removed from a running VM (see Connector.release).
    release: bool = False
    # The most user data (bytes, before any encoding the API needs) a create accepts; None: unknown.
    max_user_data_bytes: int | None = None
    # -- baking (see the "baking" block of Connector) --
    # Native images can be made from a stopped VM, read, found by tags and deregistered.
    bake: bool = False
    # A native image can be copied from another region into this one.
    image_copy: bool = False
    # A native image can be shared with other accounts (launch permissions).
    image_share: bool = False
    # create() places the VM in ``CreateRequest.subnet``.
    subnet: bool = False


class NodeState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CloudNode:
    provider_id: str
    name: str
    state: NodeState
    public_ips: tuple[str, ...] = ()
    private_ips: tuple[str, ...] = ()
    size_id: str | None = None
    image_id: str | None = None
    region: str | None = None
    zone: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True)
class CloudSize:
    id: str
    name: str
    vcpus: float | None
    memory_mib: int
    disk_gib: int | None = None
    price: float | None = None
    # CPU architecture where the provider tells (x86_64, arm64): an image boots on one only.
    architecture: str | None = None


@dataclass(frozen=True)
class CloudImage:
    id: str
    name: str
    created_at: datetime | None = None
    # The account that published the image (EC2: the AMI's owner id), where the cloud says.
    owner: str | None = None


@dataclass(frozen=True)
class CloudLocation:
    id: str
    name: str
    country: str | None = None


@dataclass(frozen=True)
class CreateRequest:
    name: str
    image_id: str
    size_id: str
    region: str | None = None
    zone: str | None = None
    user_data: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    # Subnet (or network) id; only where ``capabilities.subnet``, else the provider's default.
    subnet: str | None = None
    # Defaults to the instance-uid owner tag: the Instance UID is the natural idempotency key.
    idempotency_token: str | None = None

    @property
    def effective_token(self) -> str | None:
        return self.idempotency_token or self.tags.get(OwnerTags.INSTANCE_UID)


@dataclass(frozen=True)
class OwnerTags:
    """The tags that say a VM belongs to one Instance of this operator installation."""

    CLUSTER_ID: ClassVar[str] = "skyfleet.io/cluster-id"
    NAMESPACE: ClassVar[str] = "skyfleet.io/namespace"
    DEPLOYMENT: ClassVar[str] = "skyfleet.io/deployment"
    INSTANCE: ClassVar[str] = "skyfleet.io/instance"
    INSTANCE_UID: ClassVar[str] = "skyfleet.io/instance-uid"
    KEYS: ClassVar[tuple[str, ...]] = (CLUSTER_ID, NAMESPACE, DEPLOYMENT, INSTANCE, INSTANCE_UID)

    cluster_id: str
    instance_uid: str
    namespace: str | None = None
    deployment: str | None = None
    instance: str | None = None

    def to_tags(self) -> dict[str, str]:
        values = {
            self.CLUSTER_ID: self.cluster_id,
            self.NAMESPACE: self.namespace,
            self.DEPLOYMENT: self.deployment,
            self.INSTANCE: self.instance,
            self.INSTANCE_UID: self.instance_uid,
        }
        return {k: v for k, v in values.items() if v is not None}

    def identity(self) -> dict[str, str]:
        """The two tags that must match before anything destructive happens."""
        return {self.CLUSTER_ID: self.cluster_id, self.INSTANCE_UID: self.instance_uid}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> OwnerTags | None:
        if cls.CLUSTER_ID not in tags or cls.INSTANCE_UID not in tags:
            return None
        return cls(
            cluster_id=tags[cls.CLUSTER_ID],
            instance_uid=tags[cls.INSTANCE_UID],
            namespace=tags.get(cls.NAMESPACE),
            deployment=tags.get(cls.DEPLOYMENT),
            instance=tags.get(cls.INSTANCE),
        )

    def owns(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.identity().items())


def pick_size(
    sizes: list[CloudSize],
    *,
    cpu: float | None = None,
    memory_mib: int | None = None,
    disk_gib: int | None = None,
    instance_type: str | None = None,
    architecture: str | None = None,
) -> CloudSize:
    """Smallest size that fits; an explicit instance type always wins.

    Sizes of another architecture than ``architecture`` (default x86_64) never fit: most
    images boot on one only, and the smallest fit is often an ARM type.

    Order is (vCPUs, memory, disk, price, id) so the same catalogue always yields the same
    answer. A size with no local disk (EBS-style) fits any disk request: the root volume is
    sized at create time.
    """
    if instance_type:
        for size in sizes:
            if instance_type in (size.id, size.name):
                return size
        raise InvalidRequest(f"instance type {instance_type!r} is not offered here")

    def fits(size: CloudSize) -> bool:
        if size.architecture is not None and size.architecture != (architecture or "x86_64"):
            return False
        if cpu is not None and (size.vcpus is None or size.vcpus < cpu):
            return False
        if memory_mib is not None and size.memory_mib < memory_mib:
            return False
        return not (disk_gib is not None and size.disk_gib and size.disk_gib < disk_gib)

    candidates = [s for s in sizes if fits(s)]
    if not candidates:
        raise InvalidRequest(
            f"no size offers cpu>={cpu}, memory>={memory_mib} MiB, disk>={disk_gib} GiB among {len(sizes)} sizes"
        )
    return min(
        candidates,
        key=lambda s: (
            s.vcpus if s.vcpus is not None else math.inf,
            s.memory_mib,
            s.disk_gib or 0,
            s.price if s.price is not None else math.inf,
            s.id,
        ),
    )


def pick_image(
    images: list[CloudImage],
    *,
    image_id: str | None = None,
    name_pattern: str | None = None,
    owner: str | None = None,
) -> CloudImage:
    """An id wins; otherwise the newest image whose name matches the glob ``name_pattern``,
    among those published by ``owner`` when one is given (anyone can publish an image with a
    familiar name, so the owner check is what makes a name lookup safe). ``ANY_OWNER`` takes
    every publisher's images, knowingly."""
    if image_id:
        for image in images:
            if image.id == image_id:
                return image
        raise NotFound(f"image {image_id!r} not found")
    if not name_pattern:
        raise InvalidRequest("an image needs an id or a name pattern")
    candidates = images
    if owner == ANY_OWNER:
        owner = None
    if owner is not None:
        if images and all(i.owner is None for i in images):
            raise InvalidRequest(f"the cloud does not say who owns its images, so owner {owner!r} cannot be checked")
        candidates = [i for i in images if i.owner == owner]
    matches = [i for i in candidates if fnmatch.fnmatchcase(i.name, name_pattern)]
    if not matches:
        by = f" owned by {owner}" if owner is not None else ""
        raise NotFound(f"no image name matches {name_pattern!r} among {len(candidates)} images{by}")
    return max(matches, key=lambda i: (i.created_at.timestamp() if i.created_at else -math.inf, i.name, i.id))


# -- baking: native images made from a stopped builder VM ------------------------------------
# Contract types for Connector's baking methods (Capabilities.bake / image_copy).


class ImageState(enum.Enum):
    PENDING = "pending"
    AVAILABLE = "available"
    FAILED = "failed"


@dataclass(frozen=True)
class ImageOwnerTags:
    """The tags that say a native image, or the builder VM baking it, belongs to one Image's bake.

    The identity (cluster id + Image UID) must match before an image is deregistered, as the
    owner tags must before a VM is destroyed; the bake key on top finds the image of one recipe
    and base image again, so an unchanged bake costs no cloud write.
    """

    CLUSTER_ID: ClassVar[str] = OwnerTags.CLUSTER_ID
    NAMESPACE: ClassVar[str] = OwnerTags.NAMESPACE
    IMAGE: ClassVar[str] = "skyfleet.io/image"
    IMAGE_UID: ClassVar[str] = "skyfleet.io/image-uid"
    BAKE_KEY: ClassVar[str] = "skyfleet.io/bake-key"
    # On builder VMs only: "builder", so the orphan sweep and the bake loop can tell them apart.
    ROLE: ClassVar[str] = "skyfleet.io/role"
    BUILDER: ClassVar[str] = "builder"
    KEYS: ClassVar[tuple[str, ...]] = (CLUSTER_ID, NAMESPACE, IMAGE, IMAGE_UID, BAKE_KEY, ROLE)

    cluster_id: str
    image_uid: str
    bake_key: str
    namespace: str | None = None
    image: str | None = None

    def to_tags(self) -> dict[str, str]:
        values = {
            self.CLUSTER_ID: self.cluster_id,
            self.NAMESPACE: self.namespace,
            self.IMAGE: self.image,
            self.IMAGE_UID: self.image_uid,
            self.BAKE_KEY: self.bake_key,
        }
        return {k: v for k, v in values.items() if v is not None}

    def identity(self) -> dict[str, str]:
        """The two tags that must match before an image is deregistered."""
        return {self.CLUSTER_ID: self.cluster_id, self.IMAGE_UID: self.image_uid}

    def lookup(self) -> dict[str, str]:
        """The tags of this very bake: identity plus bake key."""
        return {**self.identity(), self.BAKE_KEY: self.bake_key}

    def owns(self, tags: Mapping[str, str]) -> bool:
        return all(tags.get(k) == v for k, v in self.identity().items())

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ImageOwnerTags | None:
        if not all(k in tags for k in (cls.CLUSTER_ID, cls.IMAGE_UID, cls.BAKE_KEY)):
            return None
        return cls(
            cluster_id=tags[cls.CLUSTER_ID],
            image_uid=tags[cls.IMAGE_UID],
            bake_key=tags[cls.BAKE_KEY],
            namespace=tags.get(cls.NAMESPACE),
            image=tags.get(cls.IMAGE),
        )


@dataclass(frozen=True)
class ImageRequest:
    """Make a native image from the stopped VM ``source_id``.

    ``name`` must be unique per bake (derive it from the bake key): several clouds refuse a
    second image of the same name, which turns a retried create into a lookup, not a copy.
    ``tags`` are the image's owner tags (``ImageOwnerTags.to_tags()``).
    """

    name: str
    source_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class BakedImage:
    """A native image as the cloud reports it.

    ``snapshot_ids`` are the storage snapshots the provider keeps apart from the image (EC2's
    EBS snapshots), which deregistering deletes too. ``reason`` is the provider's short code
    for a failed image, never a response body.
    """

    id: str
    name: str
    state: ImageState
    tags: Mapping[str, str] = field(default_factory=dict)
    region: str | None = None
    created_at: datetime | None = None
    snapshot_ids: tuple[str, ...] = ()
    reason: str | None = None


# -- end of the baking types ----------------------------------------------------------------


class CallObserver(Protocol):
    """Told about every single request a connector sends (each retry counts once)."""

    def __call__(self, provider: str, operation: str, outcome: str, seconds: float) -> None: ...


class Connector(abc.ABC):
    """Async interface to one cloud account (one credential) in one region.

    Implementations raise only ``skyfleet.connectors.errors`` exceptions. Every method is safe
    to call concurrently from one event loop.
    """

    def __init__(self, config: CredentialConfig) -> None:
        self.config = config
        # Set by the operator to count and time every request to the cloud (metrics).
        self.observer: CallObserver | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.config.provider} {self.config.key}>"

    def observe(self, operation: str, outcome: str, seconds: float) -> None:
        """Report one request to the cloud: outcome is ``success`` or the error's ``outcome``."""
        if self.observer is not None:
            self.observer(self.config.provider, operation, outcome, seconds)

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abc.abstractmethod
    async def verify(self) -> None:
        """Make one cheap authenticated call; raise ``InvalidCredentials`` if rejected."""

    @abc.abstractmethod
    async def list_sizes(self) -> list[CloudSize]: ...

    @abc.abstractmethod
    async def list_images(self) -> list[CloudImage]: ...

    @abc.abstractmethod
    async def list_locations(self) -> list[CloudLocation]: ...

    async def resolve_size(
        self,
        cpu: float | None = None,
        memory_mib: int | None = None,
        disk_gib: int | None = None,
        instance_type: str | None = None,
    ) -> CloudSize:
        return pick_size(
            await self.list_sizes(),
            cpu=cpu,
            memory_mib=memory_mib,
            disk_gib=disk_gib,
            instance_type=instance_type,
            architecture=self.config.parameters.get("architecture"),
        )

    async def resolve_image(
        self, image_id: str | None = None, name_pattern: str | None = None, owner: str | None = None
    ) -> CloudImage:
        return pick_image(await self.list_images(), image_id=image_id, name_pattern=name_pattern, owner=owner)

    @abc.abstractmethod
    async def find_by_tags(self, tags: Mapping[str, str]) -> list[CloudNode]:
        """Every non-terminated node carrying all of ``tags``."""

    @abc.abstractmethod
    async def create(self, req: CreateRequest) -> CloudNode:
        """Create a node, or adopt the one an earlier attempt with the same owner tags made."""

    @abc.abstractmethod
    async def describe(self, provider_id: str) -> CloudNode | None: ...

    @abc.abstractmethod
    async def destroy(self, provider_id: str, owner_tags: OwnerTags) -> None:
        """Destroy only if the node exists and carries ``owner_tags``' identity.

        Raises ``OwnershipMismatch`` otherwise; a node already gone is success.
        """

    @abc.abstractmethod
    async def list_cluster(self, cluster_id: str) -> list[CloudNode]:
        """Every non-terminated node tagged with ``cluster_id``, across all pages."""

    async def resize(self, provider_id: str, size_id: str) -> CloudNode:
        raise Unsupported(f"{type(self).__name__} cannot resize in place", provider=self.config.provider)

    async def release(self, provider_id: str, owner_tags: OwnerTags) -> None:
        """Stop owning a running VM without touching it otherwise.

        Only if the node carries ``owner_tags``' identity (``OwnershipMismatch`` otherwise,
        ``NotFound`` when it does not exist): remove the cluster-id and instance-uid tags, so
        that ``list_cluster`` and ``find_by_tags`` never return it again and it can never be
        destroyed through Skyfleet. The other ``skyfleet.io/*`` tags stay as provenance.
        Supported where ``capabilities.release`` is true.
        """
        raise Unsupported(f"{type(self).__name__} cannot remove tags from a VM", provider=self.config.provider)

    async def close(self) -> None:  # noqa: B027 - optional hook, most connectors hold nothing
        """Release pools and connections once the calls in progress are done.

        Closing never fails work: the operator retires a connector when its credential changes,
        while creates may still be queued on it. Calls in progress finish; a call made after
        close (by a caller that held on to the connector) still works and releases what it
        opened when it is done.
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- baking: native images from stopped builder VMs (Capabilities.bake) ------------------
    # The builder VM itself is an ordinary create()/describe()/destroy(): describe() tells when
    # it has powered itself off (NodeState.STOPPED).

    async def create_image(self, req: ImageRequest) -> BakedImage:
        """Start making a native image from the stopped VM ``req.source_id``, tagged ``req.tags``.

        Returns at once, usually with ``ImageState.PENDING``. An image carrying the identity and
        bake key of ``req.tags`` made by an earlier attempt is returned instead of a second one.
        The id may be provisional where a provider names the image only once it exists
        (DigitalOcean: ``action/<id>`` until the snapshot is done): ``get_image`` then answers
        with the final id, which callers record in place of the provisional one.
        """
        raise Unsupported(f"{type(self).__name__} cannot make images", provider=self.config.provider)

    async def get_image(self, image_id: str, tags: Mapping[str, str] | None = None) -> BakedImage | None:
        """The image ``image_id`` (None when it does not exist, or no longer does).

        ``tags`` are the owner tags it must carry: where a provider can tag an image only once it
        exists (DigitalOcean), the first call that finds it complete adds them (a write).
        """
        raise Unsupported(f"{type(self).__name__} cannot read images", provider=self.config.provider)

    async def find_images(self, tags: Mapping[str, str]) -> list[BakedImage]:
        """Every image of this account in this region carrying all of ``tags`` (any state)."""
        raise Unsupported(f"{type(self).__name__} cannot find images by tags", provider=self.config.provider)

    async def deregister_image(self, image_id: str, owner: ImageOwnerTags) -> None:
        """Deregister ``image_id`` and delete its snapshots, only if it carries ``owner``'s identity.

        Raises ``OwnershipMismatch`` otherwise; an image already gone is success (its snapshots
        left behind by an interrupted earlier call are deleted where the provider can find them).
        """
        raise Unsupported(f"{type(self).__name__} cannot deregister images", provider=self.config.provider)

    async def copy_image(
        self, source_region: str, source_image_id: str, name: str, tags: Mapping[str, str]
    ) -> BakedImage:
        """Copy an image of this account from ``source_region`` into this connector's region.

        Same semantics as ``create_image``: returns at once, adopts a copy an earlier attempt made
        (found by ``tags``). Supported where ``capabilities.image_copy`` is true.
        """
        raise Unsupported(f"{type(self).__name__} cannot copy images", provider=self.config.provider)

    async def share_image(self, image_id: str, accounts: Sequence[str], owner: ImageOwnerTags) -> None:
        """Let ``accounts`` launch ``image_id`` (only if it carries ``owner``'s identity).

        Supported where ``capabilities.image_share`` is true; sharing again is harmless.
        """
        raise Unsupported(f"{type(self).__name__} cannot share images", provider=self.config.provider)

    async def console_output(self, provider_id: str) -> str | None:
        """The VM's serial console output as the provider keeps it (None when it has none yet).

        Optional: raises ``Unsupported`` where the provider offers no console output.
        """
        raise Unsupported(f"{type(self).__name__} offers no console output", provider=self.config.provider)

    # -- end of baking -------------------------------------------------------------------------
