"""Run the operator: kopf configured for strict schemas, behind a Lease so only one acts.

kopf's peering only pauses operators that see each other; it is not leader election (two with
equal priority both pause). A ``coordination.k8s.io`` Lease is, with client-go's timings and
semantics: the process waits (for the API server, then for the Lease) until it holds the
Lease, renews it every retry period, stops when no renewal succeeded within the renew
deadline (shorter than the lease duration, so it has stopped before a standby may take over),
and releases it on a clean exit so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

import skyfleet.handlers  # noqa: F401 - importing registers every handler
from skyfleet.handlers.clouds import Clouds
from skyfleet.handlers.context import FINALIZER, Context, ctx_of
from skyfleet.handlers.events import ObjectLogEvents
from skyfleet.handlers.kube import Kube, NoCluster, Unreadable
from skyfleet.handlers.storage import BoundedProgressStorage, DigestDiffBaseStorage
from skyfleet.logs import install_object_refs
from skyfleet.metrics import Metrics
from skyfleet.reconcile.instances import create_settled
from skyfleet.reconcile.messages import safe_message
from skyfleet.settings import Settings

__all__ = ["FINALIZER", "ClusterIdUnavailable", "LeaseElector", "derived_cluster_id", "run"]

log = logging.getLogger("skyfleet.operator")

PREFIX = "skyfleet.io"
# Seconds kopf gets to stop after the Lease is lost before the process exits regardless
# (well inside lease duration - renew deadline).
LOST_EXIT_GRACE = 2.0


def _exit_lost() -> None:
    log.error("still running %.0f s after losing the lease; exiting now", LOST_EXIT_GRACE)
    logging.shutdown()
    os._exit(1)


def _share_toggle_waits() -> None:
    """Make waiting on a kopf ToggleSet cost one wake-up per change, not one per waiter.

    At start-up kopf holds every object's handling until every object is indexed: each object's
    worker waits on one ToggleSet while the others drop their toggles, and every drop wakes
    every waiter (``Condition.notify_all``). That is quadratic in the objects: 54,000 wake-ups
    for 333 objects (cProfile of a restart at 300 Instances), 50 million at 10,000. Here the
    waiters for one state share one waiting task, which alone is woken per change; when the
    state is reached, each waiter resumes once. Semantics are kopf's own (its ``wait_for`` runs
    in the shared task); kopf is pinned, and tests/unit/test_handlers_toggles.py holds this to it.
    """
    try:  # kopf's internals: a kopf without this class or method keeps its own wait.
        from kopf._cogs.aiokits import aiotoggles

        cls = aiotoggles.ToggleSet
        if getattr(cls.wait_for, "shared", False):
            return
    except (ImportError, AttributeError):
        log.warning("kopf's ToggleSet was not found: start-up waits stay kopf's own (slower with many objects)")
        return
    original = cls.wait_for

    async def wait_for(self: Any, state: bool) -> None:
        state = bool(state)
        if self.is_on() == state:
            return
        waits: dict[bool, asyncio.Future[None]] = self.__dict__.setdefault("_shared_waits", {})
        shared = waits.get(state)
        if shared is None or shared.done():
            shared = waits[state] = asyncio.ensure_future(original(self, state))
        # Shielded: one waiter cancelled (its object deleted) must not cancel the others' wait.
        await asyncio.shield(shared)

    wait_for.shared = True  # type: ignore[attr-defined]
    cls.wait_for = wait_for  # type: ignore[method-assign]


_share_toggle_waits()


def _spawn_without_yielding() -> None:
    """Let kopf's watcher take in a new object's event without handing the event loop round.

    A watcher (one per kind) reads the watch stream and passes each event to its object's
    worker task, spawning one when the object has none (a new object, or one whose worker
    exited after ``settings.queueing.idle_timeout`` quiet seconds). kopf's ``Scheduler.spawn``
    ends with ``asyncio.sleep(0)`` ("mainly for tests", its comment says), so for every such
    event the watcher stops reading until every other ready task of the operator has run once.
    While thousands of Instances are created that round is 20-130 ms, and every new Instance's
    event, already on the wire, waits one round per new object before it: the watcher falls
    behind the stream. Here spawn queues the worker and returns; the worker starts on the
    loop's next round as before. Otherwise kopf's own method (tests/unit/test_handlers_spawn.py).
    """
    try:  # kopf's internals: a kopf without them keeps its own spawn.
        from kopf._cogs.aiokits import aiotasks

        cls = aiotasks.Scheduler
        if getattr(cls.spawn, "no_yield", False):
            return
        job, cancel_coro = aiotasks.SchedulerJob, aiotasks.cancel_coro
    except (ImportError, AttributeError):
        log.warning("kopf's Scheduler was not found: new objects' events wait a loop round each (slower in bulk)")
        return

    async def spawn(self: Any, coro: Any, *, name: str | None = None) -> None:
        if self._closed:
            await cancel_coro(coro=coro, name=name)
            raise RuntimeError("Cannot add new coroutines to a closed and inactive scheduler.")
        async with self._condition:
            await self._pending_coros.put(job(coro=coro, name=name))
            self._condition.notify_all()  # -> the scheduler's spawner task

    spawn.no_yield = True  # type: ignore[attr-defined]
    cls.spawn = spawn  # type: ignore[method-assign]


_spawn_without_yielding()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ctx = ctx_of(memo)
    settings.persistence.finalizer = FINALIZER
    # kopf's default progress storage writes into status, which structural schemas prune.
    # Both kept small whatever the object holds: annotations total at most 256 KiB, and one
    # over it makes every patch kopf sends (finalizers included) fail (see handlers/storage.py).
    settings.persistence.progress_storage = BoundedProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix=PREFIX,
        key="last-handled-configuration",
        # Kinds that say themselves whether a create or update handler has anything left to
        # do: no annotation write per object (storage.py). Deployments and Images have none.
        settled={
            "Instance": lambda body: create_settled(body.get("status")),
            "Deployment": lambda body: True,
            "Image": lambda body: True,
        },
    )
    settings.execution.max_workers = ctx.settings.workers
    # The Lease decides who acts; peering would only add writes and pause on lookalikes.
    settings.peering.standalone = True
    # A watch stream that silently stops is reconnected instead of leaving a live-looking zombie.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf's own requests (patches, events) fail and retry instead of hanging on a dead connection.
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.posting.level = logging.WARNING
    # kopf would post its per-object log lines as component kopf, instance dev, action Action?;
    # handlers/events.py posts them instead (ObjectLogEvents, installed in run()).
    settings.posting.enabled = False


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await ctx_of(memo).clouds.close()


class LeaseElector:
    """Leader election with client-go's semantics on a ``coordination.k8s.io`` Lease.

    Every write carries the resourceVersion it was computed from. A Lease held by someone else
    counts as expired only once it has not changed for its duration as seen from *here* (the
    local clock since the last change observed), never by comparing the holder's timestamps
    with ours: clocks of two machines disagree, the time between two observations does not.
    """

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.namespace = settings.lease_namespace
        self.name = settings.lease_name
        self.identity = settings.identity
        self.duration = settings.lease_duration
        self.renew_deadline = settings.lease_renew_deadline
        self.retry_period = settings.lease_retry_period
        self.holder: str | None = None
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    def _lease(self, transitions: int, acquired: datetime | None, name: str | None = None) -> Any:
        now = datetime.now(UTC)
        return Kube.lease(
            name,
            holder=self.identity,
            duration=int(self.duration),
            acquired=acquired or now,
            renewed=now,
            transitions=transitions,
        )

    def _observe(self, spec: Any) -> None:
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions) if spec else None
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()
        self.holder = spec.holder_identity if spec else None

    def try_acquire_or_renew(self, deadline: float) -> bool:
        """One attempt; True when we hold the Lease now. Every request ends by ``deadline``
        (monotonic seconds), so no attempt outlives the time the caller has left.

        Raises on API errors other than a lost race (409), which counts as not holding it.
        """

        def left() -> tuple[float, float]:
            seconds = deadline - time.monotonic()
            if seconds <= 0:
                raise TimeoutError("no time left for the lease request")
            return (min(5.0, seconds), seconds)

        lease = self.kube.read_lease(self.namespace, self.name, left())
        if lease is None:
            created = self.kube.create_lease(self.namespace, self._lease(0, None, name=self.name), left())
            if created is None:  # someone else created it first
                return False
            self._observe(created.spec)
            return True
        spec = lease.spec
        self._observe(spec)
        mine = spec.holder_identity == self.identity
        if spec.holder_identity and not mine:
            duration = spec.lease_duration_seconds or self.duration
            if time.monotonic() - self._observed_at < duration:
                return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._lease(transitions, spec.acquire_time if mine else None).spec
        replaced = self.kube.replace_lease(self.namespace, self.name, lease, left())
        if replaced is None:  # someone else wrote first
            return False
        self._observe(replaced.spec)
        return True

    def release(self) -> None:
        try:
            lease = self.kube.read_lease(self.namespace, self.name, (2.0, 5.0))
            if lease is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            self.kube.replace_lease(self.namespace, self.name, lease, (2.0, 5.0))
        except Exception as exc:
            log.warning("could not release the lease: %s", safe_message(getattr(exc, "reason", None) or exc))


def _hold_lease(elector: LeaseElector, stop: threading.Event, on_lost: Callable[[], None]) -> None:
    """Renew every retry period; call ``on_lost`` once the renew deadline passes without a
    successful renewal, or as soon as someone else holds the Lease.

    The deadline counts from when the last successful renewal was *sent*, which is no later
    than the renew time the API server stored; a standby may take over only a full lease
    duration after it saw that renewal, so with ``renew_deadline < duration`` this process has
    stopped acting before a standby can start. Each request is bounded by the time left.
    """
    last_ok = time.monotonic()
    failures = 0
    # Each attempt runs on its own thread and is waited for only until the deadline: whatever a
    # dead connection does inside the client (retries, handshakes), the deadline is kept here.
    attempts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease-renew")
    while not stop.wait(elector.retry_period if failures == 0 else min(0.5, elector.retry_period)):
        sent = time.monotonic()
        deadline = last_ok + elector.renew_deadline
        error: BaseException | None = None
        try:
            held = attempts.submit(elector.try_acquire_or_renew, deadline).result(timeout=max(0.0, deadline - sent))
        except Exception as exc:  # the API's errors, and TimeoutError when the deadline came first
            held, error = False, exc
        if held:
            if failures:
                log.info(
                    "renewed the lease %s/%s again after %d failed attempts", elector.namespace, elector.name, failures
                )
            last_ok, failures = sent, 0
            continue
        failures += 1
        someone_else = error is None and elector.holder not in (None, elector.identity)
        if failures == 1 and not someone_else:
            log.warning(
                "renewing the lease %s/%s failed (%s); retrying until the renew deadline (%.0f s)",
                elector.namespace,
                elector.name,
                type(error).__name__ if error else "conflict",
                elector.renew_deadline,
            )
        if someone_else or time.monotonic() - last_ok >= elector.renew_deadline:
            log.error(
                "lost the lease %s/%s (holder: %s); stopping",
                elector.namespace,
                elector.name,
                elector.holder if someone_else else "unknown, renew deadline passed",
            )
            attempts.shutdown(wait=False, cancel_futures=True)
            on_lost()
            return
    attempts.shutdown(wait=False, cancel_futures=True)


def _acquire(elector: LeaseElector, stop: threading.Event | None = None) -> bool:
    """Block until this process holds the Lease, waiting for the API server as long as it takes."""
    announced: str | None = None
    unreachable = False
    while stop is None or not stop.is_set():
        try:
            if elector.try_acquire_or_renew(deadline=time.monotonic() + max(1.0, elector.retry_period * 2)):
                return True
            if unreachable:
                log.info("the API server answers again")
                unreachable = False
            if elector.holder != announced:
                log.info("waiting for the lease %s/%s held by %s", elector.namespace, elector.name, elector.holder)
                announced = elector.holder
        except Exception as exc:
            if not unreachable:
                log.warning("waiting for the API server: %s", type(exc).__name__)
                unreachable = True
        time.sleep(elector.retry_period)
    return False


def _cluster_id(kube: Kube, settings: Settings) -> str:
    """The configured cluster id, or one derived from this cluster's kube-system namespace UID.

    A UID is unique per cluster and survives operator reinstalls, so two clusters that share
    a cloud account never share an id by default. Waits for the API server; raises
    ``ClusterIdUnavailable`` when the namespace cannot be read (then nothing may start).
    """
    if settings.cluster_id:
        return settings.cluster_id
    waited = False
    while True:
        try:
            uid = kube.namespace_uid("kube-system")
        except Unreadable as exc:
            raise ClusterIdUnavailable(str(exc)) from None
        except Exception as exc:  # the API server is not answering (yet): wait for it
            if not waited:
                log.warning("waiting for the API server to derive the cluster id (%s)", type(exc).__name__)
                waited = True
        else:
            if uid is None:
                raise ClusterIdUnavailable("namespace kube-system does not exist")
            return derived_cluster_id(uid)
        time.sleep(settings.lease_retry_period)


class ClusterIdUnavailable(Exception):
    """No cluster id was given and none can be derived: starting would risk another cluster's VMs."""


def derived_cluster_id(uid: str) -> str:
    return f"k8s-{uid.lower()}"


@contextlib.contextmanager
def _standby_liveness(endpoint: str | None) -> Iterator[None]:
    """Serve 200 on the liveness endpoint's path while this process waits for the Lease."""
    if not endpoint:
        yield
        return
    url = urllib.parse.urlsplit(endpoint)
    path = url.path or "/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?", 1)[0] == path
            body = b'{"standby": true}' if ok else b""
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer((url.hostname or "0.0.0.0", url.port or 80), Handler)  # noqa: S104
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="standby-liveness")
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run(settings: Settings) -> int:
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    install_object_refs()
    # Our own log says when the API server is unreachable (once); urllib3 would warn on every retry.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    try:
        kube = Kube(pool_size=settings.workers)
    except NoCluster as exc:
        log.error("%s; refusing to start (`skyfleet demo` runs on a local control plane)", exc)
        return 2
    try:
        cluster_id = _cluster_id(kube, settings)
    except ClusterIdUnavailable as exc:
        log.error("no --cluster-id given and none can be derived: %s; refusing to start", exc)
        kube.close()
        return 2
    if not settings.cluster_id:
        log.info("no --cluster-id given: using %s, derived from the UID of namespace kube-system", cluster_id)
    metrics = Metrics()
    metrics.set_cluster_id(cluster_id)
    metrics.serve(settings.metrics_host, settings.metrics_port)
    clouds = Clouds(kube, settings)
    clouds.observer = metrics.observe_cloud_call
    ctx = Context(settings=settings, kube=kube, clouds=clouds, metrics=metrics, cluster_id=cluster_id)

    stop = threading.Event()
    # An asyncio flag on kopf's own loop: kopf waits for thread-side flags (threading.Event,
    # concurrent Future) in an executor thread that nothing releases on a normal exit, and the
    # loop's shutdown then hangs joining that thread.
    loop = asyncio.new_event_loop()
    logging.getLogger("kopf.objects").addHandler(ObjectLogEvents(ctx.events, loop))
    lost = asyncio.Event()
    lost_flag = threading.Event()

    def on_lost() -> None:
        lost_flag.set()
        loop.call_soon_threadsafe(lost.set)
        # Stopping kopf waits for handlers and API calls in flight, which a cut-off API server
        # may never answer; a standby may take over once the Lease expires, so by then this
        # process must have stopped acting whatever it was doing.
        threading.Timer(LOST_EXIT_GRACE, _exit_lost).start()

    elector: LeaseElector | None = None
    if settings.leader_election:
        elector = LeaseElector(kube, settings)
        # A standby is alive, just not leading: answer the liveness probe until kopf takes over
        # the endpoint, or the kubelet would restart every standby again and again.
        with _standby_liveness(settings.liveness_endpoint):
            _acquire(elector)
        log.info("acquired the lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        threading.Thread(target=_hold_lease, args=(elector, stop, on_lost), daemon=True, name="lease").start()

    scope = "cluster-wide" if settings.cluster_wide else f"namespaces {', '.join(settings.namespaces)}"
    log.info("skyfleet operator starting (%s, cluster id %s)", scope, cluster_id)
    try:
        kopf.run(
            loop=loop,
            clusterwide=settings.cluster_wide,
            namespaces=settings.namespaces,
            liveness_endpoint=settings.liveness_endpoint,
            memo=kopf.Memo(ctx=ctx),
            standalone=True,
            stop_flag=lost,
        )
    finally:
        stop.set()
        if elector is not None and not lost_flag.is_set():
            elector.release()
        loop.close()
        kube.close()
    return 1 if lost_flag.is_set() else 0
