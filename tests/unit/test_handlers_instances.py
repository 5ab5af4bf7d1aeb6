"""Creating an Instance's VM (handlers/instances.py) against the in-memory cloud.

The cloud is ``skyfleet.testing.memory`` (the connector contract in memory); the Kubernetes
API wrapper is a stand-in that applies the status patches it is asked for, and the index of
Images is a plain dict, as kopf's index reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from skyfleet.api.image import Image
from skyfleet.contract import (
    Capabilities,
    CloudImage,
    CloudNode,
    Connector,
    CreateRequest,
    CredentialConfig,
    Limits,
    OwnerTags,
    Throttled,
)
from skyfleet.handlers.context import Context
from skyfleet.handlers.credentials import verify_once
from skyfleet.handlers.instances import _provision
from skyfleet.metrics import Metrics
from skyfleet.settings import Settings
from skyfleet.testing.memory import MemoryCloud, MemoryConnector

pytestmark = pytest.mark.unit

NS = "team"


class ApplyingKube:
    """A stand-in for handlers.kube.Kube: applies status merge patches to one object."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.writes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Any, resource_version: Any = None
    ) -> None:
        self.writes.append(dict(status))
        self.body["status"] = merge(self.body.get("status") or {}, status)

    async def create_event(self, namespace: str, body: Any) -> None:
        self.events.append(dict(body))


def merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(old)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class OneConnector:
    """A stand-in for handlers.clouds.Clouds that hands out one connector."""

    def __init__(self, connector: Connector) -> None:
        self._connector = connector

    async def connector(self, namespace: str, name: str, region: str | None = None) -> Connector:
        return self._connector

    def single_flight(self, connector: Connector, kind: str) -> AbstractAsyncContextManager[Any]:
        return asyncio.Lock()


def instance() -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "shop-web-0", "namespace": NS, "uid": "uid-web-0", "generation": 1},
        "spec": {
            "deployment": "shop",
            "group": "web",
            "credential": "mem",
            "region": "mem-1",
            "imageRef": "ubuntu",
            "size": {"cpu": 2},
            "templateHash": "h1",
        },
    }


def image(resolved_id: str, generation: int = 1) -> Image:
    return Image.model_validate(
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "Image",
            "metadata": {"name": "ubuntu", "namespace": NS, "generation": generation},
            "spec": {"clouds": [{"provider": "memory", "lookup": {"namePattern": "ubuntu-*"}}]},
            "status": {
                "observedGeneration": generation,
                "resolved": [{"credential": "mem", "region": "mem-1", "id": resolved_id}],
            },
        }
    )


def world() -> tuple[Context, ApplyingKube, MemoryCloud, dict[str, Any]]:
    body = instance()
    kube = ApplyingKube(body)
    cloud = MemoryCloud()
    cloud.images.append(CloudImage("img-ubuntu-2", "ubuntu-24.04-20260601", datetime(2026, 6, 1, tzinfo=UTC)))
    connector = MemoryConnector(CredentialConfig(name="mem", namespace=NS, provider="memory", region="mem-1"), cloud)
    settings = Settings(cluster_id="c1")
    ctx = Context(settings=settings, kube=kube, clouds=OneConnector(connector), metrics=Metrics(), cluster_id="c1")  # type: ignore[arg-type]
    return ctx, kube, cloud, body


async def test_the_vm_is_created_from_the_images_resolution_and_the_smallest_size_that_fits() -> None:
    ctx, kube, cloud, body = world()
    images = {(NS, "ubuntu"): [image("img-ubuntu-1")]}
    await _provision(ctx, body, 0, images)  # type: ignore[arg-type]
    creates = [detail for op, detail in cloud.calls if op == "create"]
    assert creates == ["shop-web-0 image=img-ubuntu-1 size=medium"]
    status = body["status"]
    assert (status["phase"], status["imageId"], status["instanceType"]) == ("Running", "img-ubuntu-1", "medium")
    assert status["observedGeneration"] == 1
    # What the VM will be created from is on the Instance before the create is sent.
    creating = next(w for w in kube.writes if w.get("phase") == "Creating")
    assert (creating["imageId"], creating["instanceType"]) == ("img-ubuntu-1", "medium")
    assert "providerId" not in creating


async def test_a_retried_create_uses_what_was_recorded_not_a_newer_image() -> None:
    ctx, _kube, cloud, body = world()
    cloud.fail("create", Throttled("slow down", provider="memory"))
    images = {(NS, "ubuntu"): [image("img-ubuntu-1")]}
    with pytest.raises(kopf.TemporaryError):
        await _provision(ctx, body, 0, images)  # type: ignore[arg-type]
    assert body["status"]["phase"] == "Creating"
    # Meanwhile the Image resolves to a newer id (a new name match, an edit): this Instance's
    # VM is still made from what was recorded for it; only new Instances take the new one.
    images[(NS, "ubuntu")] = [image("img-ubuntu-2", generation=2)]
    await _provision(ctx, body, 1, images)  # type: ignore[arg-type]
    creates = [detail for op, detail in cloud.calls if op == "create"]
    assert creates == ["shop-web-0 image=img-ubuntu-1 size=medium"] * 2
    [node] = cloud.nodes.values()
    assert node.image_id == "img-ubuntu-1"
    assert body["status"]["imageId"] == "img-ubuntu-1"


async def test_at_max_instances_the_instance_fails_with_quota_exceeded_and_no_create() -> None:
    # Two VMs of ours that no Instance records fill the credential: the connector refuses
    # before calling the cloud, and the Instance fails with the reason the Deployment falls
    # back on (reconcile/instances.py FALLBACK_REASONS).
    ctx, kube, cloud, body = world()
    config = CredentialConfig(
        name="mem", namespace=NS, provider="memory", region="mem-1", limits=Limits(max_instances=2)
    )
    connector = MemoryConnector(config, cloud)
    for n in range(2):
        stray = CreateRequest(
            name=f"stray-{n}", image_id="img-ubuntu-1", size_id="small", owner=OwnerTags("c1", f"s{n}")
        )
        await MemoryConnector(dataclasses.replace(config, limits=Limits()), cloud).create(stray)
    cloud.calls.clear()
    ctx.clouds = OneConnector(connector)  # type: ignore[assignment]
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert (body["status"]["phase"], ready["reason"]) == ("Failed", "QuotaExceeded")
    assert "allows 2 instances" in ready["message"]
    assert [op for op, _ in cloud.calls if op == "create"] == []
    await asyncio.sleep(0.05)  # events are posted in the background
    assert "QuotaExceeded" in [e["reason"] for e in kube.events]


async def test_an_image_the_cloud_does_not_have_fails_the_instance_without_a_create() -> None:
    ctx, _kube, cloud, body = world()
    images: dict[Any, Any] = {}
    await _provision(ctx, body, 0, images)  # type: ignore[arg-type]
    assert body["status"]["phase"] == "Failed"
    assert next(c for c in body["status"]["conditions"] if c["type"] == "Ready")["reason"] == "ImageNotFound"
    assert next(c for c in body["status"]["conditions"] if c["type"] == "Stalled")["status"] == "True"
    assert [op for op, _ in cloud.calls if op == "create"] == []


def recording_creates(ctx: Context, cloud: MemoryCloud) -> list[CreateRequest]:
    """Route ctx's creates through a memory connector that keeps every request it is sent."""
    sent: list[CreateRequest] = []
    connector = MemoryConnector(CredentialConfig(name="mem", namespace=NS, provider="memory", region="mem-1"), cloud)
    original = connector.create

    async def create(req: CreateRequest) -> CloudNode:
        sent.append(req)
        return await original(req)

    connector.create = create  # type: ignore[method-assign]
    ctx.clouds = OneConnector(connector)  # type: ignore[assignment]
    return sent


async def test_a_restart_that_finds_the_instance_creating_says_the_last_create_may_have_gone_out() -> None:
    # Clouds without idempotency tokens then wait for the listing before sending another create.
    images = {(NS, "ubuntu"): [image("img-ubuntu-1")]}
    ctx, _kube, cloud, body = world()
    ctx.settings = Settings(cluster_id="c1", create_settle=45.0)
    sent = recording_creates(ctx, cloud)
    body["status"] = {"phase": "Creating", "imageId": "img-ubuntu-1", "instanceType": "medium"}
    before = time.time()

    await _provision(ctx, body, 0, images)  # type: ignore[arg-type]

    [req] = sent
    assert req.unknown_since is not None
    assert before - 1 <= req.unknown_since <= time.time() + 1
    assert req.settle == 45.0
    # A first create has nothing in flight: it goes out at once.
    ctx, _kube, cloud, body = world()
    first = recording_creates(ctx, cloud)
    await _provision(ctx, body, 0, images)  # type: ignore[arg-type]
    assert [r.unknown_since for r in first] == [None]


class NoUserDataConnector(MemoryConnector):
    """A connector whose cloud takes no user data (a custom driver may say so)."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, user_data=False)


@pytest.mark.parametrize(("user_data", "created"), [("#cloud-config\n", False), (None, True)])
async def test_user_data_on_a_cloud_that_takes_none_fails_the_instance_before_any_create(
    user_data: str | None, created: bool
) -> None:
    ctx, kube, cloud, body = world()
    connector = NoUserDataConnector(
        CredentialConfig(name="mem", namespace=NS, provider="memory", region="mem-1"), cloud
    )
    ctx.clouds = OneConnector(connector)  # type: ignore[assignment]
    if user_data:
        body["spec"]["userData"] = user_data
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    assert bool([op for op, _ in cloud.calls if op == "create"]) is created
    if not created:
        ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
        assert (body["status"]["phase"], ready["reason"]) == ("Failed", "UserDataUnsupported")
        await asyncio.sleep(0.05)  # events are posted in the background
        assert [e["reason"] for e in kube.events] == ["UserDataUnsupported"]


class NoTagsConnector(MemoryConnector):
    """A connector whose cloud cannot tag VMs (a custom driver may say so)."""

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, tags=False)


class LoadingClouds(OneConnector):
    async def load(self, namespace: str, name: str) -> tuple[Any, CredentialConfig]:
        return None, self._connector.config


@pytest.mark.parametrize(
    ("connector_cls", "verdict"),
    [(NoTagsConnector, ("False", "UnsupportedProvider")), (MemoryConnector, ("True", "Verified"))],
)
async def test_a_cloud_that_cannot_tag_vms_is_not_a_ready_credential(
    connector_cls: type[MemoryConnector], verdict: tuple[str, str]
) -> None:
    # Skyfleet knows its VMs only by their owner tags: without them it could neither adopt a VM
    # after a lost answer nor tell its own VMs from anyone else's.
    ctx, kube, cloud, _ = world()
    config = CredentialConfig(name="mem", namespace=NS, provider="memory", region="mem-1")
    ctx.clouds = LoadingClouds(connector_cls(config, cloud))  # type: ignore[assignment]
    body = {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "CloudCredential",
        "metadata": {"name": "mem", "namespace": NS, "uid": "u-c", "generation": 1, "resourceVersion": "1"},
        "spec": {"provider": "memory", "region": "mem-1", "secretRef": {"name": "keys"}},
    }
    kube.body = body
    await verify_once(NS, "mem", kopf.Body(body), SimpleNamespace(ctx=ctx), logging.getLogger("test"))  # type: ignore[arg-type]
    ready = next(c for c in body["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == verdict
    if verdict[0] == "False":
        assert "cannot tag VMs" in ready["message"]
