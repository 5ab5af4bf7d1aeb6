"""Events name Skyfleet, the pod and what it was doing; kopf's per-object log lines too."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from skyfleet.handlers.events import Events, ObjectLogEvents, action_for

pytestmark = pytest.mark.unit

INSTANCE = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Instance",
    "metadata": {"name": "shop-web-0", "namespace": "shop", "uid": "u-1", "generation": 1},
}


class RecordingKube:
    """A stand-in for handlers.kube.Kube that keeps the events it is asked to create."""

    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.created.append((namespace, body))


@pytest.mark.parametrize(
    ("kind", "reason", "action"),
    [
        ("Instance", "VMCreated", "Create"),
        ("Instance", "VMDestroyed", "Delete"),
        ("Instance", "VMOrphaned", "Release"),
        ("Instance", "VMLost", "Observe"),
        ("CloudCredential", "InvalidCredentials", "Verify"),
        ("Image", "NoMatch", "Resolve"),
        ("Deployment", "AllReplicasReady", "Reconcile"),
    ],
)
def test_action_says_what_skyfleet_was_doing(kind: str, reason: str, action: str) -> None:
    assert action_for(kind, reason) == action


async def test_an_event_names_skyfleet_the_pod_and_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "skyfleet-7d9c-abcde")
    kube = RecordingKube()
    events = Events(kube)  # type: ignore[arg-type]
    events.post(INSTANCE, "Normal", "VMCreated", "VM i-1 (t3.micro) on aws\nAKIA" + "x" * 5000)
    await asyncio.sleep(0.05)
    [(namespace, body)] = kube.created
    assert namespace == "shop"
    assert (body["reportingComponent"], body["reportingInstance"], body["action"]) == (
        "skyfleet",
        "skyfleet-7d9c-abcde",
        "Create",
    )
    assert body["source"]["component"] == "skyfleet"
    assert body["involvedObject"] == {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Instance",
        "name": "shop-web-0",
        "namespace": "shop",
        "uid": "u-1",
    }
    assert "\n" not in body["message"]
    assert len(body["message"]) <= 1024


async def test_kopf_log_lines_about_an_object_become_our_events() -> None:
    kube = RecordingKube()
    handler = ObjectLogEvents(Events(kube, instance="pod-1"), asyncio.get_running_loop())  # type: ignore[arg-type]
    logger = logging.getLogger("test.kopf.objects")
    logger.addHandler(handler)
    ref = {"apiVersion": "skyfleet.io/v1alpha1", "kind": "Deployment", "name": "shop", "namespace": "shop"}
    try:
        logger.warning("Handler 'cleanup' failed temporarily: waiting", extra={"k8s_ref": ref})
        logger.error("skipped by kopf's own rule", extra={"k8s_ref": ref, "k8s_skip": True})
        logger.warning("no object, no event")
        logger.info("below the level", extra={"k8s_ref": ref})
        await asyncio.sleep(0.05)
    finally:
        logger.removeHandler(handler)
    assert [(b["type"], b["reason"], b["action"], b["reportingComponent"]) for _, b in kube.created] == [
        ("Warning", "Logging", "Reconcile", "skyfleet")
    ]


class HeldKube:
    """A stand-in Kube whose event posts wait until the test lets them through."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.open = asyncio.Event()

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.open.wait()
            self.created.append(body)
        finally:
            self.in_flight -= 1


def instance(n: int) -> dict[str, Any]:
    return {**INSTANCE, "metadata": {**INSTANCE["metadata"], "name": f"shop-web-{n}", "uid": f"u-{n}"}}


async def test_a_burst_larger_than_the_api_server_takes_is_bounded_counted_and_then_drains() -> None:
    from skyfleet.handlers.events import MAX_QUEUED, POSTERS
    from skyfleet.metrics import Metrics

    kube = HeldKube()
    metrics = Metrics(CollectorRegistry())
    events = Events(kube, instance="pod-1", on_drop=metrics.event_dropped)  # type: ignore[arg-type]
    burst = MAX_QUEUED + 500
    for n in range(burst):
        events.post(instance(n), "Normal", "VMCreated", f"VM i-{n} created")
    await asyncio.sleep(0.05)
    # POSTERS posts in flight, the rest of the first MAX_QUEUED waiting, the others dropped and counted.
    assert kube.in_flight == POSTERS
    assert events.queued == MAX_QUEUED - POSTERS
    assert events.dropped == 500
    assert metrics.registry.get_sample_value("skyfleet_events_dropped_total", {"reason": "VMCreated"}) == 500
    kube.open.set()
    for _ in range(200):
        if len(kube.created) == MAX_QUEUED:
            break
        await asyncio.sleep(0.01)
    # The first ones made are the ones posted (two posters: finished in any order).
    assert sorted(b["involvedObject"]["name"] for b in kube.created) == sorted(
        f"shop-web-{n}" for n in range(MAX_QUEUED)
    )
    assert kube.most_in_flight == POSTERS
    # Once drained, events are posted again.
    events.post(instance(0), "Warning", "VMLost", "the VM of shop-web-0 is gone")
    await asyncio.sleep(0.05)
    assert kube.created[-1]["reason"] == "VMLost"


async def test_an_event_equal_to_one_still_waiting_is_posted_once() -> None:
    kube = HeldKube()
    events = Events(kube, instance="pod-1", posters=1)  # type: ignore[arg-type]
    events.post(instance(1), "Normal", "VMCreated", "VM i-1 created")  # taken by the poster at once
    await asyncio.sleep(0)
    for _ in range(3):
        events.post(instance(2), "Warning", "CapacityUnavailable", "no capacity in eu-west-1a")
    events.post(instance(2), "Warning", "CapacityUnavailable", "no capacity in eu-west-1b")
    events.post(instance(3), "Warning", "CapacityUnavailable", "no capacity in eu-west-1a")
    kube.open.set()
    await asyncio.sleep(0.05)
    assert [(b["involvedObject"]["name"], b["message"]) for b in kube.created] == [
        ("shop-web-1", "VM i-1 created"),
        ("shop-web-2", "no capacity in eu-west-1a"),
        ("shop-web-2", "no capacity in eu-west-1b"),
        ("shop-web-3", "no capacity in eu-west-1a"),
    ]
