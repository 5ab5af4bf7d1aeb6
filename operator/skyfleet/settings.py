"""Operator settings: environment variables (``SKYFLEET_*``) overridden by ``skyfleet run`` flags."""

from __future__ import annotations

import json
import os
import socket
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEPRECATED_ENV", "Settings"]

# Environment variables renamed so that each follows its flag (SKYFLEET_<FLAG>); the old names
# still work, with a warning at start.
DEPRECATED_ENV = {
    "SKYFLEET_NAMESPACES": "SKYFLEET_NAMESPACE",
    "SKYFLEET_LIVENESS_ENDPOINT": "SKYFLEET_LIVENESS",
    "SKYFLEET_ALLOWED_ENDPOINTS": "SKYFLEET_ALLOW_ENDPOINT",
}


def _env(current: str, deprecated: str) -> AliasChoices:
    return AliasChoices(current, deprecated)


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKYFLEET_", extra="forbid", populate_by_name=True)

    # NoDecode: a plain comma-separated list is friendlier in a Helm values file than JSON.
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("SKYFLEET_NAMESPACE", "SKYFLEET_NAMESPACES"),
        description="Namespaces to serve; empty means cluster-wide. Env: comma-separated or a JSON list.",
    )
    cluster_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
        description="Tag value that marks VMs of this installation; two installations must differ. Default: "
        "derived from the UID of namespace kube-system, unique per cluster.",
    )
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Prometheus port; 0 disables.")
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the pod
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    liveness_endpoint: str | None = Field(
        default="http://0.0.0.0:8081/healthz",
        validation_alias=_env("SKYFLEET_LIVENESS", "SKYFLEET_LIVENESS_ENDPOINT"),
        description="kopf's liveness probe URL; empty disables.",
    )
    workers: int = Field(default=8, ge=1, le=256, description="Threads for blocking work (sync API calls).")
    allowed_endpoints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("SKYFLEET_ALLOW_ENDPOINT", "SKYFLEET_ALLOWED_ENDPOINTS"),
        description="Cloud endpoints tenants may use beyond public https ones: host names, *.domain wildcards, "
        "IP addresses or CIDRs (loopback, link-local, private, cluster-internal, plain http). Env: comma-separated.",
    )
    cloud_threads: int = Field(
        default=32, ge=1, le=1024, description="Threads for cloud calls, shared by every credential."
    )
    cloud_call_timeout: float = Field(
        default=120.0, gt=0, description="Total seconds one cloud call may take, however slowly the cloud answers."
    )
    observe_period: float = Field(default=15.0, gt=0, description="Seconds between VM observations per credential.")
    verify_period: float = Field(
        default=600.0, gt=0, description="Default seconds between credential checks (verifyIntervalSeconds wins)."
    )
    resync_period: float = Field(
        default=60.0, gt=0, description="Seconds between reconciles of an unchanged Deployment or Image."
    )
    prometheus_url: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Prometheus HTTP API that ScalingPolicies query unless they name their own.",
    )
    prometheus_tenant_label: str = Field(
        default="namespace",
        max_length=63,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Label holding the namespace in --prometheus-url's series: every query a ScalingPolicy sends "
        'there is confined to <label>="<its namespace>".',
    )
    scaling_period: float = Field(default=15.0, gt=0, description="Seconds between evaluations of a ScalingPolicy.")
    lost_grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a VM must be missing from every listing before it is treated as lost, and a "
        "deletion waits for a VM the cloud does not list yet (cloud listings are eventually consistent).",
    )
    create_settle: float = Field(
        default=30.0,
        gt=0,
        description="Seconds owner-tag lookups must keep missing a VM whose create had an unknown outcome (answer "
        "lost, or a restart while Creating) before another create goes out, on clouds without idempotency tokens "
        "(listings lag launches).",
    )
    orphan_grace: float = Field(
        default=300.0,
        gt=0,
        description="Default seconds a VM must be seen without an Instance before orphans.delete deletes it.",
    )
    leader_election: bool = Field(default=True, description="Hold a Lease so only one operator acts at a time.")
    lease_name: str = "skyfleet-operator"
    lease_namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE", "default"),
        description="Namespace of the Lease; defaults to the pod's namespace.",
    )
    lease_duration: float = Field(default=15.0, gt=1, description="Seconds a Lease is valid without renewal.")
    lease_renew_deadline: float = Field(
        default=10.0, gt=0, description="Seconds the leader keeps trying to renew before it stops acting."
    )
    lease_retry_period: float = Field(default=2.0, gt=0, description="Seconds between attempts to renew or acquire.")
    identity: str = Field(default_factory=_default_identity, description="Holder identity in the Lease.")

    @field_validator("namespaces", "allowed_endpoints", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @field_validator("allowed_endpoints")
    @classmethod
    def _valid_endpoints(cls, value: list[str]) -> list[str]:
        from skyfleet.contract.endpoints import parse_allow_list

        parse_allow_list(value)  # a ValueError names the entry that is wrong
        return value

    @field_validator("liveness_endpoint", "prometheus_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _lease_timings(self) -> Settings:
        # client-go's rule: the leader must have given up before a standby may take over.
        if not self.lease_retry_period < self.lease_renew_deadline < self.lease_duration:
            raise ValueError("lease timings need retry period < renew deadline < lease duration")
        return self

    @property
    def cluster_wide(self) -> bool:
        return not self.namespaces
