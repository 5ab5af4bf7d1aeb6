"""Run the operator: kopf configured for strict schemas, behind a Lease so only one acts.

kopf's peering only pauses operators that see each other; it is not leader election (two with
equal priority both pause). A ``coordination.k8s.io`` Lease is: the process waits until it
holds the Lease, renews it while running, stops when it cannot renew within the lease
duration, and releases it on a clean exit so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

import skyfleet.handlers  # noqa: F401 - importing registers every handler
from skyfleet.handlers.clouds import Clouds
from skyfleet.handlers.context import Context, ctx_of
from skyfleet.handlers.kube import Kube
from skyfleet.logs import install_object_refs
from skyfleet.metrics import Metrics
from skyfleet.settings import Settings

__all__ = ["FINALIZER", "LeaseElector", "run"]

log = logging.getLogger("skyfleet.operator")

FINALIZER = "skyfleet.io/finalizer"
PREFIX = "skyfleet.io"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    ctx = ctx_of(memo)
    settings.persistence.finalizer = FINALIZER
    # kopf's default progress storage writes into status, which structural schemas prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.execution.max_workers = ctx.settings.workers
    # The Lease decides who acts; peering would only add writes and pause on lookalikes.
    settings.peering.standalone = True
    # A watch stream that silently stops is reconnected instead of leaving a live-looking zombie.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await ctx_of(memo).clouds.close()


class LeaseElector:
    """Acquire and renew a Lease with optimistic concurrency (resourceVersion) on every write."""

    def __init__(self, api: client.CoordinationV1Api, settings: Settings) -> None:
        self.api = api
        self.namespace = settings.lease_namespace
        self.name = settings.lease_name
        self.identity = settings.identity
        self.duration = settings.lease_duration

    def _spec(self, transitions: int, acquired: datetime | None) -> client.V1LeaseSpec:
        now = datetime.now(UTC)
        return client.V1LeaseSpec(
            holder_identity=self.identity,
            lease_duration_seconds=int(self.duration),
            acquire_time=acquired or now,
            renew_time=now,
            lease_transitions=transitions,
        )

    def try_acquire(self) -> tuple[bool, str | None]:
        """(whether we hold the Lease now, who holds it otherwise)."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name), spec=self._spec(0, None))
            try:
                self.api.create_namespaced_lease(self.namespace, body)
            except ApiException as exc2:
                if exc2.status == 409:
                    return False, None
                raise
            return True, self.identity
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time
        duration = spec.lease_duration_seconds or self.duration
        expired = renewed is None or renewed + timedelta(seconds=duration) < datetime.now(UTC)
        if holder and holder != self.identity and not expired:
            return False, holder
        mine = holder == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(transitions, spec.acquire_time if mine else None)
        try:
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first
                return False, holder
            raise
        return True, self.identity

    def release(self) -> None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            self.api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as exc:
            log.warning("could not release the lease: %s", exc.reason)


def _hold_lease(elector: LeaseElector, stop: threading.Event, on_lost: Callable[[], None]) -> None:
    """Renew until ``stop``; set ``lost`` (which stops kopf) when renewal fails for a full duration."""
    last_ok = time.monotonic()
    interval = elector.duration / 3
    while not stop.wait(interval):
        try:
            held, holder = elector.try_acquire()
        except Exception as exc:
            held, holder = False, f"unknown ({type(exc).__name__})"
        if held:
            last_ok = time.monotonic()
        elif holder not in (None, elector.identity) or time.monotonic() - last_ok > elector.duration:
            log.error("lost the lease %s/%s (holder: %s); stopping", elector.namespace, elector.name, holder)
            on_lost()
            return


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
    kube = Kube(pool_size=settings.workers)
    metrics = Metrics()
    metrics.serve(settings.metrics_host, settings.metrics_port)
    clouds = Clouds(kube, settings)
    clouds.observer = metrics.observe_cloud_call
    ctx = Context(settings=settings, kube=kube, clouds=clouds, metrics=metrics)

    stop = threading.Event()
    # An asyncio flag on kopf's own loop: kopf waits for thread-side flags (threading.Event,
    # concurrent Future) in an executor thread that nothing releases on a normal exit, and the
    # loop's shutdown then hangs joining that thread.
    loop = asyncio.new_event_loop()
    lost = asyncio.Event()
    lost_flag = threading.Event()

    def on_lost() -> None:
        lost_flag.set()
        loop.call_soon_threadsafe(lost.set)

    elector: LeaseElector | None = None
    if settings.leader_election:
        elector = LeaseElector(client.CoordinationV1Api(kube.api_client), settings)
        announced = None
        # A standby is alive, just not leading: answer the liveness probe until kopf takes over
        # the endpoint, or the kubelet would restart every standby again and again.
        with _standby_liveness(settings.liveness_endpoint):
            while True:
                held, holder = elector.try_acquire()
                if held:
                    break
                if holder != announced:
                    log.info("waiting for the lease %s/%s held by %s", elector.namespace, elector.name, holder)
                    announced = holder
                time.sleep(elector.duration / 3)
        log.info("acquired the lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
        threading.Thread(target=_hold_lease, args=(elector, stop, on_lost), daemon=True, name="lease").start()

    scope = "cluster-wide" if settings.cluster_wide else f"namespaces {', '.join(settings.namespaces)}"
    log.info("skyfleet operator starting (%s, cluster id %s)", scope, settings.cluster_id)
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
    return 1 if lost_flag.is_set() else 0
