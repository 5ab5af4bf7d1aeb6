"""driftPolicy is the Instance's own: it decides what a lost or stopped VM brings, and a change
of the group's policy reaches existing Instances in place, replacing no VM."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment
from skyfleet.api.instance import FIXED_FIELDS, FIXED_OPTIONAL_FIELDS, Instance, InstanceSpec
from skyfleet.reconcile.deployment import Plan, plan_deployment
from skyfleet.reconcile.images import EffectiveImage
from skyfleet.reconcile.userdata import template_hash
from skyfleet.reconcile.views import CredentialView, InstanceView, instance_view

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREDS = {"a": CredentialView("a", "ec2", "eu-central-1", ready=True)}
IMAGES: dict[str, EffectiveImage | str] = {"ubuntu": EffectiveImage("ubuntu", (), None, "ubuntu")}


def deployment(policy: str | None, replicas: int = 1, **spec: Any) -> Deployment:
    group: dict[str, Any] = {
        "name": "web",
        "replicas": replicas,
        "imageRef": "ubuntu",
        "size": {"cpu": 1, "memoryMiB": 1024},
        "placement": {"targets": [{"credential": "a"}]},
    }
    if policy is not None:
        group["driftPolicy"] = policy
    return Deployment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"nodeGroups": [group], **spec},
        }
    )


def instance(dep: Deployment, ordinal: int, policy: str | None, phase: str = "Running") -> InstanceView:
    return InstanceView(
        name=f"shop-web-{ordinal}",
        group="web",
        credential="a",
        region="eu-central-1",
        template_hash=template_hash(dep.spec.node_groups[0]),
        phase=phase,
        ready=phase == "Running",
        created=T0 + timedelta(minutes=ordinal),
        address="203.0.113.1" if phase == "Running" else None,
        drift_policy=policy,
    )


def plan(dep: Deployment, instances: list[InstanceView]) -> Plan:
    return plan_deployment(dep, instances, CREDS, IMAGES, now=T0 + timedelta(hours=1))


def outcome(p: Plan) -> tuple[list[str], list[str], dict[str, str]]:
    return p.deletes, [c.name for c in p.creates], p.drift_policies


REPLACED = (["shop-web-0"], ["shop-web-1"], {})
KEPT = ([], [], {})


@pytest.mark.parametrize(
    ("group_policy", "instance_policy", "phase", "expected"),
    [
        # The Instance's policy decides, and it matches the group's: act on it.
        (None, None, "Lost", REPLACED),
        (None, "Recreate", "Stopped", REPLACED),  # unset is Recreate: nothing to update
        ("Recreate", None, "Lost", REPLACED),
        ("Report", "Report", "Lost", KEPT),
        ("Report", "Report", "Stopped", KEPT),
        # The group's policy changed: the Instance gets it in place, and is decided once it
        # carries it (the next pass), never on a policy that is being replaced.
        ("Report", None, "Lost", ([], [], {"shop-web-0": "Report"})),
        ("Report", "Recreate", "Stopped", ([], [], {"shop-web-0": "Report"})),
        ("Recreate", "Report", "Lost", ([], [], {"shop-web-0": "Recreate"})),
        (None, "Report", "Stopped", ([], [], {"shop-web-0": "Recreate"})),
        # A running VM: a policy change is an in-place update, never a rollout.
        ("Report", None, "Running", ([], [], {"shop-web-0": "Report"})),
        ("Report", "Report", "Running", KEPT),
    ],
)
def test_lost_vm_follows_the_instances_own_policy(
    group_policy: str | None, instance_policy: str | None, phase: str, expected: Any
) -> None:
    dep = deployment(group_policy)
    assert outcome(plan(dep, [instance(dep, 0, instance_policy, phase)])) == expected


def test_after_the_update_lands_the_new_policy_decides() -> None:
    dep = deployment("Recreate")
    before = plan(dep, [instance(dep, 0, "Report", "Lost")])
    assert outcome(before) == ([], [], {"shop-web-0": "Recreate"})
    after = plan(dep, [instance(dep, 0, before.drift_policies["shop-web-0"], "Lost")])
    assert outcome(after) == REPLACED


def test_a_policy_change_updates_every_instance_in_place_and_says_so_once() -> None:
    dep = deployment("Report", replicas=3)
    p = plan(dep, [instance(dep, i, None) for i in range(3)])
    assert outcome(p) == ([], [], {f"shop-web-{i}": "Report" for i in range(3)})
    assert [(e.reason, e.names) for e in p.events] == [
        ("DriftPolicyUpdated", ("shop-web-0", "shop-web-1", "shop-web-2"))
    ]
    # No rollout: every Instance stays current.
    assert p.status.groups[0].updated_replicas == 3


def test_instances_being_deleted_or_replaced_are_not_updated() -> None:
    dep = deployment("Report", replicas=1)
    gone = dataclasses.replace(instance(dep, 1, None), deleting=True)
    failed = dataclasses.replace(instance(dep, 2, None, "Failed"), reason="InvalidRequest")
    p = plan(dep, [instance(dep, 0, "Report"), gone, failed])
    assert p.drift_policies == {}
    assert "shop-web-2" in p.deletes


def test_a_paused_deployment_updates_nothing() -> None:
    dep = deployment("Report", paused=True)
    p = plan(dep, [instance(dep, 0, None, "Lost")])
    assert outcome(p) == KEPT
    assert p.events == []


@pytest.mark.parametrize("policy", [None, "Report", "Recreate"])
def test_new_instances_carry_the_groups_policy(policy: str | None) -> None:
    p = plan(deployment(policy, replicas=2), [])
    assert [c.spec.drift_policy for c in p.creates] == [policy, policy]


@pytest.mark.parametrize("policy", [None, "Report"])
def test_the_view_reads_the_instances_policy(policy: str | None) -> None:
    obj = Instance.model_validate(
        {
            "metadata": {"name": "shop-web-0", "namespace": "ns"},
            "spec": {
                "deployment": "shop",
                "group": "web",
                "credential": "a",
                "imageRef": "ubuntu",
                "templateHash": "h",
                **({"driftPolicy": policy} if policy else {}),
            },
        }
    )
    assert instance_view(obj).drift_policy == policy


def test_the_immutability_rule_covers_every_spec_field_but_drift_policy() -> None:
    fields = {f.alias or name: f for name, f in InstanceSpec.model_fields.items()}
    assert set(FIXED_FIELDS) == {a for a, f in fields.items() if f.is_required()}
    assert set(FIXED_OPTIONAL_FIELDS) == {a for a, f in fields.items() if not f.is_required()} - {"driftPolicy"}
