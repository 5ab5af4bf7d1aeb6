"""The hostile-manifest generator itself (skyfleet.testing.hostile): its valid bases are valid, a
mutation stays in the manifest it was drawn for, and the reasons it expects of a ScalingPolicy
follow from the policy's spec. A generator that is wrong here makes the e2e and bench runs report
defects of its own (or hide the operator's)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from skyfleet.api.scalingpolicy import ScalingPolicy
from skyfleet.testing.hostile import BASES, Context, Manifest, expected_reasons, generate

pytestmark = pytest.mark.unit

CTX = Context(endpoint="http://127.0.0.1:5000")


@settings(max_examples=200, database=None, suppress_health_check=list(HealthCheck), deadline=None)
@given(BASES["ScalingPolicy"](CTX))
def test_policy_base_is_a_valid_policy_the_schema_rules_admit(body: dict[str, Any]) -> None:
    doc = {"apiVersion": "skyfleet.io/v1alpha1", "metadata": {"name": "p", "namespace": "n"}, **body}
    spec = ScalingPolicy.model_validate(doc).spec
    # The CRD's CEL rules, which the model alone does not check.
    assert spec.effective_min_replicas <= spec.max_replicas or spec.min_replicas is None
    for rule in spec.metrics or []:
        assert (rule.target is None) != (rule.constraint is None)
        if rule.constraint is not None and rule.constraint.action in ("SizeUp", "SizeDown"):
            assert spec.vertical is not None
    for direction in (spec.behavior.scale_up, spec.behavior.scale_down) if spec.behavior else ():
        assert direction is None or direction.period_seconds is None or direction.max_step is not None


def test_a_mutation_stays_in_the_manifest_it_was_drawn_for() -> None:
    # Regression: size ladders were shared between draws, so one policy's unknown field showed up in
    # every later policy, which the API server then refused for a field they never named.
    manifests = generate(500, 13, CTX)
    for m in manifests:
        if "surpriseField" in json.dumps(m.doc):
            assert any("surpriseField" in step for step in m.mutations), (m.name, m.mutations)
    again = generate(500, 13, CTX)
    assert [m.doc for m in manifests] == [m.doc for m in again]


def policy(**spec: Any) -> Manifest:
    return Manifest("ScalingPolicy", {"metadata": {"name": "p"}, "spec": {"maxReplicas": 2, **spec}})


RULES = [{"name": "q", "query": "sum(queue)", "constraint": {"above": 1.0, "action": "ScaleOut"}}]


@pytest.mark.parametrize(
    ("m", "reasons"),
    [
        (policy(target={"deployment": "does-not-exist", "group": "app"}), {"TargetNotFound"}),
        (policy(target={"deployment": CTX.foreign, "group": "app"}, metrics=RULES), {"TargetNotFound"}),
        (policy(target={"deployment": CTX.target, "group": "nogroup"}), {"TargetNotFound"}),
        (
            policy(target={"deployment": CTX.target, "group": "app"}, metrics=RULES),
            {"PrometheusNotConfigured", "Conflict"},
        ),
        (
            policy(
                target={"deployment": CTX.target, "group": "app"},
                metrics=RULES,
                prometheus={"url": "http://169.254.169.254/"},
            ),
            {"EndpointNotAllowed", "Conflict"},
        ),
        # Whatever the spec does not decide alone is left open: any CamelCase reason.
        (policy(target={"deployment": CTX.target, "group": "app"}), None),
        (
            policy(
                target={"deployment": CTX.target, "group": "app"},
                metrics=RULES,
                prometheus={"url": "http://127.0.0.1:9/"},
            ),
            None,
        ),
        (policy(target="not an object"), None),
    ],
)
def test_expected_reasons_follow_from_the_policy_spec(m: Manifest, reasons: set[str] | None) -> None:
    assert expected_reasons(m, CTX) == (frozenset(reasons) if reasons is not None else None)
