"""Compact, immutable views of cluster objects that decisions are made from.

The handlers build these from watch events; keeping only what decisions need is what lets one
operator hold 10,000 Instances in memory, and makes the decisions testable from plain literals.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime

from skyfleet.api.common import ConditionStatus
from skyfleet.api.deployment import Deployment, Size
from skyfleet.api.instance import Instance
from skyfleet.reconcile.conditions import find_condition

__all__ = [
    "CREDENTIAL_LABEL",
    "DELETE_ANNOTATION",
    "DEPLOYMENT_LABEL",
    "GROUP_LABEL",
    "ORPHAN_ANNOTATION",
    "CredentialView",
    "DeploymentView",
    "GroupView",
    "InstanceView",
    "deployment_view",
    "instance_view",
    "interned",
]

DEPLOYMENT_LABEL = "skyfleet.io/deployment"
GROUP_LABEL = "skyfleet.io/group"
CREDENTIAL_LABEL = "skyfleet.io/credential"
# Set by users on an Instance to make it the first victim of the next scale-down.
DELETE_ANNOTATION = "skyfleet.io/delete"
# Set by the operator on Instances of a Deployment deleted with deletionPolicy Orphan: the
# Instance goes away, its VM stays.
ORPHAN_ANNOTATION = "skyfleet.io/orphan"


# Slots: no per-object __dict__ (about 100 bytes less for each of 10,000 views).
@dataclass(frozen=True, slots=True)
class InstanceView:
    name: str
    group: str
    credential: str
    region: str | None = None
    template_hash: str = ""
    uid: str = ""
    phase: str | None = None
    ready: bool = False
    # Reason of the Ready condition when the Instance failed: decides fallback and budgets.
    reason: str | None = None
    message: str | None = None
    created: datetime | None = None
    deleting: bool = False
    delete_requested: bool = False
    address: str | None = None
    private_address: str | None = None
    # The native image recorded in the spec before the create (None: resolved at create). Not
    # status.imageId: the cloud's listing may spell the same image otherwise (a URL, a slug).
    image_id: str | None = None
    # The Instance's own spec.driftPolicy (None: Recreate): decides what a lost VM brings.
    drift_policy: str | None = None

    @property
    def ordinal(self) -> int:
        tail = self.name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else -1

    @property
    def failed(self) -> bool:
        return self.phase == "Failed"


@dataclass(frozen=True, slots=True)
class CredentialView:
    name: str
    provider: str = ""
    region: str | None = None
    ready: bool = False
    max_instances: int | None = None
    # Instances (of any Deployment in the namespace) that already use this credential.
    in_use: int = 0
    # Not verified yet (no Ready condition, or Unknown): Ordered placement waits for it.
    pending: bool = False


def instance_view(obj: Instance) -> InstanceView:
    status = obj.status
    conditions = status.conditions if status else []
    ready = find_condition(conditions, "Ready")
    addresses = status.addresses if status else None
    return InstanceView(
        name=obj.metadata.name,
        uid=obj.metadata.uid,
        # Interned: what 10,000 views share (a fleet has a handful of groups, credentials,
        # regions, templates, phases and reasons) is then held once, not once per Instance.
        group=sys.intern(obj.spec.group),
        credential=sys.intern(obj.spec.credential),
        region=interned(obj.spec.region),
        template_hash=sys.intern(obj.spec.template_hash),
        phase=interned(status.phase) if status else None,
        ready=ready is not None and ready.status == ConditionStatus.TRUE,
        reason=interned(ready.reason) if ready is not None else None,
        message=interned(ready.message) if ready is not None else None,
        created=obj.metadata.creation_timestamp,
        deleting=obj.metadata.deletion_timestamp is not None,
        delete_requested=obj.metadata.annotations.get(DELETE_ANNOTATION, "").lower() not in ("", "false", "0"),
        address=status.address if status else None,
        private_address=addresses.private[0] if addresses and addresses.private else None,
        image_id=interned(obj.spec.image_id),
        drift_policy=interned(obj.spec.drift_policy),
    )


@dataclass(frozen=True, slots=True)
class GroupView:
    """What is read of a node group from the ``deployments`` index: which Image it boots and
    where (Image resolution and bakes, credential wake-ups), and its replicas and size (the
    ScalingPolicy governing it). Not its user data, rollout or health settings."""

    name: str
    image_ref: str
    # (credential, region) of each placement target, region None for the credential's own.
    targets: tuple[tuple[str, str | None], ...]
    replicas: int | None
    size: Size


@dataclass(frozen=True, slots=True)
class DeploymentView:
    """A Deployment as the ``deployments`` index keeps it (see GroupView). The whole validated
    model was about 12 KiB per Deployment; its own loop reads the watched body, not the index."""

    name: str
    groups: tuple[GroupView, ...]

    def uses_credential(self, credential: str) -> bool:
        return any(c == credential for g in self.groups for c, _ in g.targets)


def deployment_view(dep: Deployment) -> DeploymentView:
    return DeploymentView(
        name=dep.metadata.name,
        groups=tuple(
            GroupView(
                name=sys.intern(g.name),
                image_ref=sys.intern(g.image_ref),
                targets=tuple((sys.intern(t.credential), interned(t.region)) for t in g.placement.targets),
                replicas=g.replicas,
                size=g.size,
            )
            for g in dep.spec.node_groups
        ),
    )


def interned(value: str | None) -> str | None:
    """``value`` as the one shared copy of that string (None and "" as they are)."""
    return sys.intern(value) if value else value
