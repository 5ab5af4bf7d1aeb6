"""Every kind's status reads right in kstatus (Flux, ``helm --wait`` with kstatus, cli-utils):
Current when Ready, InProgress while Skyfleet works on it, Failed when a person must act.

The rules are kstatus's own, ported in tests/kstatus.py; the first table holds the port to
them, the second runs statuses as the one status writer shapes them (``stalled_by`` and
``with_progress``, what handlers/status.py applies to every write) through those rules.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from skyfleet.api.common import Condition, ConditionStatus
from skyfleet.reconcile.conditions import set_condition, stalled_by, with_progress
from tests.kstatus import CURRENT, FAILED, IN_PROGRESS, TERMINATING, compute

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def obj(status: dict[str, Any] | None, *, generation: int = 2, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "shop", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "skyfleet.io/v1alpha1", "kind": "Deployment", "metadata": meta, "status": status or {}}


def c(type_: str, status: str, reason: str = "Some", message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("o", "expected"),
    [
        pytest.param(obj(None), CURRENT, id="no-status-is-current"),
        pytest.param(obj({"observedGeneration": 2}), CURRENT, id="observed"),
        pytest.param(obj({"observedGeneration": 1}), IN_PROGRESS, id="generation-not-observed"),
        pytest.param(obj({"conditions": [c("Ready", "False")]}), CURRENT, id="ready-is-not-read"),
        pytest.param(obj({"observedGeneration": 2, "conditions": [c("Reconciling", "True")]}), IN_PROGRESS, id="rec"),
        pytest.param(obj({"observedGeneration": 2, "conditions": [c("Stalled", "True")]}), FAILED, id="stalled"),
        pytest.param(obj({"conditions": [c("Reconciling", "False"), c("Stalled", "False")]}), CURRENT, id="both-false"),
        pytest.param(
            obj({"conditions": [c("Stalled", "True"), c("Reconciling", "True")]}), FAILED, id="first-in-list-wins"
        ),
        pytest.param(obj({"observedGeneration": 1, "conditions": [c("Stalled", "True")]}), IN_PROGRESS, id="gen-first"),
        pytest.param(obj({"conditions": [c("Stalled", "True")]}, deleting=True), TERMINATING, id="deleting"),
    ],
)
def test_the_port_follows_kstatus_rules(o: dict[str, Any], expected: str) -> None:
    assert compute(o)[0] == expected


def ready(status: bool, reason: str, message: str = "m") -> list[Condition]:
    return set_condition([], "Ready", status, reason, message, now=T0, generation=2)


DEGRADED = [
    *ready(True, "AllReplicasReady"),
    Condition(
        type="Degraded",
        status=ConditionStatus.TRUE,
        reason="InvalidDependencies",
        message="dependsOn has a cycle",
        last_transition_time=T0,
    ),
]

# (kind, phase, conditions, kstatus status, what a person reads)
CASES = [
    ("Deployment", "Running", ready(True, "AllReplicasReady"), CURRENT, ""),
    ("Deployment", "Provisioning", ready(False, "ReplicasNotReady", "groups not ready: web"), IN_PROGRESS, ""),
    ("Deployment", "Degraded", ready(False, "ProvisioningFailuresExceeded", "5 failed"), FAILED, "5 failed"),
    ("Deployment", "Running", DEGRADED, FAILED, "cycle"),
    ("Deployment", "Deleting", [], IN_PROGRESS, ""),
    ("Instance", "Running", ready(True, "VMRunning"), CURRENT, ""),
    ("Instance", "Creating", ready(False, "Creating", "creating the VM"), IN_PROGRESS, ""),
    ("Instance", "Pending", ready(False, "CredentialNotReady", "keys"), IN_PROGRESS, ""),
    ("Instance", "Failed", ready(False, "ImageNotFound", "no such image"), FAILED, "no such image"),
    ("Instance", "Lost", ready(False, "VMLost", "gone"), FAILED, "gone"),
    ("Image", "Resolved", ready(True, "Resolved"), CURRENT, ""),
    ("Image", "Unresolved", ready(False, "NoMatch", "no entry"), FAILED, "no entry"),
    ("CloudCredential", "Verified", ready(True, "Verified"), CURRENT, ""),
    ("CloudCredential", "Failed", ready(False, "Unreachable", "timed out"), IN_PROGRESS, ""),
    ("CloudCredential", "Failed", ready(False, "InvalidCredentials", "rejected"), FAILED, "rejected"),
    ("CloudCredential", "Failed", ready(False, "SecretNotFound", "no Secret"), FAILED, "no Secret"),
    ("ScalingPolicy", None, ready(True, "Evaluated"), CURRENT, ""),
    ("ScalingPolicy", None, ready(False, "MetricUnavailable", "no answer"), IN_PROGRESS, ""),
    ("ScalingPolicy", None, ready(False, "Conflict", "governed by web-2"), FAILED, "governed by web-2"),
    ("ScalingPolicy", None, ready(False, "QueryInvalid", "2 series"), FAILED, "2 series"),
]


@pytest.mark.parametrize(("kind", "phase", "conditions", "expected", "says"), CASES)
def test_statuses_as_written_read_right_in_kstatus(
    kind: str, phase: str | None, conditions: list[Condition], expected: str, says: str
) -> None:
    written = with_progress(conditions, stalled=stalled_by(kind, phase, conditions), now=T0, generation=2)
    status = {"observedGeneration": 2, "phase": phase, "conditions": [x.to_api() for x in written]}
    got, message = compute({**obj(status), "kind": kind})
    assert got == expected
    assert says in message
    flags = {x.type: x.status for x in written if x.type in ("Reconciling", "Stalled")}
    assert list(flags.values()).count(ConditionStatus.TRUE) <= 1  # never both


def test_a_transition_keeps_its_time_and_a_steady_state_writes_nothing_new() -> None:
    later = datetime(2026, 1, 2, tzinfo=UTC)
    first = with_progress(ready(False, "Creating"), stalled=None, now=T0, generation=1)
    again = with_progress(first, stalled=None, now=later, generation=1)
    assert again == first
    done = with_progress(
        set_condition(again, "Ready", True, "VMRunning", "", now=later), stalled=None, now=later, generation=1
    )
    reconciling = next(x for x in done if x.type == "Reconciling")
    assert (reconciling.status, reconciling.last_transition_time) == (ConditionStatus.FALSE, later)
