"""Image: an abstract machine image with per-cloud ids or lookup rules and a cloud-init recipe."""

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
    Resource,
    age_column,
    conditions_field,
    observed_generation_field,
    phase_column,
    ready_column,
    ref_name,
)


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
    login_user: str | None = Field(default=None, description="User to log in as over SSH.", max_length=SHORT)
    clouds: list[ImageSource] | None = Field(
        default=None, description="Per-cloud native ids or lookup rules.", max_length=64
    )
    recipe: Recipe | None = Field(default=None, description="What to install and run at first boot (cloud-init).")


class ResolvedImage(Model):
    credential: str = Field(description="CloudCredential name.", max_length=SHORT)
    region: str = Field(description="Region.", max_length=SHORT)
    id: str = Field(description="Native image id.", max_length=MEDIUM)
    name: str | None = Field(default=None, description="Image name as the cloud reports it.", max_length=MEDIUM)


class ImageStatus(Model):
    observed_generation: int | None = observed_generation_field()
    phase: str | None = Field(default=None, description="Resolved, Unresolved or Pending.", max_length=SHORT)
    conditions: list[Condition] = conditions_field()
    resolved: list[ResolvedImage] | None = Field(
        default=None, description="Native ids per credential and region in use.", max_length=256
    )
    message: str | None = Field(default=None, description="Why an id could not be resolved.", max_length=LONG)


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
