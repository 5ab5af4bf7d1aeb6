"""Image: an abstract machine image with per-cloud ids or lookup rules and a cloud-init recipe."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from skyfleet.api.common import (
    LONG,
    MEDIUM,
    SHORT,
    Condition,
    CRDInfo,
    Model,
    Resource,
    age_column,
    conditions_field,
    observed_generation_field,
    phase_column,
    ready_column,
    ref_name,
)
from skyfleet.api.deployment import Size


class ImageLookup(Model):
    name_pattern: str = Field(
        description="Shell-style pattern matched against image names (e.g. 'debian-12-amd64-*'); "
        "the newest match wins.",
        min_length=1,
        max_length=MEDIUM,
    )
    owner: str | None = Field(
        default=None,
        description="Only images published by this account (an AWS account id, 'self' or 'amazon'). "
        "Clouds that offer every public image to a lookup (EC2) refuse a lookup without owner, since "
        "anyone can publish an image with a familiar name; '*' accepts any publisher, knowingly.",
        max_length=SHORT,
        pattern=r"^(\*|[A-Za-z0-9][-A-Za-z0-9_.]*)$",
    )


class ImageSource(Model):
    """Where the image comes from on one cloud."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.credential) != has(self.provider)",
                    "message": "exactly one of credential or provider must be set",
                },
                {
                    "rule": "has(self.id) != has(self.lookup)",
                    "message": "exactly one of id or lookup must be set",
                },
            ]
        }
    }

    credential: str | None = Field(
        default=None,
        description="CloudCredential this entry is for. Either credential or provider is set.",
        min_length=1,
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    provider: str | None = Field(
        default=None,
        description="Provider this entry is for, on every credential of that provider.",
        min_length=1,
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
    )
    region: str | None = Field(
        default=None, description="Region this entry is for. Default: every region.", max_length=SHORT
    )
    id: str | None = Field(default=None, description="Native image id (e.g. ami-0abc...).", max_length=MEDIUM)
    lookup: ImageLookup | None = Field(default=None, description="Find the image by name instead of by id.")


class RecipeFile(Model):
    path: str = Field(description="Absolute path on the VM.", max_length=MEDIUM, pattern=r"^/.*$")
    content: str = Field(description="File content.", max_length=65536)
    permissions: str | None = Field(
        default=None, description="Octal mode, e.g. '0644'.", max_length=4, pattern=r"^0?[0-7]{3}$"
    )


class Recipe(Model):
    packages: list[str] | None = Field(
        default=None,
        description="Packages to install at first boot.",
        max_length=256,
        json_schema_extra={"items": {"type": "string", "maxLength": SHORT * 2}},
    )
    files: list[RecipeFile] | None = Field(default=None, description="Files to write at first boot.", max_length=64)
    scripts: list[str] | None = Field(
        default=None,
        description="Shell scripts run in order at first boot, after packages and files.",
        max_length=32,
        json_schema_extra={"items": {"type": "string", "maxLength": 65536}},
    )


# -- baking: spec.build and what status records of it ----------------------------------------
MAX_KEEP = 5
MAX_BAKE_TARGETS = 32
MAX_TIMEOUT_SECONDS = 6 * 3600
BakePhase = Literal["Launching", "Provisioning", "Snapshotting", "Available", "Failed"]
ImageDeletionPolicy = Literal["Delete", "Orphan"]


class BuilderCloud(Model):
    """Where the builder VM goes on one cloud, when the cloud's default is not right."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.credential) != has(self.provider)",
                    "message": "exactly one of credential or provider must be set",
                },
            ]
        }
    }

    credential: str | None = Field(
        default=None,
        description="CloudCredential this entry is for. Either credential or provider is set.",
        min_length=1,
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
    )
    provider: str | None = Field(
        default=None,
        description="Provider this entry is for, on every credential of that provider.",
        min_length=1,
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
    )
    region: str | None = Field(
        default=None, description="Region this entry is for. Default: every region.", max_length=SHORT
    )
    zone: str | None = Field(default=None, description="Availability zone of the builder VM.", max_length=SHORT)
    subnet: str | None = Field(
        default=None, description="Subnet (or network) id the builder VM is attached to.", max_length=MEDIUM
    )


class Builder(Model):
    size: Size = Field(description="How big the builder VM is (it runs the recipe once, then powers off).")
    timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        le=MAX_TIMEOUT_SECONDS,
        description="How long the builder may take to run the recipe and power off before the bake fails with "
        "BuildTimeout. Default: 1800.",
    )
    snapshot_timeout_seconds: int | None = Field(
        default=None,
        ge=60,
        le=MAX_TIMEOUT_SECONDS,
        description="How long the baked image may stay pending after it was requested before the bake fails "
        "with SnapshotFailed (the builder is deleted and the partial image deregistered). Default: 3600.",
    )
    clouds: list[BuilderCloud] | None = Field(
        default=None, description="Per-cloud zone or subnet for the builder VM.", max_length=64
    )


class ImageBuild(Model):
    builder: Builder = Field(description="The temporary VM the recipe runs on; deleted after every bake.")
    keep: int | None = Field(
        default=None,
        ge=1,
        le=MAX_KEEP,
        description="Baked generations kept per cloud and region; older ones no Instance uses are deregistered "
        "with their snapshots. Default: 2.",
    )
    copy_to_regions: list[str] | None = Field(
        default=None,
        description="Further regions of the same credentials to copy each baked image to, where the provider "
        "copies images between regions (EC2).",
        max_length=16,
        json_schema_extra={"items": {"type": "string", "maxLength": SHORT}},
    )
    share_with: list[str] | None = Field(
        default=None,
        description="Accounts allowed to launch the baked images, where the provider shares images (EC2 account ids).",
        max_length=32,
        json_schema_extra={"items": {"type": "string", "maxLength": SHORT}},
    )
    deletion_policy: ImageDeletionPolicy | None = Field(
        default=None,
        description="Delete: baked images are deregistered when the Image is deleted, once no Instance uses "
        "them. Orphan: they stay in the cloud. Default: Delete.",
    )


class BakeTarget(Model):
    """The bake of one credential and region: enough to resume it after a restart."""

    credential: str = Field(description="CloudCredential name.", max_length=SHORT)
    region: str = Field(description="Region.", max_length=SHORT)
    phase: BakePhase = Field(description="Launching, Provisioning, Snapshotting, Available or Failed.")
    bake_key: str = Field(
        description="Hash of the recipe, the base image's native id and the builder settings.", max_length=64
    )
    attempt: int = Field(default=0, ge=0, le=1000, description="Builders launched for this bake key so far.")
    source_region: str | None = Field(
        default=None, description="Set on copies: the region the image is copied from.", max_length=SHORT
    )
    builder_id: str | None = Field(default=None, description="Provider id of the builder VM.", max_length=MEDIUM)
    image_id: str | None = Field(default=None, description="Native id of the baked image.", max_length=MEDIUM)
    started_at: datetime | None = Field(default=None, description="When this bake began.")
    snapshot_started_at: datetime | None = Field(default=None, description="When the image was requested.")
    finished_at: datetime | None = Field(default=None, description="When the bake became Available or Failed.")
    reason: str | None = Field(
        default=None,
        description="CamelCase reason of a failed bake, e.g. BuildTimeout.",
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9]*$",
    )
    message: str | None = Field(default=None, description="What went wrong, for humans.", max_length=1024)
    shared_with: list[str] | None = Field(
        default=None,
        description="Accounts the image is shared with so far (build.shareWith); sharing is retried until it "
        "covers every account.",
        max_length=32,
        json_schema_extra={"items": {"type": "string", "maxLength": SHORT}},
    )


class BakedGeneration(Model):
    credential: str = Field(description="CloudCredential name.", max_length=SHORT)
    region: str = Field(description="Region.", max_length=SHORT)
    bake_key: str = Field(description="Bake key of this generation.", max_length=64)
    image_id: str = Field(description="Native image id.", max_length=MEDIUM)
    created_at: datetime | None = Field(default=None, description="When it became available.")


# -- end of baking ----------------------------------------------------------------------------


class ImageSpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.parent) || (has(self.clouds) && size(self.clouds) > 0)",
                    "message": "an Image needs clouds or a parent to inherit them from",
                    "fieldPath": ".clouds",
                }
            ]
        }
    }

    parent: str | None = ref_name(
        "Image in the same namespace to inherit clouds, login user and recipe from; "
        "this Image's entries come first and its recipe runs after the parent's.",
        default=None,
    )
    login_user: str | None = Field(
        default=None,
        description="User to log in as over SSH; each Instance made from this Image shows it (spec.loginUser, "
        "kubectl get instances.skyfleet.io -o wide). Inherited from the parent when unset.",
        max_length=SHORT,
    )
    clouds: list[ImageSource] | None = Field(
        default=None, description="Per-cloud native ids or lookup rules.", max_length=64
    )
    recipe: Recipe | None = Field(default=None, description="What to install and run at first boot (cloud-init).")
    build: ImageBuild | None = Field(
        default=None,
        description="Bake the recipe into a native image per cloud and region the Image is used in, and boot "
        "VMs from it instead of running the recipe at every boot.",
    )


class ResolvedImage(Model):
    credential: str = Field(description="CloudCredential name.", max_length=SHORT)
    region: str = Field(description="Region.", max_length=SHORT)
    id: str = Field(description="Native image id.", max_length=MEDIUM)
    name: str | None = Field(default=None, description="Image name as the cloud reports it.", max_length=MEDIUM)
    bake_key: str | None = Field(
        default=None, description="Set when the id is a baked image: the bake key it was made for.", max_length=64
    )


class ImageStatus(Model):
    observed_generation: int | None = observed_generation_field()
    phase: str | None = Field(default=None, description="Resolved, Unresolved or Pending.", max_length=SHORT)
    conditions: list[Condition] = conditions_field()
    resolved: list[ResolvedImage] | None = Field(
        default=None, description="Native ids per credential and region in use.", max_length=256
    )
    message: str | None = Field(default=None, description="Why an id could not be resolved.", max_length=LONG)
    bakes: list[BakeTarget] | None = Field(
        default=None,
        description="The current bake per credential and region (spec.build).",
        max_length=MAX_BAKE_TARGETS,
    )
    generations: list[BakedGeneration] | None = Field(
        default=None,
        description="Baked images that exist per credential and region, current one included.",
        max_length=MAX_BAKE_TARGETS * (MAX_KEEP + 2),
    )


class Image(Resource):
    """An abstract machine image: native ids or lookup rules per cloud, and a first-boot recipe."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        kind="Image",
        plural="images",
        singular="image",
        short_names=("sfimage", "sfimg"),
        printer_columns=(ready_column(), phase_column(), age_column()),
    )

    kind: str = "Image"
    spec: ImageSpec = Field(description="The image on each cloud and what to set up at first boot.")
    status: ImageStatus | None = Field(default=None, description="Observed state, written by Skyfleet.")
