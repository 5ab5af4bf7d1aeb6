"""The ScalingPolicy CRD against a real kube-apiserver: strict about bad input, scalable through /scale."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.test_crds import changed, kubectl_apply, manifest

pytestmark = pytest.mark.e2e

SMALL = {"cpu": 1, "memoryMiB": 1024}
LARGE = {"cpu": 2, "memoryMiB": 4096}
TARGET_RULE = {"name": "load", "query": "sum(shop_load)", "target": {"averageValue": 10}}
CONSTRAINT_RULE = {
    "name": "latency",
    "query": "max(shop_latency)",
    "for": "2m",
    "constraint": {"above": 0.6, "action": "SizeUp"},
}
POLICY = manifest(
    "ScalingPolicy",
    "shop-web",
    {
        "target": {"deployment": "shop", "group": "web"},
        "minReplicas": 0,
        "maxReplicas": 10,
        "metrics": [TARGET_RULE, CONSTRAINT_RULE],
        "vertical": {"sizes": [SMALL, LARGE]},
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300, "maxStep": 2, "periodSeconds": 60}},
    },
)
NO_RULES = manifest("ScalingPolicy", "by-hand", {"target": {"deployment": "shop", "group": "web"}, "maxReplicas": 5})

# (case, manifest, text the API server's answer must contain: the field or the rule's message)
INVALID = [
    ("min above max", changed(POLICY, "spec.minReplicas", 11), "minReplicas must not exceed maxReplicas"),
    ("default min above max 0", changed(NO_RULES, "spec.maxReplicas", 0), "spec.maxReplicas"),
    ("negative replicas", changed(NO_RULES, "spec.replicas", -1), "spec.replicas"),
    ("replicas beyond the bound", changed(NO_RULES, "spec.maxReplicas", 10001), "spec.maxReplicas"),
    ("no target", changed(POLICY, "spec.target", None), "spec.target"),
    ("group not a DNS label", changed(POLICY, "spec.target.group", "Web_Tier"), "spec.target.group"),
    (
        "rule with target and constraint",
        changed(POLICY, "spec.metrics.0.constraint", {"above": 1, "action": "ScaleOut"}),
        "exactly one of target or constraint",
    ),
    ("rule with neither", changed(POLICY, "spec.metrics.0.target", None), "exactly one of target or constraint"),
    (
        "target with value and averageValue",
        changed(POLICY, "spec.metrics.0.target.value", 5),
        "exactly one of value or averageValue",
    ),
    ("zero target", changed(POLICY, "spec.metrics.0.target.averageValue", 0), "spec.metrics[0].target.averageValue"),
    ("tolerance of 100%", changed(POLICY, "spec.metrics.0.target.tolerance", 1), "spec.metrics[0].target.tolerance"),
    (
        "constraint above and below",
        changed(POLICY, "spec.metrics.1.constraint.below", 0.1),
        "exactly one of above or below",
    ),
    (
        "unknown action",
        changed(POLICY, "spec.metrics.1.constraint.action", "ScaleSideways"),
        "spec.metrics[1].constraint.action",
    ),
    ("step on a size action", changed(POLICY, "spec.metrics.1.constraint.step", 2), "step applies to ScaleOut"),
    ("size action without a ladder", changed(POLICY, "spec.vertical", None), "SizeUp and SizeDown need vertical"),
    ("ladder of one rung", changed(POLICY, "spec.vertical.sizes", [SMALL]), "spec.vertical.sizes"),
    ("rung without cpu and memory", changed(POLICY, "spec.vertical.sizes.1", {"diskGiB": 10}), "give cpu and memory"),
    ("for in words", changed(POLICY, "spec.metrics.1.for", "2 minutes"), "spec.metrics[1].for"),
    ("for without a unit", changed(POLICY, "spec.metrics.1.for", "120"), "spec.metrics[1].for"),
    ("for beyond an hour", changed(POLICY, "spec.metrics.1.for", "2h"), "must be at most 1h"),
    ("duplicate rule names", changed(POLICY, "spec.metrics.1.name", "load"), "spec.metrics[1]"),
    ("empty query", changed(POLICY, "spec.metrics.0.query", ""), "spec.metrics[0].query"),
    (
        "window beyond an hour",
        changed(POLICY, "spec.behavior.scaleDown.stabilizationWindowSeconds", 7200),
        "stabilizationWindowSeconds",
    ),
    ("period without a step", changed(POLICY, "spec.behavior.scaleDown.maxStep", None), "periodSeconds needs maxStep"),
    ("prometheus URL not http", changed(POLICY, "spec.prometheus", {"url": "file:///etc"}), "spec.prometheus.url"),
    ("typo in a field name", changed(POLICY, "spec.maxReplica", 3), "spec.maxReplica"),
]


@pytest.mark.parametrize(("case", "doc", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_policy_is_rejected_naming_the_field(
    control_plane: Any, installed_crds: list[str], namespace: str, case: str, doc: dict[str, Any], field: str
) -> None:
    result = kubectl_apply(control_plane, namespace, doc, check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert field in result.stderr, result.stderr


def test_valid_policies_are_accepted_as_written(control_plane: Any, installed_crds: list[str], namespace: str) -> None:
    with_everything = changed(
        changed(
            POLICY,
            "spec.prometheus",
            {"url": "https://prometheus.monitoring:9090/prom", "bearerTokenSecretRef": {"name": "prom-token"}},
        ),
        "spec.metrics.1.for",
        "1h",
    )
    for doc in (POLICY, NO_RULES, with_everything):
        kubectl_apply(control_plane, namespace, doc)
    stored = json.loads(control_plane.kubectl("get", "sfsp", "shop-web", "-n", namespace, "-o", "json").stdout)
    # No defaults are stored: the object is what Git has.
    assert stored["spec"] == with_everything["spec"]


def test_target_is_immutable(control_plane: Any, installed_crds: list[str], namespace: str) -> None:
    kubectl_apply(control_plane, namespace, NO_RULES)
    result = kubectl_apply(control_plane, namespace, changed(NO_RULES, "spec.target.group", "db"), check=False)
    assert result.returncode != 0
    assert "immutable" in result.stderr


def test_kubectl_scale_moves_spec_replicas_through_the_scale_subresource(
    control_plane: Any, installed_crds: list[str], namespace: str
) -> None:
    kubectl_apply(control_plane, namespace, NO_RULES)
    # What the operator writes: the group's Instances now, and the selector that finds them.
    status = {
        "status": {"replicas": 2, "desiredReplicas": 2, "selector": "skyfleet.io/deployment=shop,skyfleet.io/group=web"}
    }
    control_plane.kubectl(
        "patch", "sfsp", "by-hand", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    control_plane.kubectl("scale", "scalingpolicies.skyfleet.io/by-hand", "-n", namespace, "--replicas=4")
    policy = json.loads(control_plane.kubectl("get", "sfsp", "by-hand", "-n", namespace, "-o", "json").stdout)
    assert policy["spec"]["replicas"] == 4
    scale = json.loads(
        control_plane.kubectl(
            "get", "--raw", f"/apis/skyfleet.io/v1alpha1/namespaces/{namespace}/scalingpolicies/by-hand/scale"
        ).stdout
    )
    # What KEDA and an HPA read: spec from the policy, status and a non-empty selector from its status.
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 4
    assert scale["status"] == {"replicas": 2, "selector": "skyfleet.io/deployment=shop,skyfleet.io/group=web"}
    # Above maxReplicas is accepted at /scale (an autoscaler may ask); the policy clamps what it decides.
    control_plane.kubectl("scale", "sfsp/by-hand", "-n", namespace, "--replicas=50")
    assert (
        control_plane.kubectl("get", "sfsp", "by-hand", "-n", namespace, "-o", "jsonpath={.spec.replicas}").stdout
        == "50"
    )


def test_printer_columns_show_what_the_policy_decided(
    control_plane: Any, installed_crds: list[str], namespace: str
) -> None:
    kubectl_apply(control_plane, namespace, POLICY)
    ready = {"type": "Ready", "status": "True", "reason": "Evaluated", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    status = {
        "status": {
            "replicas": 3,
            "desiredReplicas": 4,
            "selector": "a=b",
            "rung": 1,
            "size": "2cpu/4096MiB",
            "conditions": [ready],
        }
    }
    control_plane.kubectl(
        "patch", "sfsp", "shop-web", "-n", namespace, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    table = control_plane.kubectl("get", "scalingpolicies.skyfleet.io", "-n", namespace).stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "DEPLOYMENT",
        "GROUP",
        "MIN",
        "MAX",
        "DESIRED",
        "CURRENT",
        "SIZE",
        "READY",
        "AGE",
    ]
    assert table[1].split()[:9] == ["shop-web", "shop", "web", "0", "10", "4", "3", "2cpu/4096MiB", "True"]
    explained = control_plane.kubectl("explain", "scalingpolicies.skyfleet.io.spec.metrics.constraint.action").stdout
    assert "move one rung" in explained
