"""CloudCredential: how to reach one cloud account."""

from __future__ import annotations

from typing import Any, ClassVar

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

IMMUTABLE: dict[str, Any] = {
    "rule": "self == oldSelf",
    "message": "is immutable: create a new CloudCredential instead",
}


class SecretRef(Model):
    name: str = ref_name(
        "Name of a Secret in the same namespace holding the account's secret values. The keys the "
        "provider expects are listed in the README (for ec2: accessKeyId and secretAccessKey)."
    )


class KeyRef(Model):
    name: str = ref_name("Name of the object in the same namespace.")
    key: str = Field(description="Key in its data.", min_length=1, max_length=MEDIUM, pattern=r"^[-._a-zA-Z0-9]+$")


class CABundle(Model):
    """Where the PEM certificates that sign the endpoint's certificate are kept."""

    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.secretKeyRef) != has(self.configMapKeyRef)",
                    "message": "exactly one of secretKeyRef or configMapKeyRef must be set",
                }
            ]
        }
    }

    secret_key_ref: KeyRef | None = Field(default=None, description="A key of a Secret in the same namespace.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="A key of a ConfigMap in the same namespace.")


class Endpoint(Model):
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "!(has(self.caBundle) && has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify)",
                    "message": "caBundle and insecureSkipTlsVerify exclude each other",
                },
                {
                    "rule": "(!has(self.caBundle) && !(has(self.insecureSkipTlsVerify) && self.insecureSkipTlsVerify))"
                    " || self.url.startsWith('https://')",
                    "message": "caBundle and insecureSkipTlsVerify apply to https:// endpoints only",
                },
            ]
        }
    }

    url: str = Field(
        description="Base URL of the cloud API, overriding the provider's public endpoint "
        "(private clouds, regional gateways, emulators). Scheme, host, optional port and path. "
        "Plain http, loopback, link-local, private and cluster-internal hosts are refused unless "
        "the operator's endpoint allow-list names them (Ready=False, EndpointNotAllowed); "
        "redirects are never followed.",
        max_length=MEDIUM,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
    )
    insecure_skip_tls_verify: bool | None = Field(
        default=None,
        description="Do not verify the endpoint's TLS certificate (it is still https). Only for test clouds; "
        "prefer caBundle.",
    )
    ca_bundle: CABundle | None = Field(
        default=None,
        description="PEM certificates to verify the endpoint's certificate with, instead of the "
        "operator's default trust store (private clouds with their own CA).",
    )


class CredentialLimits(Model):
    requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=10000,
        description="Sustained cloud API requests per second for this account (token bucket refill). Default: 10.",
    )
    burst: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Requests allowed at once before the rate applies. Default: 20.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Cloud API calls in flight at once for this account. Default: 8.",
    )
    max_instances: int | None = Field(
        default=None,
        ge=0,
        le=100000,
        description="Most VMs the operator keeps on this account; placement moves on when it is reached. "
        "Default: no limit.",
    )
    destroy_requests_per_second: float | None = Field(
        default=None,
        gt=0,
        le=10000,
        description="Sustained delete requests per second where one request deletes many VMs (ec2: "
        "TerminateInstances); these do not use requestsPerSecond. Other providers delete one VM per request "
        "within requestsPerSecond. Default: 5 (EC2's TerminateInstances request bucket).",
    )
    destroy_burst: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description="Delete requests allowed at once before destroyRequestsPerSecond applies. Default: 100.",
    )
    destroy_instances_per_second: float | None = Field(
        default=None,
        gt=0,
        le=100000,
        description="Sustained VMs per second named in delete requests that delete many (EC2's resource bucket). "
        "Default: 20.",
    )
    destroy_instance_burst: int | None = Field(
        default=None,
        ge=1,
        le=100000,
        description="VMs deletable at once before destroyInstancesPerSecond applies; also the most one delete "
        "request names. Default: 1000.",
    )


class OrphanPolicy(Model):
    delete: bool | None = Field(
        default=None,
        description="Delete VMs tagged with this cluster's id (and this namespace) whose Instance no longer "
        "exists, once they have stayed so for gracePeriodSeconds. VMs kept by deletionPolicy: Orphan are "
        "released (untagged) first and never deleted. Needs a provider that can remove tags "
        "(status.capabilities.release). Default: false (orphans are only reported).",
    )
    grace_period_seconds: int | None = Field(
        default=None,
        ge=30,
        le=86400,
        description="How long a VM must be seen without an Instance before it is deleted. Default: 300.",
    )


class CloudCredentialSpec(Model):
    # A rule on the field itself runs only when the old object has it too: adding or removing the
    # connector would slip past, so presence is compared one level up.
    model_config = Model.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.connector) == has(oldSelf.connector)",
                    "message": "is immutable: it cannot be added or removed after creation; create a new "
                    "CloudCredential instead",
                    "fieldPath": ".connector",
                }
            ]
        }
    }

    connector: str | None = Field(
        default=None,
        description="Connector that talks to this cloud (entry point in skyfleet.connectors). Default: libcloud.",
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
        json_schema_extra={"x-kubernetes-validations": [IMMUTABLE]},
    )
    provider: str = Field(
        description="Cloud provider as the connector names it: ec2, openstack, gce, azure_arm, "
        "digitalocean, linode, ...",
        min_length=1,
        max_length=SHORT,
        pattern=r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$",
        json_schema_extra={"x-kubernetes-validations": [IMMUTABLE]},
    )
    region: str | None = Field(
        default=None,
        description="Region of the account that VMs are placed in unless a placement target names another.",
        max_length=SHORT,
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    endpoint: Endpoint | None = Field(default=None, description="API endpoint override.")
    secret_ref: SecretRef = Field(description="The Secret with the account's secret values.")
    parameters: dict[str, str] | None = Field(
        default=None,
        description="Non-secret provider options, camelCase as documented per provider (e.g. OpenStack's "
        "project, domain, authVersion); snake_case is accepted too. A key the provider does not read sets "
        "Ready=False with reason UnknownParameter. Never put secrets here.",
        max_length=32,
        json_schema_extra={"additionalProperties": {"type": "string", "maxLength": LONG}},
    )
    limits: CredentialLimits | None = Field(default=None, description="Per-account limits on API use.")
    verify_interval_seconds: int | None = Field(
        default=None,
        ge=30,
        le=86400,
        description="How often the credentials are verified again. Default: 600.",
    )
    orphans: OrphanPolicy | None = Field(default=None, description="What to do with orphaned VMs.")


class Capabilities(Model):
    tags: bool = Field(description="VMs carry key/value tags (without them the credential is not Ready).")
    user_data: bool = Field(
        description="VMs take user data (cloud-init); without it, VMs with user data fail UserDataUnsupported."
    )
    idempotency_token: bool = Field(
        description="Creates take an idempotency token; without one, a create whose answer was lost is sent again "
        "only after owner-tag lookups kept missing its VM for SKYFLEET_CREATE_SETTLE seconds."
    )
    release: bool = Field(
        default=False, description="Owner tags can be removed from a running VM (needed for orphans.delete)."
    )


class CloudCredentialStatus(Model):
    observed_generation: int | None = observed_generation_field()
    phase: str | None = Field(default=None, description="Verified, Failed or Pending.", max_length=SHORT)
    conditions: list[Condition] = conditions_field()
    capabilities: Capabilities | None = Field(default=None, description="What the cloud supports.")
    instances: int | None = Field(default=None, ge=0, description="Instances that use this credential.")
    orphaned_vms: int | None = Field(
        default=None, ge=0, description="VMs tagged with this cluster's id whose Instance no longer exists."
    )


class CloudCredential(Resource):
    """How to reach one cloud account: connector, provider, region, endpoint, a Secret and limits."""

    crd: ClassVar[CRDInfo] = CRDInfo(
        kind="CloudCredential",
        plural="cloudcredentials",
        singular="cloudcredential",
        short_names=("sfcred", "sfcreds"),
        printer_columns=(
            PrinterColumn("Provider", ".spec.provider", "Cloud provider."),
            PrinterColumn("Region", ".spec.region", "Default region."),
            ready_column(),
            phase_column(),
            PrinterColumn("Instances", ".status.instances", "Instances using this credential.", "integer"),
            age_column(),
        ),
    )

    kind: str = "CloudCredential"
    spec: CloudCredentialSpec = Field(description="How to reach the cloud account.")
    status: CloudCredentialStatus | None = Field(default=None, description="Observed state, written by Skyfleet.")
