"""A Deployment's plan: which Instances to create and delete, and the status that results.

One pure function reads like the table of cases in the docs: per node group, in dependsOn
order, replace what failed or vanished, scale to ``replicas``, roll what is outdated within
maxSurge/maxUnavailable, and place new VMs. Everything it needs arrives as arguments, so a
crash anywhere in the handler that executes the plan just leads to the same plan next time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from skyfleet.api.deployment import Deployment, DeploymentStatus, GroupStatus, NodeGroup, Size
from skyfleet.api.instance import MAX_USER_DATA, InstanceSpec
from skyfleet.reconcile.bake import BootSource, boot_source
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.groups import DependencyError, creation_order
from skyfleet.reconcile.images import EffectiveImage
from skyfleet.reconcile.instances import FALLBACK_REASONS, never_called_the_cloud
from skyfleet.reconcile.placement import Target, choose_targets, target_key, targets_of
from skyfleet.reconcile.userdata import (
    NoAddresses,
    TemplateError,
    combine,
    recipe_to_cloud_config,
    render_template,
    template_hash,
)
from skyfleet.reconcile.views import (
    CREDENTIAL_LABEL,
    DEPLOYMENT_LABEL,
    GROUP_LABEL,
    CredentialView,
    InstanceView,
)

__all__ = [
    "DEFAULT_MAX_PROVISIONING_FAILURES",
    "Event",
    "NewInstance",
    "Plan",
    "instance_name",
    "plan_deployment",
    "refused_status",
    "victims",
]

DEFAULT_MAX_PROVISIONING_FAILURES = 3
# Instance failure reasons a replacement would meet again: reported, not retried.
FINAL_REASONS = frozenset({"UserDataTooLarge", "UserDataUnsupported"})


class UserDataTooLarge(ValueError):
    """Recipe plus userData is more than an Instance can hold."""


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str  # CamelCase, for machines
    message: str
    # The Instances this event announces creating or deleting: the handler drops the event when
    # none of them changed (a repeated plan over a not-yet-updated cache is then silent).
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewInstance:
    name: str
    labels: Mapping[str, str]
    spec: InstanceSpec


@dataclass
class Plan:
    creates: list[NewInstance] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    status: DeploymentStatus = field(default_factory=DeploymentStatus)
    events: list[Event] = field(default_factory=list)
    # Instance name -> the driftPolicy to set on it in place: its group's changed.
    drift_policies: dict[str, str] = field(default_factory=dict)


def instance_name(deployment: str, group: str, ordinal: int) -> str:
    return f"{deployment}-{group}-{ordinal}"


def victims(candidates: Sequence[InstanceView], count: int) -> list[InstanceView]:
    """Who goes first on scale-down: Instances annotated ``skyfleet.io/delete``, then the newest."""
    ranked = sorted(
        candidates,
        key=lambda i: (
            not i.delete_requested,
            -(i.created.timestamp() if i.created else float("inf")),
            -i.ordinal,
        ),
    )
    return ranked[: max(0, count)]


@dataclass
class _GroupResult:
    status: GroupStatus
    desired: int
    problem: tuple[str, str] | None = None  # (reason, message) that needs a human
    waiting: tuple[str, str] | None = None  # (reason, message) that resolves by itself
    degraded: bool = False
    busy: bool = False


def _free_ordinals(taken: set[int], count: int) -> list[int]:
    out: list[int] = []
    n = 0
    while len(out) < count:
        if n not in taken:
            out.append(n)
        n += 1
    return out


def plan_deployment(
    deployment: Deployment,
    instances: Sequence[InstanceView],
    credentials: Mapping[str, CredentialView],
    images: Mapping[str, EffectiveImage | str],
    *,
    now: datetime,
) -> Plan:
    """``images`` maps imageRef to the folded Image, or to why it cannot be used."""
    meta, spec = deployment.metadata, deployment.spec
    gen = meta.generation or None
    old = deployment.status or DeploymentStatus()
    plan = Plan()
    paused = bool(spec.paused)
    # A spec edit is a human saying "try again": failure budgets and fallbacks start over.
    fresh = old.observed_generation != gen
    old_groups = {g.name: g for g in old.groups or []}
    by_name = {g.name: g for g in spec.node_groups}
    in_use = {name: c.in_use for name, c in credentials.items()}

    try:
        order = creation_order(spec.node_groups)
        dep_error = None
    except DependencyError as exc:
        order, dep_error = [g.name for g in spec.node_groups], str(exc)

    results: dict[str, _GroupResult] = {}
    for name in order:
        group = by_name[name]
        prev = None if fresh else old_groups.get(name)
        result = _plan_group(
            plan,
            deployment,
            group,
            [i for i in instances if i.group == name],
            credentials={n: _with_use(c, in_use[n]) for n, c in credentials.items()},
            images=images,
            prev=prev,
            results=results,
            instances=instances,
            paused=paused or dep_error is not None,
        )
        for new in plan.creates:
            if new.spec.group == name:
                in_use[new.spec.credential] = in_use.get(new.spec.credential, 0) + 1
        results[name] = result

    plan.status = _status(old, [results[g.name] for g in spec.node_groups], gen, now, paused, dep_error, plan)
    return plan


def _with_use(c: CredentialView, in_use: int) -> CredentialView:
    return dataclasses.replace(c, in_use=in_use)


@dataclass
class _GroupPass:
    """One group's facts for this pass, and what the steps below decide from them."""

    group: NodeGroup
    desired: int
    image: EffectiveImage | str | None
    boots: dict[str, BootSource]
    current_hash: str
    max_failures: int
    prev: GroupStatus | None
    failures: int
    unavailable: set[str]
    live: list[InstanceView]
    # Instances being deleted whose VM may still be there: a rollout counts them against maxSurge.
    leaving: int = 0
    # Decided by the steps, in reading order.
    removing: list[InstanceView] = field(default_factory=list)
    active: list[InstanceView] = field(default_factory=list)
    current: list[InstanceView] = field(default_factory=list)
    outdated: list[InstanceView] = field(default_factory=list)
    ready: int = 0
    deletes: list[InstanceView] = field(default_factory=list)
    creates: int = 0

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def removing_names(self) -> set[str]:
        return {i.name for i in self.removing}


def _plan_group(
    plan: Plan,
    deployment: Deployment,
    group: NodeGroup,
    mine: list[InstanceView],
    *,
    credentials: Mapping[str, CredentialView],
    images: Mapping[str, EffectiveImage | str],
    prev: GroupStatus | None,
    results: Mapping[str, _GroupResult],
    instances: Sequence[InstanceView],
    paused: bool,
) -> _GroupResult:
    """One group's table of cases, in reading order: replace what failed or vanished, report
    what needs a human, roll and scale, hold creates back for what they wait on, place them."""
    g = _group_pass(group, mine, credentials, images, prev)
    result = _GroupResult(GroupStatus(name=group.name), g.desired)
    if not paused:
        _replace_failed(plan, g)
        _replace_lost(plan, g)
    _sort_active(g)
    _report_problems(plan, g, result, credentials)
    if not paused:
        _roll_and_scale(g)
    _hold_creates(g, result, results)
    if g.creates:
        _place_creates(plan, deployment, g, result, mine=mine, credentials=credentials, instances=instances)
    _announce_deletes(plan, g)
    return _group_result(g, result)


def _group_pass(
    group: NodeGroup,
    mine: list[InstanceView],
    credentials: Mapping[str, CredentialView],
    images: Mapping[str, EffectiveImage | str],
    prev: GroupStatus | None,
) -> _GroupPass:
    image = images.get(group.image_ref)
    boots = _boot_sources(group, image, credentials)
    return _GroupPass(
        group=group,
        desired=1 if group.replicas is None else group.replicas,
        image=image,
        boots=boots,
        current_hash=_with_bakes(template_hash(group), boots),
        max_failures=(
            DEFAULT_MAX_PROVISIONING_FAILURES
            if group.max_provisioning_failures is None
            else group.max_provisioning_failures
        ),
        prev=prev,
        failures=prev.failed_provisions if prev else 0,
        unavailable=set(prev.unavailable_targets or []) if prev else set(),
        live=[i for i in mine if not i.deleting],
        leaving=sum(1 for i in mine if i.deleting and _may_hold_a_vm(i)),
    )


def _may_hold_a_vm(inst: InstanceView) -> bool:
    """Whether a VM may stand behind the Instance: it got as far as creating one, and the VM
    is neither known gone nor never made (Failed)."""
    return not never_called_the_cloud(inst.phase, has_provider_id=False) and inst.phase not in ("Failed", "Lost")


def _final(g: _GroupPass) -> list[InstanceView]:
    """Failed for good: a replacement would fail the same way."""
    return sorted((i for i in g.live if i.failed and i.reason in FINAL_REASONS), key=lambda i: i.ordinal)


def _replace_failed(plan: Plan, g: _GroupPass) -> None:
    """Failed creations are replaced while the budget lasts; quota and capacity answers move
    the next try to another target."""
    failed = sorted((i for i in g.live if i.failed and i.reason not in FINAL_REASONS), key=lambda i: i.ordinal)
    for inst in failed:
        if g.failures >= g.max_failures:
            break
        g.failures += 1
        g.removing.append(inst)
        key = target_key(inst.credential, inst.region)
        if inst.reason in FALLBACK_REASONS and key not in g.unavailable:
            g.unavailable.add(key)
            plan.events.append(
                Event(
                    "Warning",
                    "PlacementFallback",
                    f"group {g.name}: {key} answered {inst.reason}; trying the next target",
                )
            )
        plan.events.append(
            Event(
                "Warning",
                "ProvisioningFailed",
                f"group {g.name}: Instance {inst.name} failed ({inst.reason}); replacing it "
                f"({g.failures} of {g.max_failures} failures allowed)",
            )
        )


def _replace_lost(plan: Plan, g: _GroupPass) -> None:
    """A VM gone or stopped behind our back is replaced (the finalizer destroys a stopped VM)
    unless its Instance's driftPolicy says Report. The group's driftPolicy reaches existing
    Instances in place, not by a rollout (a policy change replaces no VM); an Instance whose
    policy is being updated is decided once it carries the new one."""
    wanted = _drift_policy(g.group.drift_policy)
    removing = g.removing_names
    updated = []
    for inst in g.live:
        if inst.name in removing:
            continue
        if _drift_policy(inst.drift_policy) != wanted:
            plan.drift_policies[inst.name] = wanted
            updated.append(inst.name)
            continue
        if inst.phase not in ("Lost", "Stopped") or wanted == "Report":
            continue
        g.removing.append(inst)
        what = "is gone" if inst.phase == "Lost" else "was stopped outside Skyfleet"
        plan.events.append(Event("Warning", "ReplacingLostVM", f"group {g.name}: the VM of {inst.name} {what}"))
    if updated:
        plan.events.append(
            Event(
                "Normal",
                "DriftPolicyUpdated",
                f"group {g.name}: driftPolicy {wanted} on {', '.join(updated)}",
                tuple(updated),
            )
        )


def _drift_policy(policy: str | None) -> str:
    return policy or "Recreate"


def _sort_active(g: _GroupPass) -> None:
    """What stays: current (the group's template) or outdated (to be rolled)."""
    removing = g.removing_names
    g.active = [i for i in g.live if i.name not in removing and not i.failed]
    g.current = [i for i in g.active if i.template_hash == g.current_hash and not _image_moved(i, g.boots)]
    current = {i.name for i in g.current}
    g.outdated = [i for i in g.active if i.name not in current]
    g.ready = sum(1 for i in g.active if i.ready)


def _report_problems(
    plan: Plan, g: _GroupPass, result: _GroupResult, credentials: Mapping[str, CredentialView]
) -> None:
    """What needs a human: final failures (kept and reported while wanted, removed on
    scale-down like any other surplus), unknown regions, a spent failure budget."""
    final = _final(g)
    surplus = max(0, len(g.active) + len(final) - g.desired)
    dropped_final = final[len(final) - min(surplus, len(final)) :]
    kept_final = final[: len(final) - len(dropped_final)]
    if kept_final:
        first = kept_final[0]
        result.problem = (first.reason or "ProvisioningFailed", f"group {g.name}: {first.message or first.reason}")
    stuck = _unknown_regions(g.live, credentials)
    if stuck and result.problem is None:
        result.problem = ("RegionUnknown", f"group {g.name}: {stuck}")
    removing = g.removing_names
    if g.failures >= g.max_failures and any(i.failed and i.name not in removing for i in g.live):
        result.degraded = True
        result.problem = (
            "ProvisioningFailuresExceeded",
            f"group {g.name}: {g.failures} VM creations failed (maxProvisioningFailures {g.max_failures}); "
            "fix the cause and edit the Deployment to try again",
        )
        if g.prev is None or g.prev.failed_provisions < g.max_failures:
            plan.events.append(Event("Warning", "ProvisioningFailuresExceeded", result.problem[1]))
    g.deletes = [*g.removing, *dropped_final]


def _roll_and_scale(g: _GroupPass) -> None:
    """How many VMs to create and which to delete: scale to ``replicas``, and roll outdated ones
    within maxSurge/maxUnavailable."""
    rollout = g.group.rollout
    surge = 1 if rollout is None or rollout.max_surge is None else rollout.max_surge
    max_unavailable = 0 if rollout is None or rollout.max_unavailable is None else rollout.max_unavailable
    if len(g.current) > g.desired:
        g.deletes += victims(g.current, len(g.current) - g.desired)
    if not g.outdated:
        g.creates = max(0, g.desired - len(g.current))
    else:
        # An Instance on its way out still holds its VM until the cloud says it is gone: counted
        # too, or a roll would run desired + maxSurge + the VMs still terminating (over a quota
        # that maxSurge 0 was chosen to stay within).
        g.creates = max(0, min(g.desired - len(g.current), g.desired + surge - len(g.active) - g.leaving))
        not_ready = [i for i in g.outdated if not i.ready]
        removable = max(0, g.ready - (g.desired - max_unavailable))
        g.deletes += not_ready + victims([i for i in g.outdated if i.ready], removable)


def _hold_creates(g: _GroupPass, result: _GroupResult, results: Mapping[str, _GroupResult]) -> None:
    """No creates while dependencies are not running, a problem is reported, or the Image is unusable."""
    name = g.name
    blockers = [d for d in g.group.depends_on or [] if not _group_available(results.get(d))]
    if g.creates and blockers:
        empty = [d for d in blockers if (r := results.get(d)) is not None and r.desired == 0]
        if empty:
            # Nothing to wait for would ever come: say so rather than boot with a blank address.
            message = f"group {name} waits for {', '.join(empty)}, which has 0 replicas"
        else:
            message = f"group {name} waits for {', '.join(blockers)} to be running"
        result.waiting = ("WaitingForDependencies", message)
        g.creates = 0
    if g.creates and result.problem is not None:
        g.creates = 0
    if g.creates and not isinstance(g.image, EffectiveImage):
        result.problem = ("ImageNotReady", f"group {name}: {g.image or f'Image {g.group.image_ref!r} not found'}")
        g.creates = 0


def _place_creates(
    plan: Plan,
    deployment: Deployment,
    g: _GroupPass,
    result: _GroupResult,
    *,
    mine: Sequence[InstanceView],
    credentials: Mapping[str, CredentialView],
    instances: Sequence[InstanceView],
) -> None:
    """Choose targets for ``g.creates`` new VMs and write their Instances into the plan."""
    name, group, boots = g.name, g.group, g.boots
    targets = targets_of(group.placement, credentials)
    unbaked = [b.waiting for t in targets if (b := boots.get(t.key)) is not None and b.waiting]
    # A baked Image's VMs boot only its baked image: targets still waiting for it take none.
    targets = [t for t in targets if not (t.key in boots and boots[t.key].waiting)]
    staying = [target_key(i.credential, i.region) for i in g.active if i not in g.deletes]
    chosen = choose_targets(
        group.placement.strategy or "Spread",
        targets,
        staying,
        g.creates,
        credentials=credentials,
        unavailable=g.unavailable,
    )
    unknown = sorted({t.credential for t in targets if t.credential not in credentials})
    if len(chosen) < g.creates and unknown:
        # A missing object needs a human, unlike a credential that is still being verified.
        result.problem = (
            "CredentialNotFound",
            f"group {name}: CloudCredential {', '.join(map(repr, unknown))} does not exist",
        )
    elif len(chosen) < g.creates and unbaked:
        result.waiting = ("WaitingForBakedImage", f"group {name}: {'; '.join(w for w in unbaked if w)}")
    elif len(chosen) < g.creates:
        result.waiting = (
            "NoPlacementAvailable",
            f"group {name}: no target can take {g.creates - len(chosen)} more VMs "
            "(credentials not Ready, at maxInstances, or answering quota/capacity errors)",
        )
    assert isinstance(g.image, EffectiveImage)
    try:
        plan.creates += _new_instances(
            deployment, group, mine, chosen, g.current_hash, g.image, instances, credentials, boots
        )
    except NoAddresses as exc:
        result.waiting = ("WaitingForAddresses", f"group {name}: {exc}")
    except TemplateError as exc:
        result.problem = ("InvalidUserData", f"group {name}: {exc}")
    except UserDataTooLarge as exc:
        result.problem = ("UserDataTooLarge", f"group {name}: {exc}")
    created = [c.name for c in plan.creates if c.spec.group == name]
    if created:
        reason = "RollingUpdate" if g.outdated else "ScalingUp"
        plan.events.append(Event("Normal", reason, f"group {name}: creating {', '.join(created)}", tuple(created)))
    g.creates = len(created)


def _announce_deletes(plan: Plan, g: _GroupPass) -> None:
    unique_deletes = list(dict.fromkeys(i.name for i in g.deletes))
    plan.deletes += unique_deletes
    removing = g.removing_names
    planned_scale_down = [n for n in unique_deletes if n not in removing]
    if planned_scale_down:
        reason = "RollingUpdate" if g.outdated else "ScalingDown"
        plan.events.append(
            Event(
                "Normal",
                reason,
                f"group {g.name}: deleting {', '.join(planned_scale_down)}",
                tuple(planned_scale_down),
            )
        )


def _group_result(g: _GroupPass, result: _GroupResult) -> _GroupResult:
    converged = (
        len(g.current) == g.desired and not g.outdated and g.ready == g.desired and not g.deletes and not g.creates
    )
    result.busy = bool(g.creates or g.deletes) or not converged
    # A converged group forgets its fallbacks: the next trouble starts from the first target.
    unavailable = set() if converged else g.unavailable
    result.status = GroupStatus(
        name=g.name,
        replicas=len(g.active),
        ready_replicas=g.ready,
        updated_replicas=len(g.current),
        failed_provisions=g.failures,
        unavailable_targets=sorted(unavailable) or None,
    )
    return result


def _boot_sources(
    group: NodeGroup, image: EffectiveImage | str | None, credentials: Mapping[str, CredentialView]
) -> dict[str, BootSource]:
    """What a new VM boots per placement target key, resolved once here and recorded in its
    Instance's spec: a baked Image's bake, else the id the Image's loop resolved there. An
    unbaked target not resolved yet has no id (its Instance resolves at create), a baked one
    waits for its bake."""
    if not isinstance(image, EffectiveImage):
        return {}
    baked = image.build is not None
    return {
        t.key: boot_source(
            image.status,
            baked=baked,
            credential=t.credential,
            region=t.region or "",
            base_image_id=image.resolved.get((t.credential, t.region or "")),
        )
        for t in targets_of(group.placement, credentials)
    }


def _image_moved(inst: InstanceView, boots: Mapping[str, BootSource]) -> bool:
    """The Instance boots another image than a new VM on its target would: the Image now
    resolves (or bakes) to a newer one there. Unknown on either side is no difference, so a
    lookup that failed for a moment rolls nothing."""
    boot = boots.get(target_key(inst.credential, inst.region))
    return boot is not None and None not in (boot.image_id, inst.image_id) and boot.image_id != inst.image_id


def _with_bakes(base: str, boots: Mapping[str, BootSource]) -> str:
    """The template hash with the bake keys served per target: a new bake rolls the group."""
    keys = sorted(f"{k}={b.bake_key}" for k, b in boots.items() if b.bake_key)
    if not keys:
        return base
    return hashlib.sha256("\n".join([base, *keys]).encode()).hexdigest()[:16]


def _group_available(result: _GroupResult | None) -> bool:
    """Whether a dependency is there for dependents: all its replicas running, and at least one
    (a group scaled to 0 has no address to give)."""
    if result is None or result.desired == 0:
        return False
    s = result.status
    return s.ready_replicas >= result.desired and s.updated_replicas >= result.desired


def _unknown_regions(live: Sequence[InstanceView], credentials: Mapping[str, CredentialView]) -> str:
    """Where Instances of the group wait because the cloud does not know the region, or ""."""
    places = sorted(
        {
            (
                i.credential,
                i.region or (credentials[i.credential].region if i.credential in credentials else None) or "?",
            )
            for i in live
            if i.reason == "RegionUnknown"
        }
    )
    if not places:
        return ""
    where = ", ".join(f"region {region} of credential {cred}" for cred, region in places)
    return f"{where} is not known to the cloud; fix the placement target"


def _addresses(instances: Sequence[InstanceView], group: str) -> tuple[list[str], list[str]]:
    members = sorted((i for i in instances if i.group == group and i.ready and not i.deleting), key=lambda i: i.ordinal)
    return [i.address for i in members if i.address], [i.private_address for i in members if i.private_address]


def _new_instances(  # noqa: PLR0917 - private helper of plan_deployment
    deployment: Deployment,
    group: NodeGroup,
    mine: Sequence[InstanceView],
    chosen: Sequence[Target],
    current_hash: str,
    image: EffectiveImage,
    instances: Sequence[InstanceView],
    credentials: Mapping[str, CredentialView],
    boots: Mapping[str, BootSource],
) -> list[NewInstance]:
    dep = deployment.metadata.name
    deps = list(group.depends_on or [])
    addresses: dict[str, list[str]] = {}
    private: dict[str, list[str]] = {}
    for d in deps:
        addresses[d], private[d] = _addresses(instances, d)
    # A baked Image's recipe ran on the builder; its VMs run only the group's own userData.
    recipe = None if image.build is not None else recipe_to_cloud_config(image.recipe)
    ordinals = _free_ordinals({i.ordinal for i in mine}, len(chosen))
    out = []
    for ordinal, target in zip(ordinals, chosen, strict=True):
        name = instance_name(dep, group.name, ordinal)
        script = (
            render_template(
                group.user_data,
                deployment=dep,
                group=group.name,
                instance=name,
                allowed_groups=deps,
                addresses=addresses,
                private_addresses=private,
            )
            if group.user_data
            else None
        )
        user_data = combine(recipe, script)
        if user_data is not None and len(user_data) > MAX_USER_DATA:
            raise UserDataTooLarge(
                f"the image recipe plus userData come to {len(user_data)} characters; an Instance holds at most "
                f"{MAX_USER_DATA}"
            )
        cred = credentials.get(target.credential)
        provider = cred.provider if cred else ""
        explicit_type = (group.size.instance_types or {}).get(provider)
        spec = InstanceSpec(
            deployment=dep,
            group=group.name,
            credential=target.credential,
            region=target.region,
            zone=target.zone,
            image_ref=group.image_ref,
            image_id=boots[target.key].image_id if target.key in boots else None,
            instance_type=explicit_type,
            size=_instance_size(group.size, provider, explicit_type),
            user_data=user_data,
            template_hash=current_hash,
            drift_policy=group.drift_policy,
            login_user=image.login_user,
        )
        labels = {DEPLOYMENT_LABEL: dep, GROUP_LABEL: group.name, CREDENTIAL_LABEL: target.credential}
        out.append(NewInstance(name, labels, spec))
    return out


def _instance_size(size: Size, provider: str, explicit_type: str | None) -> Size | None:
    """The size an Instance records: cpu/memory/disk, or with an explicit type only the disk
    (which the type does not say) next to that one type."""
    if not explicit_type:
        return size.model_copy(update={"instance_types": None})
    if size.disk_gib is None:
        return None
    return Size(instance_types={provider: explicit_type}, disk_gib=size.disk_gib)


def _status(  # noqa: PLR0912, PLR0917 - condition table, private helper of plan_deployment
    old: DeploymentStatus,
    groups: Sequence[_GroupResult],
    gen: int | None,
    now: datetime,
    paused: bool,
    dep_error: str | None,
    plan: Plan,
) -> DeploymentStatus:
    problems = [g.problem for g in groups if g.problem]
    if dep_error:
        problems.insert(0, ("InvalidDependencies", dep_error))
    waiting = [g.waiting for g in groups if g.waiting]
    all_ready = all(
        g.status.ready_replicas == g.desired
        and g.status.updated_replicas == g.desired
        and g.status.replicas == g.desired
        for g in groups
    )
    busy = any(g.busy for g in groups)
    degraded = bool(problems) or any(g.degraded for g in groups)

    conds = list(old.conditions)
    if all_ready and not problems:
        conds = set_condition(conds, "Ready", True, "AllReplicasReady", "every VM is running", now=now, generation=gen)
    else:
        reason, message = (problems or waiting or [("ReplicasNotReady", "")])[0]
        if not message:
            not_ready = [
                g.status.name
                for g in groups
                if g.status.ready_replicas != g.desired or g.status.updated_replicas != g.desired
            ]
            message = f"groups not ready: {', '.join(not_ready)}"
        conds = set_condition(conds, "Ready", False, reason, message, now=now, generation=gen)
    if paused and not dep_error:
        conds = set_condition(conds, "Progressing", False, "Paused", "spec.paused is set", now=now, generation=gen)
    elif problems:
        conds = set_condition(conds, "Progressing", False, problems[0][0], problems[0][1], now=now, generation=gen)
    elif busy:
        reason = (
            "RollingUpdate" if any(g.status.updated_replicas < g.status.replicas for g in groups) else "Reconciling"
        )
        msg = waiting[0][1] if waiting else "VMs are being created, replaced or removed"
        conds = set_condition(
            conds, "Progressing", True, waiting[0][0] if waiting else reason, msg, now=now, generation=gen
        )
    else:
        conds = set_condition(conds, "Progressing", False, "Converged", "nothing left to do", now=now, generation=gen)
    if degraded:
        reason, message = problems[0] if problems else ("ProvisioningFailuresExceeded", "")
        conds = set_condition(conds, "Degraded", True, reason, message, now=now, generation=gen)
    else:
        conds = set_condition(conds, "Degraded", False, "AsExpected", "", now=now, generation=gen)

    if paused:
        phase = "Paused"
    elif degraded:
        phase = "Degraded"
    elif all_ready:
        phase = "Running"
    elif any(g.status.replicas for g in groups) or plan.creates:
        phase = "Provisioning"
    else:
        phase = "Pending"
    messages = [m for _, m in problems] + [m for _, m in waiting]
    return DeploymentStatus(
        observed_generation=gen,
        phase=phase,
        conditions=conds,
        replicas=sum(g.status.replicas for g in groups),
        ready_replicas=sum(g.status.ready_replicas for g in groups),
        groups=[g.status for g in groups],
        message="; ".join(messages)[:4096] or None,
    )


def refused_status(
    status: DeploymentStatus, reason: str, message: str, *, now: datetime, generation: int | None
) -> DeploymentStatus:
    """The plan's status after the API server refused to create an Instance (a ResourceQuota,
    an admission webhook): not Ready and not progressing, with the reason, until that changes."""
    conds = set_condition(status.conditions, "Ready", False, reason, message, now=now, generation=generation)
    conds = set_condition(conds, "Progressing", False, reason, message, now=now, generation=generation)
    conds = set_condition(conds, "Degraded", True, reason, message, now=now, generation=generation)
    return status.model_copy(update={"conditions": conds, "phase": "Degraded", "message": message})
