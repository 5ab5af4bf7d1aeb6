"""Instance: one VM of one node group, written by the operator before the cloud is called."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from skyfleet.api.common import (
    LONG,
    MEDIUM,
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
from skyfleet.api.deployment import MAX_GROUP_NAME, DriftPolicy, Size

# Characters of rendered user data (image recipe plus the group's userData) one Instance holds.
MAX_USER_DATA = 65536


# Every spec field but driftPolicy (the Deployment updates that in place: a policy change
# replaces no VM). tests/unit/test_instance_drift_policy.py checks the lists cover the model.
FIXED_FIELDS = ("deployment", "group", "credential", "imageRef", "templateHash")
FIXED_OPTIONAL_FIELDS = ("region", "zone", "imageId", "instanceType", "size", "userData", "loginUser")
IMMUTABLE_RULE = " && ".join(
    [f"self.{f} == oldSelf.{f}" for f in FIXED_FIELDS]
    + [
        f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
        for f in FIXED_OPTIONAL_FIELDS
    ]
)


class InstanceSpec(Model):
    """The record of intent. Immutable but for driftPolicy: a different VM is a different Instance."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": IMMUTABLE_RULE, "message": "an Instance's spec is immutable (but for driftPolicy)"}
            ]
        }
    }

    deployment: str = ref_name("Deployment this Instance belongs to.")
    group: str = Field(description="Node group of the Deployment.", max_length=MAX_GROUP_NAME)
    credential: str = ref_name("CloudCredential the VM is created with.")
    region: str | None = Field(default=None, description="Region of the VM.", max_length=SHORT)
    zone: str | None = Field(default=None, description="Availability zone of the VM.", max_length=SHORT)
    image_ref: str = ref_name("Image the VM boots from.")
    image_id: str | None = Field(
        default=None,
        description="Native image id the VM boots, resolved for its target when the Instance was made (unset: "
        "resolved at create, see status.imageId).",
        max_length=MEDIUM,
    )
    instance_type: str | None = Field(default=None, description="Native size, once resolved.", max_length=SHORT)
    size: Size | None = Field(default=None, description="Size of the VM when no native size is given.")
    user_data: str | None = Field(
        default=None, description="Rendered user data (cloud-init).", max_length=MAX_USER_DATA
    )
    template_hash: str = Field(
        description="Hash of the node group's size and image this Instance was made from; rollouts replace "
        "Instances whose hash is not the group's current one.",
        max_length=SHORT,
    )
    drift_policy: DriftPolicy | None = Field(
        default=None,
        description="Recreate or Report a VM that vanished or stopped outside Skyfleet (unset: Recreate). "
        "Kept equal to the node group's driftPolicy in place, without replacing the VM.",
    )
    login_user: str | None = Field(
        default=None,
        description="User to log in as over SSH (the Image's loginUser, or its parent's, when the Instance was made): "
        "ssh <loginUser>@<status.address>.",
        max_length=SHORT,
    )


class Addresses(Model):
    public: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Public IP addresses.",
        json_schema_extra={"items": {"type": "string", "maxLength": 64}},
    )
    private: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Private IP addresses.",
        json_schema_extra={"items": {"type": "string", "maxLength": 64}},
    )


class InstanceStatus(Model):
    observed_generation: int | None = observed_generation_field()
    phase: str | None = Field(
        default=None,
        description="Pending, Creating, Running, Stopped, Lost, Failed or Deleting.",
        max_length=SHORT,
    )
    conditions: list[Condition] = conditions_field()
    provider: str | None = Field(default=None, description="Cloud provider of the VM.", max_length=SHORT)
    provider_id: str | None = Field(default=None, description="The VM's id in the cloud.", max_length=MEDIUM)
    address: str | None = Field(
        default=None,
        description="Preferred address: the first public one, else the first private one.",
        max_length=64,
    )
    addresses: Addresses | None = Field(default=None, description="All addresses of the VM.")
    instance_type: str | None = Field(default=None, description="Size the VM runs with.", max_length=SHORT)
    image_id: str | None = Field(default=None, description="Image the VM runs.", max_length=MEDIUM)
    provisioning_failures: int | None = Field(default=None, ge=0, description="Failed creation attempts.")
    message: str | None = Field(default=None, description="Last error, if any.", max_length=LONG)


class Instance(Resource):
    """One VM of one node group, recorded by Skyfleet before the cloud is called."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        kind="Instance",
        plural="instances",
        singular="instance",
        short_names=("sfinstance", "sfi"),
        printer_columns=(
            PrinterColumn("Group", ".spec.group", "Node group of the Deployment."),
            PrinterColumn("Credential", ".spec.credential", "CloudCredential the VM lives on."),
            PrinterColumn("Provider", ".status.provider", "Cloud provider."),
            PrinterColumn("Address", ".status.address", "Preferred IP address of the VM."),
            PrinterColumn("Login", ".spec.loginUser", "User to log in as over SSH.", priority=1),
            ready_column(),
            phase_column(),
            PrinterColumn("Provider-ID", ".status.providerId", "The VM's id in the cloud.", priority=1),
            age_column(),
        ),
    )

    kind: str = "Instance"
    spec: InstanceSpec = Field(description="What VM to run (written by Skyfleet, immutable).")
    status: InstanceStatus | None = Field(default=None, description="Observed state, written by Skyfleet.")
