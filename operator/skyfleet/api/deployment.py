"""Deployment: a multi-tier application as node groups of VMs placed over cloud credentials."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from skyfleet.api.common import (
    DNS_LABEL,
    LONG,
    SHORT,
    Condition,
    CRDInfo,
    Model,
    PrinterColumn,
    Resource,
    age_column,
    conditions_field,
    observed_generation_field,
    phase_column,
    ready_column,
    ref_name,
)

# Instance names are "<deployment>-<group>-<ordinal>" and double as VM names, which several clouds cap
# at 63 characters: 40 + 1 + 16 + 1 + 5 = 63.
MAX_DEPLOYMENT_NAME = 40
MAX_GROUP_NAME = 16
MAX_GROUPS = 16
MAX_REPLICAS = 10000
# Characters of userData over all node groups. Each Instance copies its group's (plus the image
# recipe), and the whole Deployment must stay far below etcd's 1.5 MiB object limit.
MAX_TOTAL_USER_DATA = 65536

PlacementStrategy = Literal["Spread", "Ordered"]
DeletionPolicy = Literal["Delete", "Orphan"]
DriftPolicy = Literal["Recreate", "Report"]


class Size(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.instanceTypes) || (has(self.cpu) && has(self.memoryMiB))",
                    "message": "give cpu and memoryMiB, or instanceTypes",
                }
            ]
        }
    }

    cpu: int | None = Field(default=None, ge=1, le=1024, description="Virtual CPUs at least.")
    memory_mib: int | None = Field(
        default=None, alias="memoryMiB", ge=128, le=16 * 1024 * 1024, description="Memory in MiB at least."
    )
    disk_gib: int | None = Field(
        default=None,
        alias="diskGiB",
        ge=1,
        le=65536,
        description="Root disk in GiB at least: the root volume is made this large on EC2, GCE, Azure and "
        "OpenStack (never smaller than the image); on DigitalOcean and Linode, whose plans fix the disk, only "
        "plans with a disk this large are chosen.",
    )
    instance_types: dict[str, str] | None = Field(
        default=None,
        description="Explicit instance type per provider (e.g. ec2: t3.medium); wins over cpu/memory/disk "
        "on that provider.",
        max_length=16,
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": SHORT}},
    )


class PlacementTarget(Model):
    credential: str = ref_name("CloudCredential (same namespace) to place VMs with.")
    region: str | None = Field(default=None, description="Region; default: the credential's region.", max_length=SHORT)
    zone: str | None = Field(
        default=None, description="Availability zone; default: the cloud's choice.", max_length=SHORT
    )
    weight: int | None = Field(
        default=None, ge=0, le=1000, description="Share of VMs under the Spread strategy. Default: 1."
    )


class Placement(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.targets.exists(t, !has(t.weight) || t.weight > 0)",
                    "message": "at least one placement target needs a weight above 0 (weights default to 1)",
                    "fieldPath": ".targets",
                }
            ]
        }
    }

    strategy: PlacementStrategy | None = Field(
        default=None,
        description="Spread: weighted round-robin over targets. Ordered: fill the first target, fall back to "
        "the next on quota or capacity errors. Default: Spread.",
    )
    targets: list[PlacementTarget] = Field(description="Where VMs may go.", min_length=1, max_length=16)


class Rollout(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "(has(self.maxSurge) ? self.maxSurge : 1) + "
                    "(has(self.maxUnavailable) ? self.maxUnavailable : 0) > 0",
                    "message": "maxSurge and maxUnavailable cannot both be 0",
                }
            ]
        }
    }

    max_surge: int | None = Field(
        default=None, ge=0, le=MAX_REPLICAS, description="Extra VMs allowed during a rollout. Default: 1."
    )
    max_unavailable: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description="VMs that may be missing during a rollout. Default: 0.",
    )


class NodeGroup(Model):
    name: str = Field(
        description="Name of the group, unique in the Deployment; part of every Instance and VM name.",
        min_length=1,
        max_length=MAX_GROUP_NAME,
        pattern=DNS_LABEL,
    )
    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS, description="Number of VMs. Default: 1.")
    image_ref: str = ref_name("Image (same namespace) the VMs boot from.")
    size: Size = Field(description="How big each VM is.")
    placement: Placement = Field(description="Which clouds the VMs go to.")
    user_data: str | None = Field(
        default=None,
        description="User data template appended after the image recipe. '{{ groups.db.addresses }}' and "
        "'{{ groups.db.privateAddresses }}' expand to the addresses of another group (which must be listed in "
        "dependsOn); '{{ deployment }}', '{{ group }}' and '{{ instance }}' to names. Text between '{{ raw }}' "
        "and '{{ endraw }}' is passed through untouched (for literal braces, e.g. cloud-init's Jinja).",
        max_length=16384,
    )
    depends_on: list[str] | None = Field(
        default=None,
        description="Groups whose VMs must all be running before this group's VMs are created.",
        max_length=MAX_GROUPS,
        json_schema_extra={"items": {"type": "string", "maxLength": MAX_GROUP_NAME}},
    )
    max_provisioning_failures: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description="Failed VM creations tolerated in this group before it stops trying and reports Degraded. "
        "Default: 3.",
    )
    rollout: Rollout | None = Field(default=None, description="How size or image changes replace VMs.")
    drift_policy: DriftPolicy | None = Field(
        default=None,
        description="What to do when a VM disappears or stops out of band: Recreate it, or only Report it. "
        "Default: Recreate.",
    )


class DeploymentSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "self.nodeGroups.all(g, !has(g.dependsOn) || g.dependsOn.all(d, d != g.name && "
                    "self.nodeGroups.exists(o, o.name == d)))",
                    "message": "dependsOn must name other node groups of this Deployment",
                    "fieldPath": ".nodeGroups",
                },
                {
                    "rule": "self.nodeGroups.map(g, has(g.userData) ? size(g.userData) : 0).sum() <= "
                    f"{MAX_TOTAL_USER_DATA}",
                    "message": f"userData of all node groups together must be at most {MAX_TOTAL_USER_DATA} characters",
                    "fieldPath": ".nodeGroups",
                },
            ]
        }
    }

    node_groups: list[NodeGroup] = Field(
        description="The tiers of the application.",
        min_length=1,
        max_length=MAX_GROUPS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    deletion_policy: DeletionPolicy | None = Field(
        default=None,
        description="Delete: VMs are destroyed when the Deployment is deleted. Orphan: they keep running, "
        "untracked. Default: Delete.",
    )
    paused: bool | None = Field(default=None, description="Stop every action on this Deployment's VMs.")


class GroupStatus(Model):
    name: str = Field(description="Node group.", max_length=MAX_GROUP_NAME)
    replicas: int = Field(default=0, ge=0, description="Instances that exist.")
    ready_replicas: int = Field(default=0, ge=0, description="Instances whose VM is running.")
    updated_replicas: int = Field(default=0, ge=0, description="Instances with the current size and image.")
    failed_provisions: int = Field(default=0, ge=0, description="VM creations that failed.")
    unavailable_targets: list[str] | None = Field(
        default=None,
        description="Placement targets (credential/region) that answered a quota or capacity error; skipped "
        "until the group has all its replicas.",
        max_length=16,
        json_schema_extra={"items": {"type": "string", "maxLength": 2 * SHORT + 1}},
    )
    desired_replicas: int | None = Field(
        default=None,
        ge=0,
        description="Replicas the group runs with when a ScalingPolicy governs it (its decision, not the spec's).",
    )
    scaling_policy: str | None = Field(
        default=None, description="ScalingPolicy that governs the group's replicas and size.", max_length=SHORT
    )


class DeploymentStatus(Model):
    observed_generation: int | None = observed_generation_field()
    phase: str | None = Field(
        default=None,
        description="Pending, Provisioning, Running, Degraded, Paused or Deleting.",
        max_length=SHORT,
    )
    conditions: list[Condition] = conditions_field()
    replicas: int | None = Field(default=None, ge=0, description="Instances over all groups.")
    ready_replicas: int | None = Field(default=None, ge=0, description="Running Instances over all groups.")
    groups: list[GroupStatus] | None = Field(
        default=None,
        description="Counts per node group.",
        max_length=MAX_GROUPS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    message: str | None = Field(default=None, description="What needs attention.", max_length=LONG)


class Deployment(Resource):
    """A multi-tier application run as node groups of VMs placed over cloud credentials."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        kind="Deployment",
        plural="deployments",
        singular="deployment",
        short_names=("sfdeploy", "sfd"),
        printer_columns=(
            ready_column(),
            phase_column(),
            PrinterColumn("Replicas", ".status.replicas", "Instances over all node groups.", "integer"),
            PrinterColumn("Ready-Replicas", ".status.readyReplicas", "Running Instances over all groups.", "integer"),
            age_column(),
        ),
        root_validations=(
            {
                "rule": f"self.metadata.name.size() <= {MAX_DEPLOYMENT_NAME} && "
                f"self.metadata.name.matches('{DNS_LABEL}')",
                "message": f"metadata.name must be a DNS label of at most {MAX_DEPLOYMENT_NAME} characters "
                "(it prefixes every VM name)",
            },
        ),
    )

    kind: str = "Deployment"
    spec: DeploymentSpec = Field(description="The application's node groups and how to run them.")
    status: DeploymentStatus | None = Field(default=None, description="Observed state, written by Skyfleet.")
