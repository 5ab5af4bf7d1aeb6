"""ScalingPolicy: elastic constraints for one node group, evaluated over live Prometheus metrics.

The policy never writes the Deployment: the group's effective replicas and size live in the
policy's status, and the Deployment's reconcile reads them from there. With a ``/scale``
subresource, ``kubectl scale``, KEDA or an HPA can drive the group through a policy that has no
metric rules of its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from skyfleet.api.common import (
    DNS_LABEL,
    LONG,
    MEDIUM,
    SHORT,
    Condition,
    CRDInfo,
    Model,
    PrinterColumn,
    Resource,
    ScaleSubresource,
    age_column,
    conditions_field,
    observed_generation_field,
    ready_column,
    ref_name,
)
from skyfleet.api.deployment import MAX_DEPLOYMENT_NAME, MAX_GROUP_NAME, MAX_REPLICAS, Size

MAX_RULES = 8
MAX_RUNGS = 8
MAX_WINDOW_SECONDS = 3600  # as HPA's stabilizationWindowSeconds
MAX_PERIOD_SECONDS = 1800  # as HPA's periodSeconds
MAX_COOLDOWN_SECONDS = 86400
MAX_FOR = "1h"

# Defaults, applied in code (never stored, so Git and the cluster agree).
DEFAULT_MIN_REPLICAS = 1
DEFAULT_TOLERANCE = 0.1
DEFAULT_SCALE_UP_WINDOW_SECONDS = 0
DEFAULT_SCALE_DOWN_WINDOW_SECONDS = 300
DEFAULT_PERIOD_SECONDS = 60
DEFAULT_VERTICAL_COOLDOWN_SECONDS = 300
DEFAULT_STEP = 1
DEFAULT_TOKEN_KEY = "token"  # noqa: S105 - the name of a key in a Secret, not a secret

# Go-style durations of whole hours, minutes and seconds: "90s", "2m", "1h30m". Empty is not one.
DURATION = r"^(([0-9]{1,2}h)?([0-9]{1,4}m)?([0-9]{1,6}s)?)$"

ConstraintAction = Literal["ScaleOut", "ScaleIn", "SizeUp", "SizeDown"]
HORIZONTAL_ACTIONS = ("ScaleOut", "ScaleIn")
VERTICAL_ACTIONS = ("SizeUp", "SizeDown")


def parse_duration(text: str) -> float:
    """Seconds in a duration of the DURATION shape ("1h30m" is 5400.0)."""
    seconds, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
            continue
        seconds += int(number) * {"h": 3600, "m": 60, "s": 1}[char]
        number = ""
    if number:
        raise ValueError(f"duration {text!r} lacks a unit (h, m or s)")
    return float(seconds)


class ScalingTarget(Model):
    """The node group a policy governs. Immutable: a policy for another group is another policy."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "is immutable: create a new ScalingPolicy instead"}
            ]
        }
    }

    deployment: str = Field(
        description="Deployment (deployments.skyfleet.io) in the same namespace.",
        min_length=1,
        max_length=MAX_DEPLOYMENT_NAME,
        pattern=DNS_LABEL,
    )
    group: str = Field(
        description="Node group of that Deployment.", min_length=1, max_length=MAX_GROUP_NAME, pattern=DNS_LABEL
    )


class MetricTarget(Model):
    """HPA style: keep the metric near a target by changing the replica count proportionally."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.value) != has(self.averageValue)",
                    "message": "give exactly one of value or averageValue",
                }
            ]
        }
    }

    value: float | None = Field(
        default=None,
        gt=0,
        description="Target for the query's value over the whole group: desired = ceil(current replicas x "
        "value seen / this).",
    )
    average_value: float | None = Field(
        default=None,
        gt=0,
        description="Target per replica for a query that measures the whole group (e.g. requests per second "
        "over all VMs): desired = ceil(value seen / this).",
    )
    tolerance: float | None = Field(
        default=None,
        ge=0,
        lt=1,
        description="Relative distance from the target inside which nothing changes. Default: 0.1 (10%).",
    )


class MetricConstraint(Model):
    """SlipStream/CELAR style: when the value crosses a threshold (for the rule's `for`), take an action."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "has(self.above) != has(self.below)", "message": "give exactly one of above or below"},
                {
                    "rule": "!has(self.step) || self.action == 'ScaleOut' || self.action == 'ScaleIn'",
                    "message": "step applies to ScaleOut and ScaleIn only",
                },
            ]
        }
    }

    above: float | None = Field(default=None, description="The constraint holds while the value is above this.")
    below: float | None = Field(default=None, description="The constraint holds while the value is below this.")
    action: ConstraintAction = Field(
        description="ScaleOut/ScaleIn: add/remove `step` replicas. SizeUp/SizeDown: move one rung up/down "
        "the vertical ladder."
    )
    step: int | None = Field(
        default=None, ge=1, le=MAX_REPLICAS, description="Replicas added or removed per action. Default: 1."
    )


class MetricRule(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.target) != has(self.constraint)",
                    "message": "give exactly one of target or constraint",
                },
            ]
        }
    }

    name: str = Field(
        description="Name of the rule, unique in the policy; status reports its last value under it.",
        min_length=1,
        max_length=SHORT,
        pattern=DNS_LABEL,
    )
    query: str = Field(
        description="PromQL evaluated at each evaluation. It must return a scalar or a vector of exactly one "
        "sample; several series or none are reported in status, never guessed from. Sent to the operator's "
        'Prometheus, every selector is confined to namespace="<this namespace>" (another namespace, or a '
        "regex or negative match on the label, is refused as QueryNotScoped).",
        min_length=1,
        max_length=LONG,
    )
    target: MetricTarget | None = Field(default=None, description="Keep the value near a target (HPA style).")
    constraint: MetricConstraint | None = Field(
        default=None, description="Act when the value crosses a threshold (SlipStream style)."
    )
    for_: str | None = Field(
        default=None,
        alias="for",
        description="How long the constraint (or the target's deviation beyond its tolerance) must hold "
        "before it counts, as a duration such as 90s, 2m or 1h. At most 1h. Default: 0s.",
        min_length=2,
        max_length=16,
        pattern=DURATION,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": f"duration(self) <= duration('{MAX_FOR}')", "message": f"must be at most {MAX_FOR}"}
            ]
        },
    )

    @property
    def for_seconds(self) -> float:
        return parse_duration(self.for_) if self.for_ else 0.0


class SecretKeyRef(Model):
    name: str = ref_name("Secret in the policy's namespace, read by name when the policy is evaluated.")
    key: str | None = Field(
        default=None,
        description="Key of the Secret's data holding the bearer token. Default: token.",
        min_length=1,
        max_length=MEDIUM,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


class PrometheusSource(Model):
    url: str = Field(
        description="Base URL of the Prometheus HTTP API (the part before /api/v1/query), overriding the "
        "operator's --prometheus-url. TLS certificates are verified. Queries go unchanged, unless the URL names "
        "the operator's own Prometheus (same host and port): then they are confined to this namespace too.",
        max_length=MEDIUM,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
    )
    bearer_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding a bearer token sent with every query."
    )


class Vertical(Model):
    sizes: list[Size] = Field(
        description="The size ladder, smallest first. The group's effective size is one rung of it; SizeUp and "
        "SizeDown move one rung, and the group's rollout replaces its VMs.",
        min_length=2,
        max_length=MAX_RUNGS,
    )


class DirectionBehavior(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {"rule": "!has(self.periodSeconds) || has(self.maxStep)", "message": "periodSeconds needs maxStep"}
            ]
        }
    }

    stabilization_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WINDOW_SECONDS,
        description="Recommendations of this long are considered: scaling up takes the lowest of them, "
        "scaling down the highest, so a noisy signal does not flap. Default: 0 up, 300 down.",
    )
    max_step: int | None = Field(
        default=None,
        ge=1,
        le=MAX_REPLICAS,
        description="Most replicas added (or removed) within periodSeconds. Default: no limit.",
    )
    period_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PERIOD_SECONDS,
        description="The period maxStep applies to. Default: 60.",
    )


class Behavior(Model):
    scale_up: DirectionBehavior | None = Field(default=None, description="How fast replicas are added.")
    scale_down: DirectionBehavior | None = Field(default=None, description="How fast replicas are removed.")
    vertical_cooldown_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COOLDOWN_SECONDS,
        description="After a size change, no further size change and no scale-in for this long (the rollout "
        "settles and the metrics catch up); scale-out stays allowed. Default: 300.",
    )


class ScalingPolicySpec(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
                    "message": "minReplicas must not exceed maxReplicas",
                },
                {
                    "rule": "has(self.vertical) || !has(self.metrics) || !self.metrics.exists(m, "
                    "has(m.constraint) && (m.constraint.action == 'SizeUp' || m.constraint.action == 'SizeDown'))",
                    "message": "SizeUp and SizeDown need vertical.sizes",
                    "fieldPath": ".metrics",
                },
            ]
        }
    }

    target: ScalingTarget = Field(description="The node group this policy governs.")
    min_replicas: int | None = Field(
        default=None, ge=0, le=MAX_REPLICAS, description="Fewest replicas; 0 allows scaling to zero. Default: 1."
    )
    max_replicas: int = Field(ge=1, le=MAX_REPLICAS, description="Most replicas.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=MAX_REPLICAS,
        description="Replicas wanted by whoever scales this policy (kubectl scale, KEDA, an HPA through /scale). "
        "Followed, within minReplicas and maxReplicas, when the policy has no metric rules; ignored otherwise.",
    )
    metrics: list[MetricRule] | None = Field(
        default=None,
        description="Rules over Prometheus queries. Targets: the largest desired count wins. Constraints: add "
        "or remove replicas, or move a rung.",
        max_length=MAX_RULES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    prometheus: PrometheusSource | None = Field(
        default=None, description="Where the queries go. Default: the operator's --prometheus-url."
    )
    vertical: Vertical | None = Field(default=None, description="Sizes the group may move between.")
    behavior: Behavior | None = Field(default=None, description="How fast and how eagerly the group changes.")

    @property
    def effective_min_replicas(self) -> int:
        return DEFAULT_MIN_REPLICAS if self.min_replicas is None else self.min_replicas


class RuleStatus(Model):
    name: str = Field(description="The rule.", max_length=SHORT)
    value: float | None = Field(default=None, description="Last value the query returned.")
    timestamp: datetime | None = Field(default=None, description="When that value was read.")
    reason: str | None = Field(
        default=None,
        description="Why there is no usable value: MetricUnavailable, QueryInvalid, QueryNotScoped or NoData.",
        max_length=SHORT,
    )


class ScalingDecision(Model):
    time: datetime = Field(description="When the decision was taken.")
    previous_replicas: int | None = Field(default=None, ge=0, description="Replicas before the decision.")
    replicas: int = Field(ge=0, description="Replicas decided.")
    previous_rung: int | None = Field(default=None, ge=0, description="Rung before the decision.")
    rung: int | None = Field(default=None, ge=0, description="Rung decided.")
    reason: str = Field(description="CamelCase reason, e.g. AboveTarget or ScaleDownStabilized.", max_length=SHORT)
    message: str = Field(default="", description="Why, for humans.", max_length=LONG)


class ScalingPolicyStatus(Model):
    observed_generation: int | None = observed_generation_field()
    conditions: list[Condition] = conditions_field()
    replicas: int | None = Field(
        default=None, ge=0, description="Instances the group has now (the /scale status replicas)."
    )
    desired_replicas: int | None = Field(
        default=None, ge=0, description="The group's effective replicas, decided by this policy."
    )
    selector: str | None = Field(
        default=None,
        min_length=1,
        description="Label selector of the group's Instances (the /scale selector; never empty).",
        max_length=MEDIUM,
    )
    rung: int | None = Field(default=None, ge=0, description="Index of the effective size in vertical.sizes.")
    size: str | None = Field(default=None, description="The effective size, for humans.", max_length=MEDIUM)
    metrics: list[RuleStatus] | None = Field(
        default=None,
        description="Last value of every rule.",
        max_length=MAX_RULES,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    last_decision: ScalingDecision | None = Field(
        default=None, description="The last decision that changed the replicas or the rung, and why."
    )
    last_scale_time: datetime | None = Field(default=None, description="When the replicas last changed.")
    last_size_change_time: datetime | None = Field(default=None, description="When the rung last changed.")


class ScalingPolicy(Resource):
    """Elastic constraints for one node group: replica bounds, rules over Prometheus queries, a size ladder."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        kind="ScalingPolicy",
        plural="scalingpolicies",
        singular="scalingpolicy",
        short_names=("sfscaling", "sfsp"),
        printer_columns=(
            PrinterColumn("Deployment", ".spec.target.deployment", "Deployment (deployments.skyfleet.io) governed."),
            PrinterColumn("Group", ".spec.target.group", "Node group governed."),
            PrinterColumn("Min", ".spec.minReplicas", "Fewest replicas (default 1).", "integer"),
            PrinterColumn("Max", ".spec.maxReplicas", "Most replicas.", "integer"),
            PrinterColumn("Desired", ".status.desiredReplicas", "Effective replicas decided.", "integer"),
            PrinterColumn("Current", ".status.replicas", "Instances the group has now.", "integer"),
            PrinterColumn("Size", ".status.size", "Effective size (rung of vertical.sizes)."),
            ready_column(),
            age_column(),
        ),
        scale=ScaleSubresource(
            spec_replicas_path=".spec.replicas",
            status_replicas_path=".status.replicas",
            label_selector_path=".status.selector",
        ),
    )

    kind: str = "ScalingPolicy"
    spec: ScalingPolicySpec = Field(description="Bounds, rules and behaviour of the policy.")
    status: ScalingPolicyStatus | None = Field(default=None, description="Observed state, written by Skyfleet.")
