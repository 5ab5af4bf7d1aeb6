"""Argo CD health checks for the four kinds, run under Lua 5.1 as Argo CD's gopher-lua runs them.

Argo CD executes each check with the object bound to the global `obj` and only the base, table,
string and math libraries loaded; the same sandbox is rebuilt here with lupa's Lua 5.1 runtime.
Statuses are built from Skyfleet's own status models, so a renamed field breaks these tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from skyfleet.api.cloudcredential import CloudCredentialStatus
from skyfleet.api.common import Condition, ConditionStatus
from skyfleet.api.deployment import DeploymentStatus
from skyfleet.api.image import BakeTarget, ImageStatus
from skyfleet.api.instance import InstanceStatus
from skyfleet.api.scalingpolicy import ScalingPolicyStatus
from skyfleet.reconcile.bake import bake_conditions
from tests.argocd import health, lua51, script
from tests.chart.helpers import Render, one

pytestmark = pytest.mark.chart

KINDS = ("CloudCredential", "Deployment", "Image", "Instance", "ScalingPolicy")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cond(type_: str, status: bool, reason: str, message: str = "", generation: int | None = None) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.TRUE if status else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=T0,
    )


def make(kind: str, status: Any | None, *, generation: int = 2, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "shop", "generation": generation},
        "spec": spec or {},
    }
    if status is not None:
        obj["status"] = status.to_api()
    return obj


# (case id, kind, object, expected Argo CD status, a word the message must contain)
CASES: list[tuple[str, str, dict[str, Any], str, str]] = []


def case(id_: str, kind: str, obj: dict[str, Any], expected: str, says: str) -> None:
    CASES.append((id_, kind, obj, expected, says))


# --- every kind: no status yet, or a status for an older spec -> Progressing
for _kind, _status in (
    ("Deployment", DeploymentStatus),
    ("Instance", InstanceStatus),
    ("Image", ImageStatus),
    ("CloudCredential", CloudCredentialStatus),
    ("ScalingPolicy", ScalingPolicyStatus),
):
    case(f"{_kind}-no-status", _kind, make(_kind, None), "Progressing", "status")
    case(
        f"{_kind}-generation-lags",
        _kind,
        make(
            _kind,
            _status(observed_generation=1, conditions=[cond("Ready", True, "Fine", "all good", 1)]),
            generation=2,
        ),
        "Progressing",
        "generation 2",
    )
    case(
        f"{_kind}-no-observed-generation",
        _kind,
        make(_kind, _status(conditions=[cond("Ready", True, "Fine", "all good")]), generation=1),
        "Progressing",
        "generation 1",
    )

# --- Deployment
READY = cond("Ready", True, "AllReplicasReady", "every VM is running", 2)
NOT_READY = cond("Ready", False, "ReplicasNotReady", "groups not ready: web", 2)
CONVERGED = cond("Progressing", False, "Converged", "nothing left to do", 2)
NOT_DEGRADED = cond("Degraded", False, "AsExpected", "", 2)
case(
    "Deployment-ready",
    "Deployment",
    make("Deployment", DeploymentStatus(observed_generation=2, phase="Running", conditions=[READY, CONVERGED])),
    "Healthy",
    "running",
)
case(
    "Deployment-scaling",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Provisioning",
            conditions=[
                NOT_READY,
                cond("Progressing", True, "Reconciling", "VMs are being created, replaced or removed", 2),
                NOT_DEGRADED,
            ],
        ),
    ),
    "Progressing",
    "being created",
)
case(
    "Deployment-rolling-update-while-ready",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Provisioning",
            conditions=[NOT_READY, cond("Progressing", True, "RollingUpdate", "replacing web-0", 2), NOT_DEGRADED],
        ),
    ),
    "Progressing",
    "replacing",
)
case(
    "Deployment-degraded",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Degraded",
            conditions=[
                cond("Ready", False, "ProvisioningFailuresExceeded", "group web: 5 VM creations failed", 2),
                cond("Progressing", False, "ProvisioningFailuresExceeded", "group web: 5 VM creations failed", 2),
                cond("Degraded", True, "ProvisioningFailuresExceeded", "group web: 5 VM creations failed", 2),
            ],
        ),
    ),
    "Degraded",
    "5 VM creations failed",
)
case(
    "Deployment-degraded-even-if-some-ready",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Degraded",
            conditions=[READY, cond("Degraded", True, "InvalidDependencies", "dependsOn has a cycle", 2)],
        ),
    ),
    "Degraded",
    "cycle",
)
case(
    "Deployment-degraded-phase-only",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2, phase="Degraded", conditions=[NOT_READY], message="image ubuntu not found"
        ),
    ),
    "Degraded",
    "not found",
)
case(
    "Deployment-paused",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Paused",
            conditions=[NOT_READY, cond("Progressing", False, "Paused", "spec.paused is set", 2), NOT_DEGRADED],
        ),
        spec={"paused": True},
    ),
    "Suspended",
    "paused",
)
case(
    "Deployment-paused-but-unobserved",
    "Deployment",
    make("Deployment", DeploymentStatus(observed_generation=1, conditions=[READY]), spec={"paused": True}),
    "Progressing",
    "generation 2",
)
case(
    "Deployment-waiting-for-dependency",
    "Deployment",
    make(
        "Deployment",
        DeploymentStatus(
            observed_generation=2,
            phase="Pending",
            conditions=[
                cond("Ready", False, "WaitingForDependencies", "group web waits for db", 2),
                CONVERGED,
                NOT_DEGRADED,
            ],
        ),
    ),
    "Progressing",
    "waits for db",
)

# --- Instance (spec is immutable: generation stays 1)
for _phase, _ready, _reason, _message, _expected, _says in (
    ("Running", True, "VMRunning", "the VM is running", "Healthy", "running"),
    ("Pending", False, "VMPending", "the VM is starting", "Progressing", "starting"),
    ("Creating", False, "Creating", "", "Progressing", "Creating"),
    ("Failed", False, "ImageNotFound", "ami-123 does not exist", "Degraded", "ami-123"),
    ("Lost", False, "VMGone", "the VM was terminated outside Skyfleet", "Degraded", "terminated outside"),
    ("Stopped", False, "VMStopped", "the VM was stopped outside Skyfleet", "Degraded", "stopped outside"),
):
    case(
        f"Instance-{_phase.lower()}",
        "Instance",
        make(
            "Instance",
            InstanceStatus(
                observed_generation=1,
                phase=_phase,
                conditions=[cond("Ready", _ready, _reason, _message, 1)],
                message=None if _ready else (_message or None),
            ),
            generation=1,
        ),
        _expected,
        _says,
    )

# --- Image
case(
    "Image-resolved",
    "Image",
    make("Image", ImageStatus(observed_generation=2, phase="Resolved", conditions=[cond("Ready", True, "Resolved")])),
    "Healthy",
    "Resolved",
)
case(
    "Image-unresolved",
    "Image",
    make(
        "Image",
        ImageStatus(
            observed_generation=2,
            phase="Unresolved",
            conditions=[cond("Ready", False, "NoMatchingImage", "no image matches ubuntu-24.04-* on aws-frankfurt")],
            message="no image matches ubuntu-24.04-* on aws-frankfurt",
        ),
    ),
    "Degraded",
    "no image matches",
)
case(
    "Image-pending",
    "Image",
    make("Image", ImageStatus(observed_generation=2, phase="Pending", conditions=[cond("Ready", False, "Resolving")])),
    "Progressing",
    "Resolving",
)


# --- Image with spec.build: the conditions the bake loop writes (reconcile/bake.py)
def _baked(*targets: BakeTarget) -> dict[str, Any]:
    summary = bake_conditions([], list(targets), now=T0, generation=2)
    return make(
        "Image",
        ImageStatus(observed_generation=2, phase=summary.phase, conditions=summary.conditions, bakes=list(targets)),
    )


def _target(phase: str, reason: str | None = None, message: str | None = None) -> BakeTarget:
    return BakeTarget.model_validate(
        {
            "credential": "aws",
            "region": "eu-central-1",
            "phase": phase,
            "bakeKey": "k1",
            "reason": reason,
            "message": message,
        }
    )


case("Image-baked", "Image", _baked(_target("Available")), "Healthy", "baked on 1")
case("Image-baking", "Image", _baked(_target("Provisioning")), "Progressing", "baking on aws/eu-central-1")
case(
    "Image-bake-timeout",
    "Image",
    _baked(_target("Failed", "BuildTimeout", "the builder did not power off within 1800 s")),
    "Degraded",
    "BuildTimeout",
)

# --- CloudCredential: healthy once verified
for _reason, _message, _expected in (
    ("InvalidCredentials", "AuthFailure: the access key is not valid", "Degraded"),
    ("SecretNotFound", "Secret aws-keys not found", "Degraded"),
    ("UnsupportedProvider", "provider nimbus is not supported", "Degraded"),
    ("VerificationFailed", "", "Degraded"),
    ("Unreachable", "connection refused", "Progressing"),
):
    case(
        f"CloudCredential-{_reason}",
        "CloudCredential",
        make(
            "CloudCredential",
            CloudCredentialStatus(
                observed_generation=2, phase="Failed", conditions=[cond("Ready", False, _reason, _message, 2)]
            ),
        ),
        _expected,
        _message or _reason,
    )
case(
    "CloudCredential-verified",
    "CloudCredential",
    make(
        "CloudCredential",
        CloudCredentialStatus(
            observed_generation=2,
            phase="Verified",
            conditions=[cond("Ready", True, "Verified", "", 2)],
            instances=3,
        ),
    ),
    "Healthy",
    "Verified",
)
case(
    "CloudCredential-verifying",
    "CloudCredential",
    make(
        "CloudCredential",
        CloudCredentialStatus(observed_generation=2, phase="Pending", conditions=[]),
    ),
    "Progressing",
    "Verifying",
)

# --- ScalingPolicy: healthy when its last evaluation succeeded
for _ok, _reason, _message, _expected, _says in (
    (True, "AboveTarget", "requests is 250 for 2 replicas, target 50 each: 5 replicas", "Healthy", "5 replicas"),
    (True, "FollowingReplicas", "spec.replicas is 3", "Healthy", "spec.replicas"),
    (False, "MetricUnavailable", "no change without data (requests: cannot connect)", "Degraded", "cannot connect"),
    (False, "QueryInvalid", "the query returned 2 series; a rule needs one", "Degraded", "QueryInvalid"),
    (False, "Conflict", "group web of Deployment shop is governed by ScalingPolicy a", "Degraded", "Conflict"),
    (False, "TargetNotFound", "Deployment shop does not exist", "Degraded", "does not exist"),
):
    case(
        f"ScalingPolicy-{_reason}",
        "ScalingPolicy",
        make(
            "ScalingPolicy",
            ScalingPolicyStatus(observed_generation=2, conditions=[cond("Ready", _ok, _reason, _message, 2)]),
        ),
        _expected,
        _says,
    )
case(
    "ScalingPolicy-not-evaluated-yet",
    "ScalingPolicy",
    make("ScalingPolicy", ScalingPolicyStatus(observed_generation=2, selector="skyfleet.io/group=web")),
    "Progressing",
    "first evaluation",
)


@pytest.mark.parametrize(("kind", "obj", "expected", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_health(kind: str, obj: dict[str, Any], expected: str, says: str) -> None:
    status, message = health(kind, obj)
    assert status == expected, message
    assert says.lower() in message.lower()


def test_every_kind_and_every_argo_status_is_covered() -> None:
    seen = {(c[1], c[3]) for c in CASES}
    for kind in KINDS:
        assert {"Healthy", "Progressing", "Degraded"} <= {s for k, s in seen if k == kind}, kind
    assert ("Deployment", "Suspended") in seen


def test_scripts_are_lua_5_1() -> None:
    """Compiles under 5.1: a 5.2+ construct (goto, //, bit operators) is a syntax error here."""
    runtime = lua51.LuaRuntime(register_eval=False, unpack_returned_tuples=True)
    compiles = runtime.eval("function(s) local f, err = loadstring(s) return f ~= nil, tostring(err) end")
    for kind in KINDS:
        ok, err = compiles(script(kind))
        assert ok, f"{kind}: {err}"
    # And the check really is strict: a 5.3 construct does not load.
    ok, err = compiles("local x = 7 // 2 return x")
    assert not ok, err


def test_chart_ships_exactly_these_scripts(render: Render) -> None:
    cm = one(render({"argocd": {"healthChecks": True}}), "ConfigMap", "sf-skyfleet-argocd-health")
    for kind in KINDS:
        shipped = cm["data"][f"resource.customizations.health.skyfleet.io_{kind}"]
        healthy = make(
            kind,
            {
                "Deployment": DeploymentStatus,
                "Instance": InstanceStatus,
                "Image": ImageStatus,
                "CloudCredential": CloudCredentialStatus,
                "ScalingPolicy": ScalingPolicyStatus,
            }[kind](observed_generation=2, conditions=[cond("Ready", True, "Fine", "fine", 2)]),
        )
        assert health(kind, healthy, source=shipped) == ("Healthy", "fine")


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("RUNNING", "Healthy"),
        ("PENDING", "Progressing"),
        ("UNKNOWN", "Progressing"),
        ("STOPPED", "Degraded"),
        ("TERMINATED", "Degraded"),
        (None, "Degraded"),
    ],
)
def test_instance_statuses_the_operator_writes(state: str | None, expected: str) -> None:
    """Statuses made by the operator's own observation logic, not written by hand."""
    from skyfleet.connectors import CloudNode, NodeState
    from skyfleet.reconcile.instances import observed_status

    node = None if state is None else CloudNode(provider_id="i-1", name="shop-web-0", state=NodeState[state])
    status = observed_status(None, node, provider="ec2", now=T0, generation=1)
    assert health("Instance", make("Instance", status, generation=1))[0] == expected
