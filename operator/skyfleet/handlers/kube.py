"""The few Kubernetes API calls handlers make beyond what kopf does for them.

The official client is synchronous; every call runs in a worker thread so the event loop never
blocks. Secrets are only ever read by name (``get``), never listed or watched.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from skyfleet.api.common import GROUP, VERSION

__all__ = ["Kube"]

T = TypeVar("T")
MERGE = "application/merge-patch+json"


class Conflict(Exception):
    """The object changed since the version a write was computed from; compute it again."""


def _load_config(pool_size: int) -> client.ApiClient:
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return client.ApiClient(cfg)


class Kube:
    def __init__(self, pool_size: int = 8, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or _load_config(pool_size)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return obj

        return await self._run(call)

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create; False when an object of that name already exists (a repeated plan is harmless)."""

        def call() -> bool:
            try:
                self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, dict(body))
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            return True

        return await self._run(call)

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

        await self._run(call)

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

        return await self._run(call)

    async def get_lease(self, namespace: str, name: str) -> Any:
        def call() -> Any:
            try:
                return client.CoordinationV1Api(self.api_client).read_namespaced_lease(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return await self._run(call)
