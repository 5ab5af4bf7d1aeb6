"""The Deployment plan: scaling, victims, rollouts, dependsOn, failures, paused, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment
from skyfleet.api.image import ImageBuild, ImageStatus, Recipe
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.deployment import Plan, plan_deployment, victims
from skyfleet.reconcile.images import EffectiveImage
from skyfleet.reconcile.userdata import template_hash
from skyfleet.reconcile.views import CredentialView, InstanceView

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREDS = {
    "a": CredentialView("a", "ec2", "eu-central-1", ready=True),
    "b": CredentialView("b", "ec2", "us-east-1", ready=True),
}
IMAGES: dict[str, EffectiveImage | str] = {"ubuntu": EffectiveImage("ubuntu", (), None, "ubuntu")}


def group(name: str = "web", **kw: Any) -> dict[str, Any]:
    g: dict[str, Any] = {
        "name": name,
        "replicas": 2,
        "imageRef": "ubuntu",
        "size": {"cpu": 1, "memoryMiB": 1024},
        "placement": {"targets": [{"credential": "a"}]},
    }
    g.update(kw)
    return g


def deployment(*groups: dict[str, Any], generation: int = 1, status: Any = None, **spec: Any) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "ns", "uid": "u-1", "generation": generation},
            "spec": {"nodeGroups": list(groups) or [group()], **spec},
            "status": status,
        }
    )


def hash_of(dep: Deployment, name: str = "web") -> str:
    return template_hash(next(g for g in dep.spec.node_groups if g.name == name))


def inst(
    dep: Deployment, ordinal: int, *, group: str = "web", ready: bool = True, age: int = 0, **kw: Any
) -> InstanceView:
    values: dict[str, Any] = {
        "name": f"shop-{group}-{ordinal}",
        "group": group,
        "credential": "a",
        "region": "eu-central-1",
        "template_hash": hash_of(dep, group),
        "phase": "Running" if ready else "Pending",
        "ready": ready,
        "created": T0 + timedelta(minutes=age or ordinal),
        "address": f"203.0.113.{ordinal + 1}" if ready else None,
        "private_address": f"10.0.0.{ordinal + 1}" if ready else None,
    }
    values.update(kw)
    return InstanceView(**values)


def plan(dep: Deployment, instances: list[InstanceView], creds: Any = CREDS, images: Any = IMAGES) -> Plan:
    return plan_deployment(dep, instances, creds, images, now=T0 + timedelta(hours=1))


def created(p: Plan) -> list[str]:
    return [c.name for c in p.creates]


def cond(p: Plan, type_: str) -> tuple[str, str]:
    c = find_condition(p.status.conditions, type_)
    assert c is not None
    return c.status, c.reason


# --- scaling -------------------------------------------------------------------------------------


def test_new_deployment_creates_instances_with_stable_names_labels_and_spec() -> None:
    dep = deployment(group(replicas=3, userData="#!/bin/sh\necho {{ instance }}\n"))
    p = plan(dep, [])
    assert created(p) == ["shop-web-0", "shop-web-1", "shop-web-2"]
    first = p.creates[0]
    assert first.labels == {"skyfleet.io/deployment": "shop", "skyfleet.io/group": "web", "skyfleet.io/credential": "a"}
    assert first.spec.credential == "a"
    assert first.spec.region == "eu-central-1"
    assert first.spec.template_hash == hash_of(dep)
    assert first.spec.user_data == "#!/bin/sh\necho shop-web-0\n"
    assert p.deletes == []
    assert p.status.phase == "Provisioning"
    assert cond(p, "Ready") == ("False", "ReplicasNotReady")
    assert cond(p, "Progressing")[0] == "True"
    assert [e.reason for e in p.events] == ["ScalingUp"]


def test_explicit_instance_type_for_the_provider_wins_over_cpu_and_memory() -> None:
    dep = deployment(group(size={"cpu": 1, "memoryMiB": 1024, "instanceTypes": {"ec2": "t3.micro"}}))
    spec = plan(dep, []).creates[0].spec
    assert (spec.instance_type, spec.size) == ("t3.micro", None)
    other = deployment(group(size={"cpu": 1, "memoryMiB": 1024, "instanceTypes": {"gce": "e2-small"}}))
    spec = plan(other, []).creates[0].spec
    assert spec.instance_type is None
    assert spec.size is not None
    assert (spec.size.cpu, spec.size.memory_mib, spec.size.instance_types) == (1, 1024, None)


def test_each_instance_shows_the_images_login_user() -> None:
    spec = plan(deployment(group()), []).creates[0].spec
    assert spec.login_user == "ubuntu"
    assert spec.to_api()["loginUser"] == "ubuntu"


def test_an_explicit_instance_type_keeps_the_disk_size() -> None:
    # The type says cpu and memory; the root disk is still the group's diskGiB.
    dep = deployment(group(size={"cpu": 1, "memoryMiB": 1024, "diskGiB": 50, "instanceTypes": {"ec2": "t3.micro"}}))
    spec = plan(dep, []).creates[0].spec
    assert spec.instance_type == "t3.micro"
    assert spec.size is not None
    assert (spec.size.disk_gib, spec.size.instance_types) == (50, {"ec2": "t3.micro"})


def test_scale_up_fills_the_lowest_free_ordinals() -> None:
    dep = deployment(group(replicas=4))
    p = plan(dep, [inst(dep, 0), inst(dep, 2)])
    assert created(p) == ["shop-web-1", "shop-web-3"]


def test_names_of_instances_still_being_deleted_are_not_reused() -> None:
    dep = deployment(group(replicas=2))
    p = plan(dep, [inst(dep, 0), inst(dep, 1, deleting=True)])
    assert created(p) == ["shop-web-2"]


@pytest.mark.parametrize(
    ("annotated", "expected"),
    [
        # no annotation: the newest goes first
        ((), ["shop-web-3", "shop-web-2"]),
        # annotated Instances go first, whatever their age
        ((0,), ["shop-web-0", "shop-web-3"]),
        ((1, 0), ["shop-web-0", "shop-web-1"]),
    ],
)
def test_scale_down_victims(annotated: tuple[int, ...], expected: list[str]) -> None:
    dep = deployment(group(replicas=2))
    existing = [inst(dep, i, delete_requested=i in annotated) for i in range(4)]
    p = plan(dep, existing)
    assert sorted(p.deletes) == sorted(expected)
    assert created(p) == []
    assert [e.reason for e in p.events] == ["ScalingDown"]


def test_victims_prefer_creation_time_over_ordinal() -> None:
    dep = deployment()
    old_high = inst(dep, 9, age=1)
    new_low = inst(dep, 0, age=50)
    assert victims([old_high, new_low], 1) == [new_low]


def test_scale_to_zero_deletes_everything_and_is_ready() -> None:
    dep = deployment(group(replicas=0))
    p = plan(dep, [inst(dep, 0), inst(dep, 1)])
    assert sorted(p.deletes) == ["shop-web-0", "shop-web-1"]
    converged = plan(dep, [])
    assert converged.deletes == []
    assert converged.creates == []
    assert cond(converged, "Ready") == ("True", "AllReplicasReady")


# --- convergence and status ------------------------------------------------------------------------


def test_converged_deployment_plans_nothing_and_status_is_stable() -> None:
    dep = deployment(group(replicas=2))
    instances = [inst(dep, 0), inst(dep, 1)]
    first = plan(dep, instances)
    assert (first.creates, first.deletes, first.events) == ([], [], [])
    assert first.status.phase == "Running"
    assert cond(first, "Ready") == ("True", "AllReplicasReady")
    assert cond(first, "Progressing") == ("False", "Converged")
    assert cond(first, "Degraded") == ("False", "AsExpected")
    assert first.status.observed_generation == 1
    assert (first.status.replicas, first.status.ready_replicas) == (2, 2)
    # A later pass over the same world, with the status written back, yields an identical status:
    # the handler compares and patches nothing.
    again = plan_deployment(
        deployment(group(replicas=2), status=first.status.to_api()),
        instances,
        CREDS,
        IMAGES,
        now=T0 + timedelta(days=3),
    )
    assert again.status == first.status


def test_transition_times_move_only_when_the_status_changes() -> None:
    dep = deployment(group(replicas=1))
    pending = plan(dep, [inst(dep, 0, ready=False)])
    ready_before = find_condition(pending.status.conditions, "Ready")
    assert ready_before is not None
    later = T0 + timedelta(hours=5)
    same = plan_deployment(
        deployment(group(replicas=1), status=pending.status.to_api()),
        [inst(dep, 0, ready=False)],
        CREDS,
        IMAGES,
        now=later,
    )
    assert find_condition(same.status.conditions, "Ready") == ready_before
    flipped = plan_deployment(
        deployment(group(replicas=1), status=pending.status.to_api()), [inst(dep, 0)], CREDS, IMAGES, now=later
    )
    ready_after = find_condition(flipped.status.conditions, "Ready")
    assert ready_after is not None
    assert (ready_after.status, ready_after.last_transition_time) == ("True", later)


def test_group_counts_in_status() -> None:
    dep = deployment(group("db", replicas=1), group("web", replicas=3))
    p = plan(dep, [inst(dep, 0, group="db"), inst(dep, 0), inst(dep, 1, ready=False)])
    groups = {g.name: (g.replicas, g.ready_replicas, g.updated_replicas) for g in p.status.groups or []}
    assert groups == {"db": (1, 1, 1), "web": (2, 1, 2)}
    assert (p.status.replicas, p.status.ready_replicas) == (3, 2)


# --- dependsOn and wiring -----------------------------------------------------------------------------


def two_tier(**web: Any) -> Deployment:
    return deployment(
        group("db", replicas=2),
        group(
            "web",
            replicas=2,
            dependsOn=["db"],
            userData="#!/bin/sh\necho DB={{ groups.db.privateAddresses }} PUB={{ groups.db.addresses }}\n",
            **web,
        ),
    )


def test_dependent_group_waits_until_its_dependencies_run() -> None:
    dep = two_tier()
    p = plan(dep, [])
    assert created(p) == ["shop-db-0", "shop-db-1"]
    half = plan(dep, [inst(dep, 0, group="db"), inst(dep, 1, group="db", ready=False)])
    assert created(half) == []
    assert cond(half, "Progressing") == ("True", "WaitingForDependencies")


def test_dependent_group_gets_the_addresses_of_its_dependencies() -> None:
    dep = two_tier()
    p = plan(dep, [inst(dep, 1, group="db"), inst(dep, 0, group="db")])
    assert created(p) == ["shop-web-0", "shop-web-1"]
    assert p.creates[0].spec.user_data == "#!/bin/sh\necho DB=10.0.0.1,10.0.0.2 PUB=203.0.113.1,203.0.113.2\n"


def test_dependency_cycle_stops_everything_with_a_reason() -> None:
    dep = deployment(group("a", dependsOn=["b"]), group("b", dependsOn=["a"]))
    p = plan(dep, [])
    assert (p.creates, p.deletes) == ([], [])
    assert cond(p, "Ready") == ("False", "InvalidDependencies")
    assert cond(p, "Degraded") == ("True", "InvalidDependencies")
    assert "cycle" in (p.status.message or "")


def test_template_error_is_reported_not_rendered_blank() -> None:
    dep = deployment(group(userData="{{ groups.db.addresses }}"))
    p = plan(dep, [])
    assert created(p) == []
    assert cond(p, "Ready") == ("False", "InvalidUserData")


def test_image_recipe_and_user_data_are_combined() -> None:
    images: dict[str, EffectiveImage | str] = {
        "ubuntu": EffectiveImage("ubuntu", (), Recipe(packages=["jq"]), "ubuntu")
    }
    dep = deployment(group(userData="#!/bin/sh\necho hi\n"))
    user_data = plan(dep, [], images=images).creates[0].spec.user_data or ""
    assert "packages:\n- jq" in user_data
    assert "echo hi" in user_data
    assert "multipart/mixed" in user_data


def test_unusable_image_blocks_creation_with_the_reason() -> None:
    dep = deployment()
    p = plan(dep, [], images={"ubuntu": "parent Image 'base' not found"})
    assert created(p) == []
    assert cond(p, "Ready") == ("False", "ImageNotReady")
    assert "base" in (p.status.message or "")


# --- placement across credentials ------------------------------------------------------------------------


def test_spread_over_two_credentials_follows_weights() -> None:
    dep = deployment(
        group(
            replicas=3,
            placement={"strategy": "Spread", "targets": [{"credential": "a", "weight": 2}, {"credential": "b"}]},
        )
    )
    p = plan(dep, [])
    assert [(c.spec.credential, c.spec.region) for c in p.creates] == [
        ("a", "eu-central-1"),
        ("a", "eu-central-1"),
        ("b", "us-east-1"),
    ]
    assert [c.labels["skyfleet.io/credential"] for c in p.creates] == ["a", "a", "b"]


def test_quota_failure_on_the_first_target_falls_back_to_the_second() -> None:
    dep = deployment(
        group(replicas=1, placement={"strategy": "Ordered", "targets": [{"credential": "a"}, {"credential": "b"}]})
    )
    first = plan(dep, [])
    assert [c.spec.credential for c in first.creates] == ["a"]
    failed = inst(dep, 0, ready=False, phase="Failed", reason="QuotaExceeded")
    second = plan(dep, [failed])
    assert second.deletes == ["shop-web-0"]
    assert [(c.name, c.spec.credential) for c in second.creates] == [("shop-web-1", "b")]
    assert [e.reason for e in second.events] == ["PlacementFallback", "ProvisioningFailed", "ScalingUp"]
    group_status = (second.status.groups or [])[0]
    assert group_status.unavailable_targets == ["a/eu-central-1"]
    assert group_status.failed_provisions == 1
    # The fallback is remembered through status while the replacement is still starting...
    dep2 = deployment(
        group(replicas=2, placement={"strategy": "Ordered", "targets": [{"credential": "a"}, {"credential": "b"}]}),
        status=second.status.to_api(),
    )
    third = plan(dep2, [inst(dep, 1, ready=False, credential="b", region="us-east-1")])
    assert [c.spec.credential for c in third.creates] == ["b"]


def test_fallback_is_forgotten_once_the_group_converges() -> None:
    spec = group(replicas=1, placement={"strategy": "Ordered", "targets": [{"credential": "a"}, {"credential": "b"}]})
    status = {
        "observedGeneration": 1,
        "groups": [{"name": "web", "unavailableTargets": ["a/eu-central-1"], "failedProvisions": 1}],
    }
    dep = deployment(spec, status=status)
    p = plan(dep, [inst(dep, 1, credential="b", region="us-east-1")])
    assert (p.status.groups or [])[0].unavailable_targets is None


def test_unknown_credential_is_reported_by_name() -> None:
    dep = deployment(group(placement={"targets": [{"credential": "nope"}]}))
    p = plan(dep, [])
    assert created(p) == []
    assert cond(p, "Ready") == ("False", "CredentialNotFound")
    assert "'nope'" in (p.status.message or "")
    # Spread over a known and an unknown credential still places on the known one.
    mixed = deployment(group(placement={"targets": [{"credential": "nope"}, {"credential": "a"}]}))
    assert [c.spec.credential for c in plan(mixed, []).creates] == ["a", "a"]


def test_no_usable_target_waits_with_a_reason() -> None:
    creds = {"a": CredentialView("a", "ec2", "eu-central-1", ready=False)}
    p = plan(deployment(), [], creds=creds)
    assert created(p) == []
    assert cond(p, "Ready") == ("False", "NoPlacementAvailable")


# --- failures ---------------------------------------------------------------------------------------------


def test_failed_instances_are_replaced_until_the_budget_is_spent() -> None:
    dep = deployment(group(replicas=1, maxProvisioningFailures=2))
    failed0 = inst(dep, 0, ready=False, phase="Failed", reason="InvalidRequest")
    p1 = plan(dep, [failed0])
    assert (p1.deletes, created(p1)) == (["shop-web-0"], ["shop-web-1"])
    dep = deployment(group(replicas=1, maxProvisioningFailures=2), status=p1.status.to_api())
    failed1 = inst(dep, 1, ready=False, phase="Failed", reason="InvalidRequest")
    p2 = plan(dep, [failed1])
    assert (p2.deletes, created(p2)) == (["shop-web-1"], ["shop-web-0"])
    assert (p2.status.groups or [])[0].failed_provisions == 2
    dep = deployment(group(replicas=1, maxProvisioningFailures=2), status=p2.status.to_api())
    failed2 = inst(dep, 0, ready=False, phase="Failed", reason="InvalidRequest")
    p3 = plan(dep, [failed2])
    # The budget is spent: the failed Instance stays for people to inspect, nothing new is tried.
    assert (p3.deletes, created(p3)) == ([], [])
    assert p3.status.phase == "Degraded"
    assert cond(p3, "Degraded") == ("True", "ProvisioningFailuresExceeded")
    assert cond(p3, "Ready") == ("False", "ProvisioningFailuresExceeded")
    # Editing the spec (new generation) starts a fresh budget.
    edited = deployment(group(replicas=1, maxProvisioningFailures=2), status=p3.status.to_api(), generation=2)
    p4 = plan(edited, [failed2])
    assert (p4.deletes, created(p4)) == (["shop-web-0"], ["shop-web-1"])


@pytest.mark.parametrize("phase", ["Lost", "Stopped"])
def test_lost_or_stopped_vm_is_replaced_unless_policy_is_report(phase: str) -> None:
    dep = deployment(group(replicas=1))
    lost = inst(dep, 0, ready=False, phase=phase)
    p = plan(dep, [lost])
    assert (p.deletes, created(p)) == (["shop-web-0"], ["shop-web-1"])
    report = deployment(group(replicas=1, driftPolicy="Report"))
    p = plan(report, [inst(report, 0, ready=False, phase=phase)])
    assert (p.deletes, created(p)) == ([], [])
    assert cond(p, "Ready")[0] == "False"


# --- rollout ------------------------------------------------------------------------------------------------


def test_size_change_rolls_one_at_a_time_with_default_surge() -> None:
    old_dep = deployment(group(replicas=3))
    old = [inst(old_dep, i) for i in range(3)]
    dep = deployment(group(replicas=3, size={"cpu": 2, "memoryMiB": 2048}), generation=2)
    # surge 1, unavailable 0: one new VM first, nothing removed yet
    p = plan(dep, old)
    assert (created(p), p.deletes) == (["shop-web-3"], [])
    assert p.creates[0].spec.template_hash == hash_of(dep) != hash_of(old_dep)
    assert [e.reason for e in p.events] == ["RollingUpdate"]
    # the new VM is still starting: wait
    starting = inst(dep, 3, ready=False)
    p = plan(dep, [*old, starting])
    assert (created(p), p.deletes) == ([], [])
    assert cond(p, "Progressing") == ("True", "RollingUpdate")
    # the new VM runs: one old VM goes (the newest of the old ones)
    p = plan(dep, [*old, inst(dep, 3)])
    assert (created(p), p.deletes) == ([], ["shop-web-2"])
    # the old VM is being deleted: it still holds its VM, so 3 + 1 surge are there already
    p = plan(dep, [*old[:2], inst(old_dep, 2, deleting=True), inst(dep, 3)])
    assert (created(p), p.deletes) == ([], [])
    # its VM is gone (the Instance with it): the next new one starts, in the freed name
    p = plan(dep, [*old[:2], inst(dep, 3)])
    assert (created(p), p.deletes) == (["shop-web-2"], [])


def test_rollout_with_max_unavailable_removes_before_adding() -> None:
    old_dep = deployment(group(replicas=2))
    old = [inst(old_dep, i) for i in range(2)]
    dep = deployment(
        group(
            replicas=2,
            imageRef="ubuntu",
            size={"cpu": 4, "memoryMiB": 1024},
            rollout={"maxSurge": 0, "maxUnavailable": 1},
        ),
        generation=2,
    )
    p = plan(dep, old)
    assert (created(p), p.deletes) == ([], ["shop-web-1"])
    # maxSurge 0 (a quota of exactly two VMs, say): no new VM while the old one terminates
    p = plan(dep, [old[0], inst(old_dep, 1, deleting=True)])
    assert created(p) == []
    p = plan(dep, [old[0]])
    assert created(p) == ["shop-web-1"]


@pytest.mark.parametrize(
    ("phase", "holds_a_vm"),
    [("Running", True), ("Creating", True), ("Stopped", True), (None, False), ("Failed", False), ("Lost", False)],
)
def test_a_rollout_counts_an_instance_being_deleted_while_its_vm_may_be_there(
    phase: str | None, holds_a_vm: bool
) -> None:
    old_dep = deployment(group(replicas=2))
    dep = deployment(group(replicas=2, size={"cpu": 2, "memoryMiB": 2048}), generation=2)
    # One new VM runs, one old one runs, the other old one is on its way out.
    leaving = inst(old_dep, 1, deleting=True, phase=phase, ready=phase == "Running")
    p = plan(dep, [inst(old_dep, 0), leaving, inst(dep, 2)])
    assert created(p) == ([] if holds_a_vm else ["shop-web-3"])


def test_outdated_instances_that_never_became_ready_go_at_once() -> None:
    old_dep = deployment(group(replicas=1))
    dep = deployment(group(replicas=1, size={"cpu": 2, "memoryMiB": 1024}), generation=2)
    p = plan(dep, [inst(old_dep, 0, ready=False)])
    assert p.deletes == ["shop-web-0"]
    assert created(p) == ["shop-web-1"]


# --- paused --------------------------------------------------------------------------------------------------


def test_paused_deployment_takes_no_action_but_reports() -> None:
    dep = deployment(group(replicas=3), paused=True)
    p = plan(dep, [inst(dep, 0), inst(dep, 5, phase="Failed", ready=False, reason="InvalidRequest")])
    assert (p.creates, p.deletes, p.events) == ([], [], [])
    assert p.status.phase == "Paused"
    assert cond(p, "Progressing") == ("False", "Paused")
    assert cond(p, "Ready") == ("False", "ReplicasNotReady")


# --- baked Images (spec.build) ---------------------------------------------------------------------


def baked(*bakes: dict[str, Any], generations: list[dict[str, Any]] | None = None) -> EffectiveImage:
    """The Image "ubuntu" with a recipe and spec.build, and the bakes its status records."""
    return EffectiveImage(
        "ubuntu",
        (),
        Recipe(packages=["nginx"]),
        "ubuntu",
        build=ImageBuild.model_validate({"builder": {"size": {"cpu": 1, "memoryMiB": 1024}}}),
        status=ImageStatus.model_validate({"bakes": list(bakes), "generations": generations}),
    )


def bake_of(phase: str, key: str, image_id: str | None, credential: str = "a") -> dict[str, Any]:
    region = CREDS[credential].region
    return {"credential": credential, "region": region, "phase": phase, "bakeKey": key, "imageId": image_id}


def test_baked_image_vms_boot_the_baked_id_without_the_recipe() -> None:
    dep = deployment(group(userData="#!/bin/sh\necho hi\n"))
    p = plan(dep, [], images={"ubuntu": baked(bake_of("Available", "k1", "ami-baked1"))})
    assert created(p) == ["shop-web-0", "shop-web-1"]
    assert {c.spec.image_id for c in p.creates} == {"ami-baked1"}
    user_data = p.creates[0].spec.user_data or ""
    assert "echo hi" in user_data
    assert "nginx" not in user_data  # the recipe ran on the builder, not at every boot


@pytest.mark.parametrize("phase", ["Launching", "Provisioning", "Snapshotting", "Failed"])
def test_no_baked_image_yet_means_wait_with_a_reason_not_the_base_image(phase: str) -> None:
    dep = deployment()
    p = plan(dep, [], images={"ubuntu": baked(bake_of(phase, "k1", None))})
    assert created(p) == []
    assert "WaitingForBakedImage" in {cond(p, "Ready")[1], cond(p, "Progressing")[1]}
    assert "eu-central-1" in (p.status.message or "")


def test_a_target_without_a_bake_takes_no_vms_the_baked_one_does() -> None:
    dep = deployment(group(placement={"targets": [{"credential": "a"}, {"credential": "b"}]}))
    images = {"ubuntu": baked(bake_of("Available", "k1", "ami-a"), bake_of("Provisioning", "k1", None, "b"))}
    p = plan(dep, [], images=images)
    assert [(c.spec.credential, c.spec.image_id) for c in p.creates] == [("a", "ami-a"), ("a", "ami-a")]


def test_a_new_bake_rolls_the_group_within_its_rollout_limits() -> None:
    dep = deployment(group(replicas=3))
    gen1 = {"credential": "a", "region": "eu-central-1", "bakeKey": "k1", "imageId": "ami-1", "createdAt": T0}
    first = baked(bake_of("Available", "k1", "ami-1"), generations=[gen1])
    creates = plan(dep, [], images={"ubuntu": first}).creates
    old = [inst(dep, i, template_hash=c.spec.template_hash) for i, c in enumerate(creates)]
    # Converged on generation 1; a new bake in progress changes nothing (generation 1 serves).
    baking = baked(bake_of("Provisioning", "k2", None), generations=[gen1])
    p = plan(dep, old, images={"ubuntu": baking})
    assert (created(p), p.deletes) == ([], [])
    # Generation 2 is available: one new VM from it first (surge 1), nothing removed yet.
    gen2 = {**gen1, "bakeKey": "k2", "imageId": "ami-2", "createdAt": T0 + timedelta(hours=1)}
    landed = baked(bake_of("Available", "k2", "ami-2"), generations=[gen1, gen2])
    p = plan(dep, old, images={"ubuntu": landed})
    assert (created(p), p.deletes) == (["shop-web-3"], [])
    assert p.creates[0].spec.image_id == "ami-2"
    assert [e.reason for e in p.events] == ["RollingUpdate"]
