"""The few Kubernetes API calls handlers make beyond what kopf does for them.

The official client is synchronous; every call runs on a pool of ``--workers`` threads so the
event loop never blocks, and every call carries a request timeout: a connection the network
black-holes fails within seconds instead of holding a thread (and whatever waits on it)
forever. Secrets are only ever read by name (``get``), never listed or watched.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.util.retry import Retry

from skyfleet.api.common import GROUP, VERSION

__all__ = ["REQUEST_TIMEOUT", "Conflict", "Kube", "Refused", "Unreadable"]

T = TypeVar("T")
MERGE = "application/merge-patch+json"
# (connect, read) seconds for every request: short writes and reads by name answer in
# milliseconds; anything slower is a dead or black-holed connection.
REQUEST_TIMEOUT = (5.0, 10.0)


class Conflict(Exception):
    """The object changed since the version a write was computed from; compute it again."""


class Unreadable(Exception):
    """The API server answered that this object cannot be read (401, 403, 404): waiting will not help."""


class Refused(Exception):
    """The API server refused to create an object for a reason a person must look at.

    ``reason`` is a CamelCase condition reason: ``QuotaExceeded`` (a ResourceQuota),
    ``AdmissionRefused`` (a webhook or policy said no), ``Invalid`` (the schema refused it),
    ``Forbidden`` (RBAC).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


_QUOTA = re.compile(r"exceeded quota", re.IGNORECASE)
_WEBHOOK = re.compile(r"admission webhook|denied the request|ValidatingAdmissionPolicy", re.IGNORECASE)


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


def refusal(exc: ApiException) -> Refused | None:
    """The refusal an API error means, or None for errors worth retrying (5xx, 429, timeouts)."""
    if exc.status not in (400, 403, 422):
        return None
    message = _status_message(exc)
    if _QUOTA.search(message):
        return Refused("QuotaExceeded", message)
    if _WEBHOOK.search(message):
        return Refused("AdmissionRefused", message)
    if exc.status == 403:
        return Refused("Forbidden", message)
    return Refused("Invalid", message)


class TimeoutApiClient(client.ApiClient):  # type: ignore[misc]  # the client is untyped
    """An API client whose every request has a timeout unless the call gives its own."""

    timeout: tuple[float, float] = REQUEST_TIMEOUT

    def request(self, *args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return super().request(*args, _request_timeout=_request_timeout or self.timeout, **kwargs)


class NoCluster(Exception):
    """No Kubernetes API to talk to: not in a pod, and no usable kubeconfig."""


def _load_config(pool_size: int) -> client.ApiClient:
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        try:
            config.load_kube_config(client_configuration=cfg)
        except (config.ConfigException, OSError) as exc:
            where = os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise NoCluster(
                f"no Kubernetes cluster configured: not running in a pod, and the kubeconfig ({where}) "
                f"is missing or unusable ({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
    cfg.connection_pool_maxsize = pool_size
    # urllib3 retries a timed-out read three times by default, each with the full timeout: a
    # black-holed connection would then hold a call four times as long. A failed connect is
    # retried once; a read that timed out is not (callers retry at their own pace).
    cfg.retries = Retry(total=1, connect=1, read=0, status=0, other=0)
    return TimeoutApiClient(cfg)


# Lanes of the call queue, most urgent first (Kube._run). When a fleet is created, thousands of
# calls wait for the --workers threads at once; in arrival order a new Deployment's first
# Instance waited seconds behind other Instances' events and Deployments' status writes.
# What stands between an Instance and its VM's create (its POST, its status write before the
# create, reading a credential) goes first; events, which nothing waits for, go last. Within a
# lane, calls of a lower ``rank`` go first: a Deployment's later Instances are POSTed with their
# rank in its pass, so every new Deployment's first Instance, and every Instance's status write
# before its create, goes before a tenth Instance of another Deployment.
PROVISION, ROUTINE, EVENTS = 0, 1, 2


class _Lanes:
    """A thread pool that starts the most urgent waiting call first (FIFO within a lane).

    Each call submits one task to the pool; a task takes whichever call is most urgent when it
    starts, so the pool's size and threads are as before, only the order changes.
    """

    def __init__(self, size: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="kube")
        self._waiting: list[tuple[int, int, int, Callable[[], Any], Future[Any]]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count()

    def submit(self, lane: int, fn: Callable[[], T], rank: int = 0) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            heapq.heappush(self._waiting, (lane, rank, next(self._seq), fn, future))
        self.pool.submit(self._take)
        return future

    def _take(self) -> None:
        with self._lock:
            *_, fn, future = heapq.heappop(self._waiting)
        if not future.set_running_or_notify_cancel():
            return  # its caller gave up while it waited
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for *_, future in waiting:
            future.cancel()


class Kube:
    def __init__(self, pool_size: int = 8, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or _load_config(pool_size)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        # The pool --workers describes: blocking API calls never queue behind other work (or
        # grow Python's default pool) and never exceed the connection pool's size.
        self.lanes = _Lanes(pool_size)

    async def _run(self, fn: Callable[[], T], lane: int = ROUTINE, rank: int = 0) -> T:
        return await asyncio.wrap_future(self.lanes.submit(lane, fn, rank))

    @staticmethod
    def _lane(plural: str) -> int:
        return PROVISION if plural in ("instances", "cloudcredentials") else ROUTINE

    def close(self) -> None:
        self.lanes.shutdown()

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return obj

        return await self._run(call, self._lane(plural))

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any], rank: int = 0) -> bool:
        """Create; False when an object of that name already exists (a repeated plan is harmless).

        ``Refused`` when a quota, an admission webhook, the schema or RBAC says no. ``rank``: how
        many the caller created before this one in a row (see PROVISION).
        """

        def call() -> bool:
            try:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, dict(body))
            except ApiException as exc:
                if exc.status == 409:
                    return False
                refused = refusal(exc)
                if refused is not None:
                    raise refused from None
                raise
            return True

        return await self._run(call, self._lane(plural), rank)

    async def delete(self, plural: str, namespace: str, name: str) -> bool:
        """Delete; False when the object was already gone."""

        def call() -> bool:
            try:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return await self._run(call)

    async def patch(self, plural: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        def call() -> None:
            try:
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, dict(patch), _content_type=MERGE
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise

        await self._run(call)

    async def patch_status(
        self,
        plural: str,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        resource_version: str | None = None,
    ) -> None:
        """Merge-patch status; with ``resource_version``, only if the object is still at that
        version (``Conflict`` otherwise), for writers that share a list such as conditions."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}

        def call() -> None:
            try:
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, plural, name, body, _content_type=MERGE
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise Conflict(f"{plural} {namespace}/{name} changed since version {resource_version}") from None
                if exc.status != 404:  # deleted meanwhile: nothing left to report on
                    raise

        await self._run(call, self._lane(plural))

    async def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of one Secret, or None when it does not exist."""

        def call() -> dict[str, str] | None:
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            data = secret.data or {}
            return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}

        return await self._run(call, PROVISION)

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Post a core/v1 Event (see handlers/events.py)."""

        def call() -> None:
            self.core.create_namespaced_event(namespace, dict(body))

        await self._run(call, EVENTS)

    # The Lease and the cluster id are handled before kopf starts and on the lease thread, so
    # these calls are synchronous; each carries the caller's timeout (the time it has left).

    @staticmethod
    def _none_on(status: int, call: Callable[[], T]) -> T | None:
        """``call()``, or None when the API server answers ``status``."""
        try:
            return call()
        except ApiException as exc:
            if exc.status == status:
                return None
            raise

    def read_lease(self, namespace: str, name: str, timeout: tuple[float, float]) -> Any | None:
        """The Lease (a V1Lease), or None when there is none."""
        return self._none_on(
            404, lambda: self.coordination.read_namespaced_lease(name, namespace, _request_timeout=timeout)
        )

    def create_lease(self, namespace: str, lease: Any, timeout: tuple[float, float]) -> Any | None:
        """The created Lease, or None when someone else created it first."""
        return self._none_on(
            409, lambda: self.coordination.create_namespaced_lease(namespace, lease, _request_timeout=timeout)
        )

    def replace_lease(self, namespace: str, name: str, lease: Any, timeout: tuple[float, float]) -> Any | None:
        """The Lease as written, or None when it changed since it was read (someone else wrote)."""
        return self._none_on(
            409, lambda: self.coordination.replace_namespaced_lease(name, namespace, lease, _request_timeout=timeout)
        )

    @staticmethod
    def lease(
        name: str | None, *, holder: str | None, duration: int, acquired: Any, renewed: Any, transitions: int
    ) -> Any:
        """A V1Lease (spec only, plus the name for a create)."""
        spec = client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=duration,
            acquire_time=acquired,
            renew_time=renewed,
            lease_transitions=transitions,
        )
        return client.V1Lease(metadata=client.V1ObjectMeta(name=name) if name else None, spec=spec)

    def namespace_uid(self, name: str, timeout: tuple[float, float] = REQUEST_TIMEOUT) -> str | None:
        """The UID of a namespace (kube-system's identifies the cluster); None when it does not
        exist, ``Unreadable`` when we may not read it. A list with a field selector needs only the
        list verb kopf needs anyway, not get."""
        try:
            found = self.core.list_namespace(field_selector=f"metadata.name={name}", _request_timeout=timeout)
        except ApiException as exc:
            if exc.status in (401, 403, 404):
                raise Unreadable(f"cannot read namespace {name} ({exc.status} {exc.reason})") from None
            raise
        return str(found.items[0].metadata.uid) if found.items else None
