"""Events name Skyfleet, the pod and what it was doing; kopf's per-object log lines too."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

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
