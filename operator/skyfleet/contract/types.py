"""The connector contract's data: what the operator exchanges with any cloud.

Everything here is provider-neutral. Provider quirks (tag syntax, idempotency tokens, paging)
live behind ``Connector`` implementations (contract/connector.py); the operator only sees these
types. No I/O, and nothing of the drivers or the plugin registry.
"""

from __future__ import annotations

import enum
import fnmatch
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import ClassVar

from skyfleet.contract.endpoints import EndpointPolicy, TLSOptions
from skyfleet.contract.errors import InvalidRequest, NotFound, UnknownParameter

__all__ = [
    "ANY_OWNER",
    "BakedImage",
    "Capabilities",
    "CloudImage",
    "CloudLocation",
    "CloudNode",
    "CloudSize",
    "CreateRequest",
    "CredentialConfig",
    "ImageOwnerTags",
    "ImageRequest",
    "ImageState",
    "Limits",
    "NodeState",
    "OwnerTags",
    "SecretData",
    "create_resend_wait",
    "parameter_spelling",
    "pick_image",
    "pick_size",
    "read_parameters",
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


_CAMEL_HUMP = re.compile(r"(?<!^)([A-Z])")


def parameter_spelling(name: str) -> str:
    """The documented (camelCase) spelling of the snake_case parameter ``name``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def read_parameters(given: Mapping[str, str], known: Sequence[str], provider: str) -> dict[str, str]:
    """A credential's parameters keyed by the snake_case names the provider reads.

    Users write them as documented, camelCase (``authVersion``), or snake_case (``auth_version``);
    both reach the provider. A key it does not read, a misspelling most often, is refused by name
    rather than silently ignored; so is one parameter given in both spellings.
    """
    out: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in given.items():
        name = _CAMEL_HUMP.sub(r"_\1", key).lower().replace("-", "_")
        if name not in known:
            unknown.append(key)
        elif name in out:
            raise InvalidRequest(f"parameter {parameter_spelling(name)!r} is given twice", provider=provider)
        else:
            out[name] = value
    if unknown:
        offered = ", ".join(parameter_spelling(k) for k in sorted(known)) or "none"
        raise UnknownParameter(
            f"{provider} does not read parameter(s) {', '.join(repr(k) for k in sorted(unknown))}; it reads: {offered}",
            provider=provider,
            code="UnknownParameter",
        )
    return out


@dataclass(frozen=True)
class Limits:
    """Per-credential budget: AWS-style token buckets plus a cap on calls in flight.

    ``requests_per_second``/``burst`` bound calls that change the cloud (create, destroy,
    resize). Reads get their own bucket, as clouds give them (EC2: DescribeInstances 20/s
    against RunInstances 2/s); unless set, it is ten times the mutation budget.

    Where a provider deletes many VMs per request (``Capabilities.destroy_batch`` > 1), those
    requests have a budget of their own, shaped like EC2's TerminateInstances buckets: a request
    bucket (``destroy_requests_per_second``/``destroy_burst``, EC2: 5/s, 100) and a resource
    bucket counting the VMs named (``destroy_instances_per_second``/``destroy_instance_burst``,
    EC2: 20/s, 1000), which also caps how many VMs one request names.
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
    destroy_requests_per_second: float = 5.0
    destroy_burst: int = 100
    destroy_instances_per_second: float = 20.0
    destroy_instance_burst: int = 1000

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
        if (
            self.destroy_requests_per_second <= 0
            or self.destroy_burst < 1
            or self.destroy_instances_per_second <= 0
            or self.destroy_instance_burst < 1
        ):
            raise ValueError(
                "limits need destroy_requests_per_second > 0, destroy_burst >= 1, destroy_instances_per_second > 0 "
                f"and destroy_instance_burst >= 1, got {self.destroy_requests_per_second}, {self.destroy_burst}, "
                f"{self.destroy_instances_per_second}, {self.destroy_instance_burst}"
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

    # Without tags Skyfleet cannot know its VMs: such a credential is not Ready.
    tags: bool = True
    # Without user data a VM that has some fails UserDataUnsupported before any create.
    user_data: bool = True
    # Connector.resize may change a VM's size in place. Nothing asks it to yet: sizes change
    # through the group's rolling replacement everywhere.
    resize: bool = False
    # Creates take an idempotency token; without one a create with an unknown outcome waits for
    # the listing (create_resend_wait) before being sent again.
    idempotency_token: bool = False
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
    # The root disk's size is chosen at create (EBS volume, boot disk, boot volume), so a size's
    # own disk is no constraint; False: the plan fixes the disk, and sizes are chosen by it.
    root_disk_sizing: bool = False
    # The most VMs one delete request takes (EC2 TerminateInstances: 1000). Above 1 the connector
    # gathers concurrent destroys into one description and one delete request, paced by the
    # destroy budget (Limits.destroy_*); 1: every VM is described and deleted on its own.
    destroy_batch: int = 1


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
    """One VM to create. ``owner`` says whose it is: the connector looks for an earlier attempt's
    VM by its identity, and only where a provider writes tags does it become a flat mapping
    (``tags()``, encoded by the provider's adapter); nothing parses it back out of one."""

    name: str
    image_id: str
    size_id: str
    owner: OwnerTags
    region: str | None = None
    zone: str | None = None
    user_data: str | None = None
    # Tags written beside the owner tags that say nothing of ownership (a bake's builder VM: its
    # Image and role). They may not name an owner tag: ownership is ``owner``'s alone.
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    # Subnet (or network) id; only where ``capabilities.subnet``, else the provider's default.
    subnet: str | None = None
    # Defaults to the instance-uid owner tag: the Instance UID is the natural idempotency key.
    idempotency_token: str | None = None
    # Root disk in GiB at least (Size.diskGiB). Providers with ``root_disk_sizing`` size the root
    # volume to it (never below what the image needs); elsewhere the chosen size already fits it.
    disk_gib: int | None = None
    # Where the cloud takes no idempotency token: an earlier create of this VM went out at this
    # time (epoch seconds) and its outcome is unknown (the operator restarted while Creating), and
    # how long owner-tag lookups must keep missing a VM before another create may go out.
    unknown_since: float | None = None
    settle: float = 30.0

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra_tags) & set(OwnerTags.KEYS))
        if clash:
            raise ValueError(f"extra_tags may not set owner tags: {', '.join(clash)}")
        object.__setattr__(self, "extra_tags", MappingProxyType(dict(self.extra_tags)))

    @property
    def effective_token(self) -> str:
        return self.idempotency_token or self.owner.instance_uid

    def tags(self) -> dict[str, str]:
        """Every tag the VM is created with, in our spelling: the owner tags, then the extra ones."""
        return {**self.owner.to_tags(), **self.extra_tags}


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
    disk_fixed: bool = True,
) -> CloudSize:
    """Smallest size that fits; an explicit instance type wins over cpu and memory.

    Sizes of another architecture than ``architecture`` (default x86_64) never fit: most
    images boot on one only, and the smallest fit is often an ARM type.

    Order is (vCPUs, memory, disk, price, id) so the same catalogue always yields the same
    answer. ``disk_fixed`` says the size's plan fixes the root disk (DigitalOcean, Linode):
    then a size whose disk is smaller than ``disk_gib`` never fits, and an explicit instance
    type with a smaller disk is refused. Where the provider sizes the root disk at create
    (``Capabilities.root_disk_sizing``: EC2, GCE, Azure, OpenStack) ``disk_fixed`` is False,
    the size's own disk (EC2's instance store, say) is no constraint, and ``CreateRequest.disk_gib``
    carries the request to the cloud.
    """
    if instance_type:
        for size in sizes:
            if instance_type in (size.id, size.name):
                if disk_fixed and disk_gib is not None and size.disk_gib is not None and size.disk_gib < disk_gib:
                    raise InvalidRequest(
                        f"instance type {instance_type!r} comes with a {size.disk_gib} GiB disk, "
                        f"smaller than diskGiB {disk_gib}; choose a larger type or a smaller disk",
                        code="DiskTooSmall",
                    )
                return size
        raise InvalidRequest(f"instance type {instance_type!r} is not offered here")

    def fits(size: CloudSize) -> bool:
        if size.architecture is not None and size.architecture != (architecture or "x86_64"):
            return False
        if cpu is not None and (size.vcpus is None or size.vcpus < cpu):
            return False
        if memory_mib is not None and size.memory_mib < memory_mib:
            return False
        return not (disk_fixed and disk_gib is not None and size.disk_gib is not None and size.disk_gib < disk_gib)

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


def create_resend_wait(*, idempotency_token: bool, unknown_since: float | None, now: float, settle: float) -> float:
    """Seconds before a create may go out, once the owner-tag lookup has missed the VM.

    A create whose outcome is unknown (answer lost, timed out, or an operator restart while
    Creating) may have launched a VM that listings do not show yet (they lag launches). Where the
    cloud takes an idempotency token, sending again is safe at once; elsewhere a second create
    waits until the lookups have kept missing the VM for ``settle`` seconds from the first send.
    """
    if idempotency_token or unknown_since is None:
        return 0.0
    return max(0.0, unknown_since + settle - now)
