"""Shapes shared by every kind: the model base, names, conditions and CRD metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "skyfleet.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "skyfleet"

# RFC 1123 label: what a same-namespace reference to another object may look like.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Short strings that end up as tag values, provider names and such: bounded for CEL cost.
SHORT = 63
MEDIUM = 253
LONG = 4096


class Model(BaseModel):
    """Base for every API shape: camelCase on the wire, unknown fields ignored when reading."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=True,
        validate_default=True,
    )

    def to_api(self) -> dict[str, Any]:
        """What the API server should store: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def ref_name(description: str, **kwargs: Any) -> Any:
    """A same-namespace reference by name."""
    return Field(description=description, min_length=1, max_length=SHORT, pattern=DNS_SUBDOMAIN, **kwargs)


ObjectName = Annotated[str, Field(min_length=1, max_length=SHORT, pattern=DNS_SUBDOMAIN)]


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Model):
    """The metav1.Condition shape."""

    type: str = Field(
        description="Type of condition in CamelCase, e.g. Ready.",
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: datetime = Field(description="When the condition last changed from one status to another.")
    reason: str = Field(
        description="CamelCase reason for the last transition, for machines.",
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
    )
    message: str = Field(default="", description="Human readable details of the transition.", max_length=32768)


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        max_length=16,
        description="Current state in the standard Kubernetes condition shape; Ready is always present.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


def observed_generation_field() -> Any:
    return Field(default=None, ge=0, description="The .metadata.generation this status was computed from.")


class ObjectMeta(Model):
    """The part of metav1.ObjectMeta the operator reads."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: datetime | None = None
    creation_timestamp: datetime | None = None


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    description: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    """Paths of a /scale subresource (what kubectl scale, KEDA and an HPA use)."""

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str


@dataclass(frozen=True)
class CRDInfo:
    """What a kind needs besides its schema to become a CustomResourceDefinition."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    # CEL rules at the root of the object (metadata.name limits and such).
    root_validations: tuple[dict[str, str], ...] = field(default_factory=tuple)
    scale: ScaleSubresource | None = None


def ready_column() -> PrinterColumn:
    return PrinterColumn(
        "Ready",
        '.status.conditions[?(@.type=="Ready")].status',
        "Whether the object is ready (the status of its Ready condition).",
    )


def phase_column() -> PrinterColumn:
    return PrinterColumn("Phase", ".status.phase", "Short human-readable summary of the state.")


def age_column() -> PrinterColumn:
    return PrinterColumn("Age", ".metadata.creationTimestamp", "Time since the object was created.", "date")


class Resource(Model):
    """A whole object of one of our kinds."""

    crd: ClassVar[CRDInfo]

    api_version: Literal["skyfleet.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
