"""Resolve once: the planner records the native image id in each new Instance, and an Image
that now resolves to another id rolls the group instead of booting replacements from it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.api.instance import Instance
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.deployment import Plan, plan_deployment
from skyfleet.reconcile.images import EffectiveImage, effective_image
from skyfleet.reconcile.userdata import template_hash
from skyfleet.reconcile.views import CredentialView, InstanceView, instance_view

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREDS = {
    "a": CredentialView("a", "ec2", "eu-central-1", ready=True),
    "b": CredentialView("b", "ec2", "us-east-1", ready=True),
}


def image(*resolved: tuple[str, str, str], generation: int = 1, observed: int | None = 1) -> EffectiveImage:
    """The Image "ubuntu" (a name lookup) with what its loop resolved: (credential, region, id)."""
    obj = Image.model_validate(
        {
            "metadata": {"name": "ubuntu", "namespace": "ns", "generation": generation},
            "spec": {"clouds": [{"provider": "ec2", "lookup": {"namePattern": "ubuntu-*", "owner": "099720109477"}}]},
            "status": {
                "observedGeneration": observed,
                "resolved": [{"credential": c, "region": r, "id": i} for c, r, i in resolved] or None,
            },
        }
    )
    return effective_image("ubuntu", lambda n: obj if n == "ubuntu" else None)


def deployment(replicas: int = 2, targets: tuple[str, ...] = ("a",), **group: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "web",
                        "replicas": replicas,
                        "imageRef": "ubuntu",
                        "size": {"cpu": 1, "memoryMiB": 1024},
                        "placement": {"targets": [{"credential": c} for c in targets]},
                        **group,
                    }
                ]
            },
        }
    )


def running(dep: Deployment, ordinal: int, image_id: str | None, credential: str = "a") -> InstanceView:
    return InstanceView(
        name=f"shop-web-{ordinal}",
        group="web",
        credential=credential,
        region=CREDS[credential].region,
        template_hash=template_hash(dep.spec.node_groups[0]),
        phase="Running",
        ready=True,
        created=T0 + timedelta(minutes=ordinal),
        address=f"203.0.113.{ordinal + 1}",
        image_id=image_id,
    )


def plan(dep: Deployment, instances: list[InstanceView], img: EffectiveImage) -> Plan:
    return plan_deployment(dep, instances, CREDS, {"ubuntu": img}, now=T0 + timedelta(hours=1))


def progressing(p: Plan) -> tuple[str, str]:
    c = find_condition(p.status.conditions, "Progressing")
    assert c is not None
    return c.status, c.reason


@pytest.mark.parametrize(
    ("resolved", "generation", "observed", "expected"),
    [
        # The Image's loop resolved the lookup on the target: every new Instance records that id.
        ([("a", "eu-central-1", "ami-1")], 1, 1, "ami-1"),
        # Resolved on another credential or region only: the Instance resolves at create, as before.
        ([("b", "us-east-1", "ami-9")], 1, 1, None),
        ([("a", "us-east-1", "ami-9")], 1, 1, None),
        # An edited Image not resolved again yet: its old ids are not what the spec now says.
        ([("a", "eu-central-1", "ami-1")], 2, 1, None),
        # Not resolved at all yet.
        ([], 1, None, None),
    ],
)
def test_new_instances_record_the_id_the_image_resolved_on_their_target(
    resolved: list[tuple[str, str, str]], generation: int, observed: int | None, expected: str | None
) -> None:
    p = plan(deployment(), [], image(*resolved, generation=generation, observed=observed))
    assert [c.name for c in p.creates] == ["shop-web-0", "shop-web-1"]
    assert {c.spec.image_id for c in p.creates} == {expected}


def test_each_target_records_its_own_id() -> None:
    dep = deployment(targets=("a", "b"))
    p = plan(dep, [], image(("a", "eu-central-1", "ami-eu"), ("b", "us-east-1", "ami-us")))
    assert sorted((c.spec.credential, c.spec.image_id) for c in p.creates) == [("a", "ami-eu"), ("b", "ami-us")]


def test_an_image_resolving_to_a_newer_id_rolls_the_group_within_its_limits() -> None:
    dep = deployment(replicas=3)
    old = [running(dep, i, "ami-1") for i in range(3)]
    # Converged on ami-1.
    p = plan(dep, old, image(("a", "eu-central-1", "ami-1")))
    assert (p.creates, p.deletes) == ([], [])
    assert progressing(p) == ("False", "Converged")
    # The lookup now finds ami-2: one new VM from it first (surge 1), nothing removed yet; a
    # replacement does not boot ami-2 beside siblings on ami-1 unannounced.
    newer = image(("a", "eu-central-1", "ami-2"))
    p = plan(dep, old, newer)
    assert ([c.name for c in p.creates], p.deletes) == (["shop-web-3"], [])
    assert p.creates[0].spec.image_id == "ami-2"
    assert [e.reason for e in p.events] == ["RollingUpdate"]
    assert (p.status.groups[0].replicas, p.status.groups[0].updated_replicas) == (3, 0)
    assert progressing(p) == ("True", "RollingUpdate")
    # The new VM runs: the newest old one goes.
    p = plan(dep, [*old, running(dep, 3, "ami-2")], newer)
    assert ([c.name for c in p.creates], p.deletes) == ([], ["shop-web-2"])


def test_max_unavailable_rolls_by_removing_first() -> None:
    dep = deployment(replicas=2, rollout={"maxSurge": 0, "maxUnavailable": 1})
    old = [running(dep, i, "ami-1") for i in range(2)]
    p = plan(dep, old, image(("a", "eu-central-1", "ami-2")))
    assert (p.creates, p.deletes) == ([], ["shop-web-1"])


@pytest.mark.parametrize(
    "img",
    [
        image(),  # the lookup failed for a moment: the entry is missing
        image(("a", "eu-central-1", "ami-2"), generation=2, observed=1),  # edited, not resolved again yet
        image(("b", "us-east-1", "ami-2")),  # resolved elsewhere only
    ],
)
def test_an_unknown_id_rolls_nothing(img: EffectiveImage) -> None:
    dep = deployment(replicas=2)
    p = plan(dep, [running(dep, i, "ami-1") for i in range(2)], img)
    assert (p.creates, p.deletes) == ([], [])
    assert progressing(p) == ("False", "Converged")


def test_an_instance_whose_image_is_not_known_yet_is_not_rolled() -> None:
    dep = deployment(replicas=1)
    p = plan(dep, [running(dep, 0, None)], image(("a", "eu-central-1", "ami-2")))
    assert (p.creates, p.deletes) == ([], [])


def test_a_lost_vm_is_replaced_from_the_current_id() -> None:
    dep = deployment(replicas=1)
    lost = dataclasses.replace(running(dep, 0, "ami-1"), phase="Lost", ready=False)
    p = plan(dep, [lost], image(("a", "eu-central-1", "ami-2")))
    assert (p.deletes, [(c.name, c.spec.image_id) for c in p.creates]) == (["shop-web-0"], [("shop-web-1", "ami-2")])


@pytest.mark.parametrize(
    ("spec_id", "status_id", "expected"),
    [
        ("ami-spec", None, "ami-spec"),  # recorded by the planner
        ("ami-spec", "ami-spec", "ami-spec"),
        # Resolved at create (planned before the Image was resolved there): the status holds what
        # the cloud's listing says, which some clouds spell otherwise (a URL, a slug) than the
        # resolved id; comparing it would replace VMs that boot the same image.
        (None, "ami-status", None),
        (None, None, None),  # not created yet
    ],
)
def test_the_view_knows_which_image_an_instance_was_planned_with(
    spec_id: str | None, status_id: str | None, expected: str | None
) -> None:
    obj = Instance.model_validate(
        {
            "metadata": {"name": "shop-web-0", "namespace": "ns", "uid": "u-0"},
            "spec": {
                "deployment": "shop",
                "group": "web",
                "credential": "a",
                "imageRef": "ubuntu",
                "imageId": spec_id,
                "templateHash": "h",
            },
            "status": {"imageId": status_id} if status_id else None,
        }
    )
    assert instance_view(obj).image_id == expected
