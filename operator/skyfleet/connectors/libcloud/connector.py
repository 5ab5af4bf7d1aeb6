"""The libcloud connector: an async facade over synchronous, thread-unsafe libcloud drivers.

Calls run in the process-wide pool of cloud threads (``skyfleet.connectors.workers``), each
with a driver taken from this connector's own small pool (a driver serves one call at a time).
Before a call reaches a thread it passes the credential's circuit breaker, token bucket and
concurrency cap, so waiting calls hold neither a thread nor a slot.

Where the provider deletes many VMs per request (``Capabilities.destroy_batch`` > 1), destroys
that arrive together are gathered for a moment and done as one batch: one description of them
all, each checked against its own caller's owner tags, then one delete request for the VMs that
are ours, paced by the credential's destroy budget (``Limits.destroy_*``), not the launch budget.

Every call has a total deadline (``Limits.call_timeout``): when it passes, or when the caller
is cancelled, the sockets the call opened are shut down (``transport.CallScope``), so the
thread returns at once instead of reading from a dripping endpoint for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay

from skyfleet.connectors import workers
from skyfleet.connectors.libcloud.adapters import ADAPTERS
from skyfleet.connectors.libcloud.adapters.base import Driver, ProviderAdapter
from skyfleet.connectors.libcloud.resilience import CircuitBreaker, RetryPolicy
from skyfleet.connectors.libcloud.transport import CallScope, call_scope
from skyfleet.contract import (
    BakedImage,
    Capabilities,
    CloudImage,
    CloudLocation,
    CloudNode,
    CloudSize,
    Connector,
    CreateRequest,
    CredentialConfig,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    NodeState,
    OwnerTags,
    create_resend_wait,
    pick_image,
)
from skyfleet.contract.errors import (
    CapacityUnavailable,
    CircuitOpen,
    ConnectorError,
    EndpointNotAllowed,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    OwnershipMismatch,
    QuotaExceeded,
    Throttled,
    Transient,
    Unsupported,
)

__all__ = ["LibcloudConnector"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_CATALOGUE_TTL = 600.0
# After the deadline, how long to wait for the thread whose sockets were just shut down.
_ABORT_GRACE = 5.0
# How often a create whose outcome is unknown looks for its VM again (no idempotency token).
_SETTLE_POLL = 2.0
# How long a destroy waits for others to share its delete request (a full batch goes at once).
_DESTROY_WINDOW = 0.2
# Answers that say a create launched nothing; after any other error a VM may exist.
_REFUSALS = (
    InvalidRequest,
    QuotaExceeded,
    CapacityUnavailable,
    InvalidCredentials,
    NotFound,
    Unsupported,
    EndpointNotAllowed,
    OwnershipMismatch,
)


class _TTLCache:
    """Catalogue cache shared by all connectors of one credential+region in this process."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] < time.monotonic():
                return None
            return entry[1]

    def put(self, key: tuple[str, ...], value: Any, ttl: float) -> None:
        with self._lock:
            self._entries[key] = (time.monotonic() + ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _consume(future: asyncio.Future[Any] | Future[Any]) -> None:
    """Mark a result nobody waits for any more as read (no 'exception never retrieved')."""
    if not future.cancelled():
        future.exception()


class LibcloudConnector(Connector):
    """One cloud account (credential) in one region, through Apache Libcloud."""

    catalogue_cache: ClassVar[_TTLCache] = _TTLCache()
    catalogue_ttl: ClassVar[float] = _CATALOGUE_TTL

    def __init__(
        self,
        config: CredentialConfig,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        super().__init__(config)
        adapter_cls = ADAPTERS.get(config.provider)
        if adapter_cls is None:
            raise Unsupported(
                f"libcloud connector has no adapter for provider {config.provider!r}; "
                f"supported: {', '.join(sorted(ADAPTERS))}"
            )
        try:
            self.adapter: ProviderAdapter = adapter_cls(config)
        except ValueError as exc:
            raise InvalidRequest(self._scrub(str(exc)), provider=config.provider) from None
        # The adapter's copy holds the parameters as the provider reads them (snake_case).
        self.config = config = self.adapter.config
        limits = config.limits
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(name=config.key)
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        # AsyncLimiter(max_rate, period) is a leaky bucket holding ``burst`` tokens refilled
        # at requests_per_second: the same shape as the clouds' own request buckets.
        self._write_bucket = AsyncLimiter(limits.burst, limits.burst / limits.requests_per_second)
        self._read_bucket = AsyncLimiter(limits.read_capacity, limits.read_capacity / limits.read_rate)
        # Deletes of many VMs per request: EC2 paces TerminateInstances apart from RunInstances,
        # by requests and by the instances they name.
        self._destroy_bucket = AsyncLimiter(
            limits.destroy_burst, limits.destroy_burst / limits.destroy_requests_per_second
        )
        self._destroy_instances = AsyncLimiter(
            limits.destroy_instance_burst, limits.destroy_instance_burst / limits.destroy_instances_per_second
        )
        self._destroy_batch = min(self.adapter.capabilities.destroy_batch, limits.destroy_instance_burst)
        self._batcher: _DestroyBatcher | None = None
        # Idle drivers: at most one per concurrent call, whichever thread runs it.
        self._drivers: list[Driver] = []
        self._drivers_lock = threading.Lock()
        # Public calls in progress, and whether close() asked to release everything once idle.
        self._active = 0
        self._closing = False

    @property
    def capabilities(self) -> Capabilities:
        return self.adapter.capabilities

    # -- plumbing -------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return self.config.scrub(text)

    def _take_driver(self) -> Driver:
        with self._drivers_lock:
            if self._drivers:
                return self._drivers.pop()
        return self.adapter.make_driver()

    def _give_back(self, driver: Driver) -> None:
        with self._drivers_lock:
            self._drivers.append(driver)

    def _in_thread(self, fn: Callable[[Driver], T], scope: CallScope) -> T:
        with call_scope(scope):
            driver: Driver | None = None
            reusable = False
            try:
                driver = self._take_driver()
                result = fn(driver)
                reusable = True
                return result
            except Exception as exc:
                if scope.aborted:
                    raise _deadline(self.config) from None
                mapped = exc if isinstance(exc, ConnectorError) else self.adapter.map_error(exc)
                mapped.redact(self._scrub)
                # A reset or timed-out connection leaves the driver's socket in an unknown state.
                reusable = not isinstance(mapped, Transient)
                if mapped is exc:
                    raise
                log.debug("mapped %s to %r", type(exc).__name__, mapped)
                raise mapped from None
            finally:
                if driver is not None and reusable:
                    self._give_back(driver)

    async def _run(self, fn: Callable[[Driver], T]) -> T:
        """Run ``fn`` in a cloud thread within the call deadline; on the deadline or on
        cancellation, shut the call's sockets down so that its thread returns too."""
        timeout = self.config.limits.call_timeout
        scope = CallScope(
            policy=self.config.endpoint_policy,
            deadline=time.monotonic() + timeout,
            verify=self.adapter.tls_verify(),
        )
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        future = loop.run_in_executor(workers.executor(), ctx.run, self._in_thread, fn, scope)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            scope.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(future), _ABORT_GRACE)
            future.add_done_callback(_consume)
            raise _deadline(self.config) from None
        except asyncio.CancelledError:
            scope.abort()
            future.add_done_callback(_consume)
            raise

    async def _attempt(
        self, op: str, fn: Callable[[Driver], T], *, write: bool = False, bucket: AsyncLimiter | None = None
    ) -> T:
        self.breaker.before_call()
        # The budget first, then a slot: a call waiting for its token must not hold one of the
        # few slots, or a queue of launches paced at 2/s would keep every listing waiting too
        # (a fleet's status would freeze while it is being created). A token is spent only on a
        # call that goes out at once: one that finds every slot busy waits for a slot and pays
        # again, or tokens saved up behind slow answers would all go out together when the
        # slots free, over the cloud's own burst.
        if bucket is None:
            bucket = self._write_bucket if write else self._read_bucket
        await bucket.acquire()
        while self._slots.locked():
            async with self._slots:
                pass
            await bucket.acquire()
        async with self._slots:
            started = time.monotonic()
            try:
                result = await self._run(fn)
            except ConnectorError as exc:
                self.observe(op, exc.outcome, time.monotonic() - started)
                self.breaker.record(exc)
                log.debug("%s on %s failed: %s", op, self.config.key, exc)
                raise
            self.observe(op, "success", time.monotonic() - started)
            self.breaker.record(None)
            return result

    async def _retrying(self, op: str, attempt: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception(self.retry.should_retry),
            wait=self.retry.wait,
            stop=stop_after_attempt(self.retry.max_attempts) | stop_after_delay(self.retry.max_elapsed),
            reraise=True,
            before_sleep=lambda state: log.info(
                "%s on %s: retry %d after %s",
                op,
                self.config.key,
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
        )
        self._active += 1
        try:
            async for trial in retrying:
                with trial:
                    return await attempt()
            raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover
        finally:
            self._active -= 1
            if self._closing and self._active == 0:
                self._release()

    async def _call(self, op: str, fn: Callable[[Driver], T], *, write: bool = False) -> T:
        return await self._retrying(op, lambda: self._attempt(op, fn, write=write))

    async def _cached(self, kind: str, fn: Callable[[Driver], T], variant: str = "") -> T:
        key = (kind, self.config.provider, self.config.key, self.config.endpoint_url or "", variant)
        hit = self.catalogue_cache.get(key)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        value = await self._call(f"list_{kind}", fn)
        self.catalogue_cache.put(key, value, self.catalogue_ttl)
        return value

    # -- contract -------------------------------------------------------------------------
    async def verify(self) -> None:
        await self._call("verify", self.adapter.verify)

    async def list_sizes(self) -> list[CloudSize]:
        return list(await self._cached("sizes", self.adapter.list_sizes))

    async def list_images(self) -> list[CloudImage]:
        return list(await self._cached("images", self.adapter.list_images))

    async def list_locations(self) -> list[CloudLocation]:
        return list(await self._cached("locations", self.adapter.list_locations))

    async def resolve_image(
        self, image_id: str | None = None, name_pattern: str | None = None, owner: str | None = None
    ) -> CloudImage:
        """Ask the cloud for exactly what is needed: the image with this id, or the images of
        this owner (whose name matches, where the cloud filters by name). Clouds whose
        catalogue holds every public image refuse a name lookup without owner."""
        if image_id:
            found = await self._cached(
                "image", lambda d: self.adapter.image_by_id(d, image_id), variant=f"id={image_id}"
            )
            if found is None:
                raise NotFound(f"image {image_id!r} not found", provider=self.config.provider)
            return pick_image([found], image_id=image_id)
        if not name_pattern:
            raise InvalidRequest("an image needs an id or a name pattern", provider=self.config.provider)
        scope = self.adapter.lookup_owner(owner)
        images = await self._cached(
            "images",
            lambda d: self.adapter.images_named(d, name_pattern, scope),
            variant=f"owner={scope or ''} name={name_pattern}",
        )
        return pick_image(list(images), name_pattern=name_pattern, owner=scope)

    async def find_by_tags(self, tags: Mapping[str, str]) -> list[CloudNode]:
        if not tags:
            raise InvalidRequest("find_by_tags needs at least one tag; use list_cluster to sweep")
        wanted = dict(tags)
        return await self._call("find_by_tags", lambda d: self.adapter.find_by_tags(d, wanted))

    async def list_cluster(self, cluster_id: str) -> list[CloudNode]:
        """Every VM of the cluster here; the listing also corrects the budget's count."""
        started = self.budget.clock()
        nodes = await self.find_by_tags({OwnerTags.CLUSTER_ID: cluster_id})
        self.budget.listed(cluster_id, self._region, (n.provider_id for n in nodes), started=started)
        return nodes

    @property
    def _region(self) -> str:
        return self.config.region or ""

    async def _cluster_ids(self, cluster_id: str) -> list[str]:
        """The budget's seed: the ids of the cluster's VMs here, one tag-filtered listing."""
        nodes = await self._attempt("count", lambda d: self.adapter.find_by_tags(d, {OwnerTags.CLUSTER_ID: cluster_id}))
        return [n.provider_id for n in nodes]

    async def describe(self, provider_id: str) -> CloudNode | None:
        return await self._call("describe", lambda d: self.adapter.describe(d, provider_id))

    async def create(self, req: CreateRequest) -> CloudNode:
        """Create once, whatever happens to the responses.

        The lookup by owner tags runs before the first attempt and before every retry: a
        create whose response was lost may still have made a VM, and adopting it is the only
        way not to make a second one on providers without an idempotency token. Where there
        is a token (EC2 ClientToken) the retry itself is deduplicated by the cloud, which also
        covers the window where a fresh VM is not yet visible to listing. Without one, a create
        whose outcome is unknown is sent again only once the lookups have kept missing its VM
        for ``req.settle`` seconds (``create_resend_wait``): listings lag launches.
        """
        identity = req.owner.identity()
        limit = self.config.limits.max_instances
        cluster, region, budget = req.owner.cluster_id, self._region, self.budget
        token = self.capabilities.idempotency_token
        unknown_since = req.unknown_since

        async def lookup() -> CloudNode | None:
            while True:
                existing = await self._attempt("lookup", lambda d: self.adapter.find_by_tags(d, identity))
                if existing:
                    log.info("adopting %s for %s", existing[0].provider_id, identity)
                    return _oldest(existing)
                wait = create_resend_wait(
                    idempotency_token=token, unknown_since=unknown_since, now=time.time(), settle=req.settle
                )
                if wait <= 0:
                    return None
                log.info("create on %s: outcome unknown, looking again before sending another", self.config.key)
                await asyncio.sleep(min(wait, _SETTLE_POLL))

        async def attempt() -> CloudNode:
            nonlocal unknown_since
            # Lookup and launch are retried together: every retry looks again first.
            found = await lookup()
            if found is not None:
                budget.adopted(cluster, region, found.provider_id, token=req.effective_token)
                return found
            # The budget counts VMs between creates (seeded by one listing, corrected by the
            # observer's): no listing per create, and room is taken before the create goes out.
            await budget.reserve(
                cluster,
                region,
                limit,
                lambda: self._cluster_ids(cluster),
                token=req.effective_token if token else None,
                where=self.config.key,
                provider=self.config.provider,
            )
            sent = time.time()
            try:
                node = await self._attempt("create", lambda d: self.adapter.create(d, req), write=True)
            except (Throttled, CircuitOpen):
                budget.refused(cluster, region)
                raise  # refused before any launch
            except ConnectorError as exc:
                # The request may have reached the cloud: a VM may exist that no listing shows yet,
                # for a listing lag counted from this send, the latest.
                unknown_since = sent
                if isinstance(exc, _REFUSALS):
                    budget.refused(cluster, region)
                else:
                    budget.unsure(cluster, region, token=req.effective_token)
                raise
            except BaseException:
                budget.unsure(cluster, region, token=req.effective_token)  # cancelled in flight
                raise
            budget.created(cluster, region, node.provider_id, token=req.effective_token)
            return node

        return await self._retrying("create", attempt)

    async def destroy(self, provider_id: str, owner_tags: OwnerTags) -> None:
        """Destroy the VM if it carries ``owner_tags``' identity (see ``Connector.destroy``).

        Where the provider deletes many VMs per request, the caller joins the next batch and
        waits for its answer holding neither a cloud thread nor a slot; every caller keeps its
        own retries, and a retry joins a later batch.
        """
        if self._destroy_batch <= 1:
            await self._destroy_alone(provider_id, owner_tags, bucket=None)
            return

        async def attempt() -> None:
            if self._batcher is None:
                self._batcher = _DestroyBatcher(self, self._destroy_batch)
            if await self._batcher.submit(provider_id, owner_tags) is _ALONE:
                await self._destroy_once(provider_id, owner_tags, bucket=self._destroy_bucket)

        await self._retrying("destroy", attempt)

    async def _destroy_alone(self, provider_id: str, owner_tags: OwnerTags, *, bucket: AsyncLimiter | None) -> None:
        await self._retrying("destroy", lambda: self._destroy_once(provider_id, owner_tags, bucket=bucket))

    async def _destroy_once(self, provider_id: str, owner_tags: OwnerTags, *, bucket: AsyncLimiter | None) -> None:
        """One attempt at one VM: describe, check the owner tags, delete (a single cloud call)."""

        def attempt(driver: Driver) -> None:
            node = self.adapter.describe(driver, provider_id)
            if node is None or node.state is NodeState.TERMINATED:
                return
            if not self.adapter.owned_by(owner_tags, node.tags):
                raise OwnershipMismatch(
                    f"refusing to destroy {provider_id}: it does not carry owner tags "
                    f"{owner_tags.identity()} (has {_owner_view(node.tags)})",
                    provider=self.config.provider,
                )
            try:
                self.adapter.destroy(driver, provider_id)
            except Exception as exc:
                if isinstance(self.adapter.map_error(exc), NotFound):
                    return
                raise
            destroyed.set()

        # Told to the budget in the event loop, not from the cloud thread.
        destroyed = threading.Event()
        try:
            await self._attempt("destroy", attempt, write=True, bucket=bucket)
        finally:
            if destroyed.is_set():
                self.budget.gone(owner_tags.cluster_id, self._region, provider_id)

    def _ours(self, batch: list[_Waiting], nodes: Mapping[str, CloudNode]) -> list[_Waiting]:
        """Answer the callers whose VM is gone (success) or not theirs (OwnershipMismatch, for
        that caller alone); the others, whose VM carries their owner tags, are returned."""
        ours: list[_Waiting] = []
        for waiting in batch:
            node = nodes.get(waiting.provider_id)
            if node is None or node.state is NodeState.TERMINATED:
                waiting.answer(None)  # gone already: success, as for a single destroy
            elif not self.adapter.owned_by(waiting.owner, node.tags):
                waiting.fail(
                    OwnershipMismatch(
                        f"refusing to destroy {waiting.provider_id}: it does not carry owner tags "
                        f"{waiting.owner.identity()} (has {_owner_view(node.tags)})",
                        provider=self.config.provider,
                    )
                )
            else:
                ours.append(waiting)
        return ours

    async def _destroy_together(self, batch: list[_Waiting]) -> None:
        """One batch: describe every VM in one call, check each against its own caller's owner
        tags, delete the ones that are ours in one request, and answer every caller."""
        ids = list(dict.fromkeys(w.provider_id for w in batch))
        try:
            # Counted as the operations they are (skyfleet_cloud_requests_total{operation}): one
            # request each, whatever number of VMs it names.
            nodes = await self._attempt("describe", lambda d: self.adapter.describe_many(d, ids))
            ours = self._ours(batch, nodes)
            targets = list(dict.fromkeys(w.provider_id for w in ours if not w.future.done()))
            if not targets:
                for waiting in ours:
                    waiting.answer(None)
                return
            await self._destroy_instances.acquire(len(targets))
            deleted = await self._attempt(
                "destroy", lambda d: self.adapter.destroy_many(d, targets), bucket=self._destroy_bucket
            )
        except ConnectorError as exc:
            # A refusal of the request as a whole may be one VM's doing (an id the cloud cannot
            # parse, one VM protected from termination): no VM may fail for its neighbour's
            # sake, so each caller tries alone. Refusals of the account stand for every VM.
            alone = not exc.retryable and not isinstance(exc, _ACCOUNT_WIDE) and len(ids) > 1
            for waiting in batch:
                if alone:
                    waiting.answer(_ALONE)
                else:
                    waiting.fail(copy.copy(exc))
            return
        except BaseException as exc:
            for waiting in batch:
                waiting.fail(asyncio.CancelledError() if isinstance(exc, asyncio.CancelledError) else copy.copy(exc))
            raise
        told: set[tuple[str, str]] = set()
        for waiting in ours:
            if waiting.provider_id in deleted and (waiting.owner.cluster_id, waiting.provider_id) not in told:
                told.add((waiting.owner.cluster_id, waiting.provider_id))
                self.budget.gone(waiting.owner.cluster_id, self._region, waiting.provider_id)
            waiting.answer(None)

    async def release(self, provider_id: str, owner_tags: OwnerTags) -> None:
        """Remove the identity tags, after checking them against a fresh description.

        Retries are where this gets subtle: when an attempt sent the untag request but lost
        the answer (or, where a provider needs one request per tag, stopped halfway), the
        next attempt finds some or all of our identity gone. Refusing then would report
        a mismatch for a release that happened, so once this call has sent an untag, an
        identity tag that is absent counts as ours and only what is left gets removed.
        A tag with another value is never ours.
        """
        if not self.capabilities.release:
            raise Unsupported(
                f"{self.config.provider} cannot remove tags from an instance", provider=self.config.provider
            )
        identity = self.adapter.normalized(owner_tags.identity())
        sent = False

        def attempt(driver: Driver) -> None:
            nonlocal sent
            node = self.adapter.describe(driver, provider_id)
            if node is None or node.state is NodeState.TERMINATED:
                raise NotFound(f"cannot release {provider_id}: no such instance", provider=self.config.provider)
            left = [k for k in identity if k in node.tags]
            if (not sent and len(left) < len(identity)) or any(node.tags[k] != identity[k] for k in left):
                raise OwnershipMismatch(
                    f"refusing to release {provider_id}: it does not carry owner tags "
                    f"{identity} (has {_owner_view(node.tags)})",
                    provider=self.config.provider,
                )
            if not left:
                return
            # Set before the request: it may reach the cloud even when its answer does not.
            sent = True
            self.adapter.untag(driver, node, left)

        await self._call("release", attempt, write=True)
        # Untagged, the VM is no longer ours: no listing counts it again.
        self.budget.gone(owner_tags.cluster_id, self._region, provider_id)

    async def resize(self, provider_id: str, size_id: str) -> CloudNode:
        if not self.capabilities.resize:
            raise Unsupported(
                f"{self.config.provider} cannot resize an instance in place", provider=self.config.provider
            )
        return await self._call("resize", lambda d: self.adapter.resize(d, provider_id, size_id), write=True)

    async def close(self) -> None:
        """Release drivers and adapter files once no call is in progress (see ``Connector.close``)."""
        self._closing = True
        if self._active == 0:
            self._release()

    def _release(self) -> None:
        with self._drivers_lock:
            idle, self._drivers = self._drivers, []
        for driver in idle:
            _close_driver(driver)
        self.adapter.close()

    # -- baking (Capabilities.bake): every write through the write budget, retried like create
    def _require_bake(self, what: str, flag: bool) -> None:
        if not flag:
            raise Unsupported(f"{self.config.provider} cannot {what}", provider=self.config.provider)

    async def create_image(self, req: ImageRequest) -> BakedImage:
        """Look for this bake's image first, before every attempt, as ``create`` does for VMs:
        an attempt whose answer was lost may have made one, and a second would be a leak."""
        self._require_bake("make images", self.capabilities.bake)
        lookup = _bake_lookup(req.tags)

        async def attempt() -> BakedImage:
            if lookup:
                existing = await self._attempt("image_lookup", lambda d: self.adapter.find_images(d, lookup))
                if existing:
                    log.info("adopting image %s for bake %s", _best(existing).id, lookup.get(ImageOwnerTags.BAKE_KEY))
                    return _best(existing)
            return await self._attempt("create_image", lambda d: self.adapter.create_image(d, req), write=True)

        return await self._retrying("create_image", attempt)

    async def get_image(self, image_id: str, tags: Mapping[str, str] | None = None) -> BakedImage | None:
        self._require_bake("read images", self.capabilities.bake)
        image = await self._call("get_image", lambda d: self.adapter.get_image(d, image_id))
        if image is None or not tags or image.state is not ImageState.AVAILABLE:
            return image
        wanted = {k: v for k, v in tags.items() if k in ImageOwnerTags.KEYS}
        if any(k in image.tags for k in (ImageOwnerTags.CLUSTER_ID, ImageOwnerTags.IMAGE_UID)):
            # Tagged already (by create, or by an earlier call): tags are never overwritten here.
            return image
        # Only where create cannot tag (DigitalOcean): the image exists now, so tag it once.
        await self._call("tag_image", lambda d: self.adapter.tag_image(d, image, wanted), write=True)
        return await self._call("get_image", lambda d: self.adapter.get_image(d, image.id))

    async def find_images(self, tags: Mapping[str, str]) -> list[BakedImage]:
        self._require_bake("find images", self.capabilities.bake)
        if not tags:
            raise InvalidRequest("find_images needs at least one tag")
        wanted = dict(tags)
        return await self._call("find_images", lambda d: self.adapter.find_images(d, wanted))

    async def deregister_image(self, image_id: str, owner: ImageOwnerTags) -> None:
        """Describe, check ownership, deregister: in one attempt, retried as a whole like destroy."""
        self._require_bake("deregister images", self.capabilities.bake)

        def attempt(driver: Driver) -> None:
            image = self.adapter.get_image(driver, image_id)
            if image is None:
                self.adapter.delete_image_leftovers(driver, image_id, owner)
                return
            if not owner.owns(image.tags):
                raise OwnershipMismatch(
                    f"refusing to deregister image {image_id}: it does not carry owner tags "
                    f"{owner.identity()} (has {_image_owner_view(image.tags)})",
                    provider=self.config.provider,
                )
            try:
                self.adapter.deregister_image(driver, image, owner)
            except Exception as exc:
                if isinstance(self.adapter.map_error(exc), NotFound):
                    return
                raise

        await self._call("deregister_image", attempt, write=True)

    async def copy_image(
        self, source_region: str, source_image_id: str, name: str, tags: Mapping[str, str]
    ) -> BakedImage:
        self._require_bake("copy images between regions", self.capabilities.image_copy)
        lookup = _bake_lookup(tags)
        wanted = dict(tags)

        async def attempt() -> BakedImage:
            if lookup:
                existing = await self._attempt("image_lookup", lambda d: self.adapter.find_images(d, lookup))
                if existing:
                    return _best(existing)
            return await self._attempt(
                "copy_image",
                lambda d: self.adapter.copy_image(d, source_region, source_image_id, name, wanted),
                write=True,
            )

        return await self._retrying("copy_image", attempt)

    async def share_image(self, image_id: str, accounts: Sequence[str], owner: ImageOwnerTags) -> None:
        self._require_bake("share images", self.capabilities.image_share)
        wanted = list(accounts)
        if not wanted:
            return

        def attempt(driver: Driver) -> None:
            image = self.adapter.get_image(driver, image_id)
            if image is None:
                raise NotFound(f"cannot share image {image_id}: no such image", provider=self.config.provider)
            if not owner.owns(image.tags):
                raise OwnershipMismatch(
                    f"refusing to share image {image_id}: it does not carry owner tags {owner.identity()}",
                    provider=self.config.provider,
                )
            self.adapter.share_image(driver, image, wanted)

        await self._call("share_image", attempt, write=True)

    async def console_output(self, provider_id: str) -> str | None:
        return await self._call("console_output", lambda d: self.adapter.console_output(d, provider_id))

    # -- end of baking ------------------------------------------------------------------------


# A batch's answer to a caller whose VM must be tried alone (see _destroy_together).
_ALONE = object()
# Refusals that say nothing of one VM but of the account, the endpoint or the cloud's health.
_ACCOUNT_WIDE = (InvalidCredentials, EndpointNotAllowed, Unsupported, CircuitOpen)


@dataclass(eq=False)
class _Waiting:
    """One destroy waiting in a batch: its VM, its caller's owner tags and its answer."""

    provider_id: str
    owner: OwnerTags
    future: asyncio.Future[object]

    def answer(self, value: object) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            if isinstance(exc, asyncio.CancelledError):
                self.future.cancel()
            else:
                self.future.set_exception(exc)


class _DestroyBatcher:
    """Gathers one connector's concurrent destroys into batches of at most ``size`` VMs.

    A batch goes once it is full, or ``_DESTROY_WINDOW`` seconds after its first destroy came;
    several batches may be in flight at once (each is one call at a time, paced by the destroy
    budget). A batch whose callers have all gone (cancelled) is cancelled too.
    """

    def __init__(self, connector: LibcloudConnector, size: int) -> None:
        self._connector = connector
        self._size = size
        self._queue: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, provider_id: str, owner: OwnerTags) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(provider_id, owner, loop.create_future())
        self._queue.append(waiting)
        if len(self._queue) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(_DESTROY_WINDOW, self._flush)
        return waiting.future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = [w for w in self._queue if not w.future.done()]
        self._queue = []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._connector._destroy_together(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(_consume)

        def abandoned(future: asyncio.Future[object]) -> None:
            # Only a cancellation can leave the batch without callers; an answer never does.
            if future.cancelled() and not task.done() and all(w.future.cancelled() for w in batch):
                task.cancel()

        for waiting in batch:
            waiting.future.add_done_callback(abandoned)


def _deadline(config: CredentialConfig) -> Transient:
    return Transient(
        f"the call to the cloud did not finish within {config.limits.call_timeout:g} s",
        provider=config.provider,
        code="DeadlineExceeded",
    )


def _close_driver(driver: Driver) -> None:
    """Close the driver's HTTP session (its kept-alive sockets); best effort."""
    with contextlib.suppress(Exception):
        session = getattr(getattr(driver.connection, "connection", None), "session", None)
        if session is not None:
            session.close()


def _oldest(nodes: list[CloudNode]) -> CloudNode:
    return min(nodes, key=lambda n: (n.created_at.timestamp() if n.created_at else 0.0, n.provider_id))


def _owner_view(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k in OwnerTags.KEYS}


# -- baking helpers -----------------------------------------------------------------------------
_IMAGE_PREFERENCE = {ImageState.AVAILABLE: 0, ImageState.PENDING: 1, ImageState.FAILED: 2}


def _bake_lookup(tags: Mapping[str, str]) -> dict[str, str]:
    """The tags that find one bake's image again, or nothing when ``tags`` lack any of them."""
    keys = (ImageOwnerTags.CLUSTER_ID, ImageOwnerTags.IMAGE_UID, ImageOwnerTags.BAKE_KEY)
    return {k: tags[k] for k in keys} if all(k in tags for k in keys) else {}


def _best(images: list[BakedImage]) -> BakedImage:
    """An available image before a pending one before a failed one; then the oldest."""
    return min(
        images,
        key=lambda i: (_IMAGE_PREFERENCE[i.state], i.created_at.timestamp() if i.created_at else 0.0, i.id),
    )


def _image_owner_view(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if k in ImageOwnerTags.KEYS}
