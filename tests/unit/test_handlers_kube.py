"""The Kubernetes API wrapper's call queue (handlers/kube.py): what waits for a thread first."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest

from skyfleet.handlers.kube import Kube

pytestmark = pytest.mark.unit


class Api:
    """Stands in for the client's CustomObjectsApi and CoreV1Api: records the order of calls;
    the first one holds the only thread until released."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self.release = threading.Event()
        self.holding = threading.Event()

    def _call(self, what: str) -> None:
        if not self.order:
            self.holding.set()
            self.release.wait(10)
        self.order.append(what)

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        self._call(f"get {plural}")
        return {}

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: Any) -> None:
        self._call(f"create {body['metadata']['name']}")

    def patch_namespaced_custom_object_status(self, *args: Any, **kwargs: Any) -> None:
        self._call(f"status {args[3]}")

    def create_namespaced_event(self, ns: str, body: Any) -> None:
        self._call("event")


async def test_an_instance_create_and_its_status_go_before_events_and_deployment_status() -> None:
    # When a fleet is created, thousands of calls wait for the threads at once; a new
    # Deployment's first Instance must not wait behind every event already queued.
    api = Api()
    kube = Kube(pool_size=1, api_client=object())
    kube.custom = kube.core = api  # type: ignore[assignment]
    try:
        first = asyncio.create_task(kube.get("deployments", "team", "shop"))
        assert await asyncio.to_thread(api.holding.wait, 10)
        queued = [
            kube.create_event("team", {"reason": "Scaled"}),
            kube.patch_status("deployments", "team", "shop", {"phase": "Provisioning"}),
            kube.create_event("team", {"reason": "VMCreated"}),
            kube.create("instances", "team", {"metadata": {"name": "shop-web-1"}}, rank=1),
            kube.create("instances", "team", {"metadata": {"name": "blog-web-0"}}, rank=0),
            kube.patch_status("instances", "team", "shop-web-0", {"phase": "Creating"}),
        ]
        tasks = [asyncio.create_task(c) for c in queued]
        await asyncio.sleep(0.1)  # all of them waiting for the one thread
        api.release.set()
        await asyncio.wait_for(asyncio.gather(first, *tasks), 10)
    finally:
        kube.close()
    # A second Instance of one Deployment goes after the first of another and after an
    # Instance's status write that stands before a create.
    assert api.order == [
        "get deployments",
        "create blog-web-0",
        "status instances",
        "create shop-web-1",
        "status deployments",
        "event",
        "event",
    ]


async def test_a_call_its_caller_gave_up_on_is_not_sent() -> None:
    api = Api()
    kube = Kube(pool_size=1, api_client=object())
    kube.custom = kube.core = api  # type: ignore[assignment]
    try:
        first = asyncio.create_task(kube.get("deployments", "team", "shop"))
        assert await asyncio.to_thread(api.holding.wait, 10)
        dropped = asyncio.create_task(kube.create_event("team", {"reason": "Scaled"}))
        await asyncio.sleep(0.05)
        dropped.cancel()
        # Its cancellation reaches the waiting call a loop turn later; the thread is freed after.
        with contextlib.suppress(asyncio.CancelledError):
            await dropped
        api.release.set()
        await asyncio.wait_for(first, 10)
        await asyncio.wait_for(kube.create("instances", "team", {"metadata": {"name": "shop-web-0"}}), 10)
    finally:
        kube.close()
    assert api.order == ["get deployments", "create shop-web-0"]
