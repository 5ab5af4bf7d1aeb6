"""One Deployment pass (handlers/deployments.py) over stand-ins for kopf's indexes and the
Kubernetes API: what it creates, and what a pass costs when the fleet is large."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import kopf
import pytest

from skyfleet.handlers.clouds import Clouds
from skyfleet.handlers.context import FINALIZER, Context
from skyfleet.handlers.deployments import RECENT, Indexes, reconcile_once
from skyfleet.metrics import Metrics
from skyfleet.reconcile.views import CredentialView
from skyfleet.settings import Settings
from tests.unit.test_handlers_instances import image

pytestmark = pytest.mark.unit

NS = "team"


class CreatingKube:
    """A stand-in for handlers.kube.Kube: records creates and status writes, posts nothing."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.manifests: list[dict[str, Any]] = []
        self.ranks: list[int] = []
        self.status: list[dict[str, Any]] = []

    async def create(self, plural: str, namespace: str, body: Mapping[str, Any], rank: int = 0) -> bool:
        self.ranks.append(rank)
        self.created.append(body["metadata"]["name"])
        self.manifests.append(dict(body))
        return True

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None = None
    ) -> None:
        self.status.append(dict(status))

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        return None


class CountOnly:
    """A kopf index store that may be counted but not walked: walking it is what a pass at
    10,000 Instances cannot afford for every Deployment."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("a Deployment pass walked every Instance of the credential")


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"u-{name}", "generation": 1},
        "spec": {
            "nodeGroups": [
                {
                    "name": "web",
                    "replicas": replicas,
                    "imageRef": "ubuntu",
                    "size": {"cpu": 1, "memoryMiB": 1024},
                    "placement": {"targets": [{"credential": "mem"}]},
                }
            ]
        },
    }


def world(in_use: Any, max_instances: int | None = None) -> tuple[Context, CreatingKube, Indexes]:
    kube = CreatingKube()
    settings = Settings(cluster_id="c1")
    ctx = Context(settings=settings, kube=kube, clouds=Clouds(kube, settings), metrics=Metrics(), cluster_id="c1")  # type: ignore[arg-type]
    cred = CredentialView(name="mem", provider="memory", region="mem-1", ready=True, max_instances=max_instances)
    indexes = Indexes(
        instances_by_deployment={},  # type: ignore[arg-type]
        instances_by_credential={(NS, "mem"): in_use},  # type: ignore[arg-type]
        credentials={(NS, "mem"): [cred]},  # type: ignore[arg-type]
        images={(NS, "ubuntu"): [image("img-ubuntu-1")]},  # type: ignore[arg-type]
    )
    return ctx, kube, indexes


async def test_a_pass_counts_the_credentials_instances_without_walking_them() -> None:
    ctx, kube, indexes = world(CountOnly(9_998), max_instances=10_000)
    body = kopf.Body(deployment("shop", replicas=3))
    assert await reconcile_once(ctx=ctx, namespace=NS, name="shop", body=body, indexes=indexes)
    # Two places left under maxInstances, and the count came from the index's size.
    assert kube.created == ["shop-web-0", "shop-web-1"]
    # Each ranked by how many the pass sent before it: the first Instance of every new
    # Deployment waits for a thread before the second of any other (handlers/kube.py).
    assert kube.ranks == [0, 1]


async def test_creates_in_flight_are_not_sent_again_and_are_forgotten_once_old() -> None:
    ctx, kube, indexes = world([])
    body = kopf.Body(deployment("shop", replicas=2))
    await reconcile_once(ctx=ctx, namespace=NS, name="shop", body=body, indexes=indexes)
    # The index has not shown them yet: the next pass does not send them again.
    await reconcile_once(ctx=ctx, namespace=NS, name="shop", body=body, indexes=indexes)
    assert kube.created == ["shop-web-0", "shop-web-1"]
    # Another Deployment's pass much later forgets them (they never showed up: sent again).
    for key in ctx.recent_creates:
        ctx.recent_creates[key] = time.monotonic() - RECENT - 1
    await reconcile_once(
        ctx=ctx, namespace=NS, name="blog", body=kopf.Body(deployment("blog", replicas=1)), indexes=indexes
    )
    assert list(ctx.recent_creates) == [(NS, "blog-web-0")]
    await reconcile_once(ctx=ctx, namespace=NS, name="shop", body=body, indexes=indexes)
    assert kube.created == ["shop-web-0", "shop-web-1", "blog-web-0", "shop-web-0", "shop-web-1"]


async def test_instances_are_created_with_the_finalizer_on() -> None:
    # kopf would first patch the finalizer on and handle the create only on the next event: a
    # write and a round trip more before every VM's create.
    ctx, kube, indexes = world([])
    await reconcile_once(ctx=ctx, namespace=NS, name="shop", body=kopf.Body(deployment("shop", 1)), indexes=indexes)
    [manifest] = kube.manifests
    assert manifest["metadata"]["finalizers"] == [FINALIZER] == ["skyfleet.io/finalizer"]
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u-shop"
