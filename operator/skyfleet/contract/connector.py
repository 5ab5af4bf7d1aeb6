"""The connector contract's interface: the async calls the operator makes on one cloud account.

Plugin connectors subclass ``Connector`` (registered under the ``skyfleet.connectors`` entry
point group) and raise only ``skyfleet.contract.errors`` exceptions.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self

from skyfleet.contract.budget import InstanceBudget
from skyfleet.contract.errors import Unsupported
from skyfleet.contract.types import (
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
    OwnerTags,
    pick_image,
    pick_size,
)

__all__ = ["CallObserver", "Connector"]


class CallObserver(Protocol):
    """Told about every single request a connector sends (each retry counts once)."""

    def __call__(self, provider: str, operation: str, outcome: str, seconds: float) -> None: ...


class Connector(abc.ABC):
    """Async interface to one cloud account (one credential) in one region.

    Implementations raise only ``skyfleet.contract.errors`` exceptions. Every method is safe
    to call concurrently from one event loop.
    """

    def __init__(self, config: CredentialConfig) -> None:
        self.config = config
        # Set by the operator to count and time every request to the cloud (metrics).
        self.observer: CallObserver | None = None
        # The VMs of ours on this credential, for ``Limits.max_instances``: the operator gives
        # every connector of one credential (all its regions) the same one.
        self.budget = InstanceBudget()

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
            disk_fixed=not self.capabilities.root_disk_sizing,
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
        """Create a node, or adopt the one an earlier attempt with the same owner tags made.

        Where ``config.limits.max_instances`` is set, a create that would pass it raises
        ``QuotaExceeded`` (code MaxInstances) without calling the cloud: ``self.budget`` counts.
        """

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
