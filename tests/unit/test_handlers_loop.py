"""The loop runner and the status writer every daemon uses (handlers/loop.py, handlers/status.py).

Run against stand-ins for the Kubernetes API wrapper (``RecordingKube``, it records the status
patches and events it is asked for) and for kopf's daemon flag; everything else is the real
thing (Context, Metrics, Events).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment, DeploymentStatus
from skyfleet.api.instance import InstanceStatus
from skyfleet.handlers.clouds import Clouds
from skyfleet.handlers.context import Context
from skyfleet.handlers.deployments import wake_on_credential
from skyfleet.handlers.kube import Conflict
from skyfleet.handlers.loop import CONFLICT_DELAY, LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.metrics import Metrics
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.views import deployment_view
from skyfleet.settings import Settings

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEPLOYMENT = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Deployment",
    "metadata": {"name": "shop", "namespace": "team", "uid": "u-1", "generation": 3},
}
INSTANCE = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Instance",
    "metadata": {"name": "shop-web-0", "namespace": "team", "uid": "u-2", "generation": 1},
}


class RecordingKube:
    """A stand-in for handlers.kube.Kube: records status patches and events."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, str, str, dict[str, Any], str | None]] = []
        self.events: list[dict[str, Any]] = []

    async def patch_status(
        self, plural: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None = None
    ) -> None:
        self.patches.append((plural, namespace, name, dict(status), resource_version))

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.events.append(dict(body))


class Stopped:
    """A stand-in for kopf.DaemonStopped: false until set."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def set(self) -> None:
        self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        await self.event.wait()


def context() -> tuple[Context, RecordingKube]:
    kube = RecordingKube()
    settings = Settings(cluster_id="c1")
    ctx = Context(settings=settings, kube=kube, clouds=Clouds(kube, settings), metrics=Metrics(), cluster_id="c1")  # type: ignore[arg-type]
    return ctx, kube


def reasons(kube: RecordingKube) -> list[str]:
    return [e["reason"] for e in kube.events]


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_status_gets_observed_generation_and_kstatus_conditions_and_one_event_per_reason() -> None:
    ctx, kube = context()
    ready = set_condition([], "Ready", False, "ReplicasNotReady", "groups not ready: web", now=T0, generation=3)
    first = await write_status(ctx, DEPLOYMENT, None, DeploymentStatus(phase="Provisioning", conditions=ready))
    [(plural, namespace, name, patch, _)] = kube.patches
    assert (plural, namespace, name, patch["observedGeneration"]) == ("deployments", "team", "shop", 3)
    flags = {c["type"]: (c["status"], c["reason"]) for c in patch["conditions"]}
    assert flags["Reconciling"] == ("True", "ReplicasNotReady")
    assert flags["Stalled"] == ("False", "ReplicasNotReady")
    # The same status again: no write, no event.
    again = await write_status(ctx, DEPLOYMENT, first, DeploymentStatus(phase="Provisioning", conditions=ready))
    assert again == first
    assert len(kube.patches) == 1
    # Two passes racing on a status the watch has not brought back: still one event per reason.
    await write_status(ctx, DEPLOYMENT, None, DeploymentStatus(phase="Provisioning", conditions=ready))
    await settle()
    assert reasons(kube) == ["ReplicasNotReady"]
    assert kube.events[0]["type"] == "Warning"
    done = set_condition(ready, "Ready", True, "AllReplicasReady", "every VM is running", now=T0, generation=3)
    await write_status(ctx, DEPLOYMENT, first, DeploymentStatus(phase="Running", conditions=done))
    await settle()
    assert reasons(kube) == ["ReplicasNotReady", "AllReplicasReady"]
    assert kube.events[1]["type"] == "Normal"


async def test_an_instance_status_is_written_with_its_generation_and_no_ready_event() -> None:
    ctx, kube = context()
    ready = set_condition([], "Ready", True, "VMRunning", "", now=T0, generation=1)
    await write_status(ctx, INSTANCE, {}, InstanceStatus(phase="Running", conditions=ready), announce=False)
    await settle()
    assert kube.patches[0][3]["observedGeneration"] == 1
    assert kube.events == []


async def test_an_observer_keeps_the_generation_the_status_had() -> None:
    ctx, kube = context()
    status = DeploymentStatus(observed_generation=2, phase="Running")
    await write_status(ctx, DEPLOYMENT, {}, status, observes_spec=False, resource_version="41")
    assert (kube.patches[0][3]["observedGeneration"], kube.patches[0][4]) == (2, "41")


async def run_passes(ctx: Context, spec: LoopSpec, outcomes: list[Any], wake_between: bool = True) -> list[float]:
    """Run the loop over ``outcomes`` (a delay, or an exception to raise); return the delays it
    waited, measured by when each next pass started."""
    stopped = Stopped()
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def once() -> float | None:
        starts.append(loop.time())
        outcome = outcomes[len(starts) - 1]
        if len(starts) == len(outcomes):
            stopped.set()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    await asyncio.wait_for(
        run_loop(ctx, spec, body=DEPLOYMENT, stopped=stopped, logger=logging.getLogger("test"), once=once), 10
    )
    return [b - a for a, b in itertools.pairwise(starts)]


async def test_the_loop_retries_a_conflict_soon_and_a_failure_after_retry_with_one_event() -> None:
    ctx, kube = context()
    spec = LoopSpec("deployment", "team", "shop", period=5.0, retry=0.3, error_event="ReconcileError")
    waits = await run_passes(ctx, spec, [Conflict("changed"), RuntimeError("boom\nline two"), 0.1, None])
    await settle()
    # Each wait is far below the 5 s period: after a conflict CONFLICT_DELAY, after a failure
    # ``retry``, after a pass the delay it returned (with slack for a loaded machine).
    assert CONFLICT_DELAY * 0.9 <= waits[0] < 4.0
    assert 0.27 <= waits[1] < waits[0]
    assert 0.09 <= waits[2] < waits[0]
    assert reasons(kube) == ["ReconcileError"]
    assert kube.events[0]["message"] == "RuntimeError: boom line two"
    errors = ctx.metrics.registry.get_sample_value("skyfleet_reconcile_errors_total", {"controller": "deployment"})
    assert errors == 1.0


async def test_quiet_errors_only_skip_a_pass_and_a_wakeup_cuts_the_wait_short() -> None:
    ctx, kube = context()
    spec = LoopSpec("observe", "team", "cred", period=30.0, quiet=(LookupError,))

    async def wake_soon() -> None:
        await asyncio.sleep(0.2)
        ctx.wake("observe", "team", "cred")

    waker = asyncio.create_task(wake_soon())
    waits = await run_passes(ctx, spec, [KeyError("credential not ready"), None])
    await waker
    assert waits[0] < 1.0  # woken, not the 30 s period
    assert kube.events == []
    errors = ctx.metrics.registry.get_sample_value("skyfleet_reconcile_errors_total", {"controller": "observe"})
    assert errors in (None, 0.0)


def _dep(name: str, credential: str) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team", "uid": f"u-{name}", "generation": 1},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "web",
                        "imageRef": "ubuntu",
                        "size": {"cpu": 1, "memoryMiB": 1024},
                        "placement": {"targets": [{"credential": credential}]},
                    }
                ]
            },
        }
    )


def _credential(ready: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "CloudCredential",
        "metadata": {"name": "spare", "namespace": "team", "uid": "u-c", "generation": 1},
        "spec": {"provider": "ec2", "region": "us-east-1", "secretRef": {"name": "keys"}},
    }
    if ready is not None:
        condition = {
            "type": "Ready",
            "status": ready,
            "reason": "Verified",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        body["status"] = {"conditions": [condition]}
    return body


async def test_a_credential_turning_ready_wakes_the_deployments_placing_on_it_and_only_those() -> None:
    # A Deployment waiting for its credential must not wait for the resync period (a minute by
    # default) once the credential is verified; Deployments on other credentials stay asleep.
    ctx, _ = context()
    index = {"team": [deployment_view(_dep("shop", "spare")), deployment_view(_dep("blog", "other"))]}
    shop, blog = ctx.wakeup("deployment", "team", "shop"), ctx.wakeup("deployment", "team", "blog")

    async def event(body: dict[str, Any]) -> tuple[bool, bool]:
        shop.clear()
        blog.clear()
        await wake_on_credential(
            namespace="team", name="spare", body=body, memo=SimpleNamespace(ctx=ctx), deployments=index
        )
        return shop.is_set(), blog.is_set()

    assert await event(_credential(None)) == (True, False)  # a new credential: plan with it
    assert await event(_credential(None)) == (False, False)  # nothing placement reads changed
    assert await event(_credential("True")) == (True, False)  # verified: place now
    assert await event(_credential("True")) == (False, False)
    assert await event(_credential("False")) == (True, False)  # refused: fall back now


async def test_a_stopped_loop_leaves_no_wakeup_behind() -> None:
    # A Deployment deleted (its daemon stopped) must not leave its wake-up registered: a fleet
    # that creates and deletes Deployments would otherwise keep one per Deployment ever seen.
    ctx, _ = context()
    spec = LoopSpec("deployment", "team", "shop", period=5.0)
    ctx.announce_once("deployment", "team", "blog", "AllReplicasReady")
    ctx.announce_once("deployment", "team", "shop", "AllReplicasReady")
    await run_passes(ctx, spec, [None])
    assert ctx.wakeups == {}
    assert list(ctx.announced) == [("deployment", "team", "blog")]
    ctx.wake("deployment", "team", "shop")  # an Instance event after the deletion: harmless
