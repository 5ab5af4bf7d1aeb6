"""handlers/clouds.py gives every connector of one credential one count of its VMs (maxInstances
holds over all its regions and across connector rebuilds), and forgets it with the credential."""

from __future__ import annotations

from typing import Any

import pytest

from skyfleet.handlers.clouds import Clouds

pytestmark = pytest.mark.unit

NS = "team"


class CredentialKube:
    """A stand-in for handlers.kube.Kube holding CloudCredentials and one Secret."""

    def __init__(self) -> None:
        self.credentials: dict[str, dict[str, Any]] = {}

    def add(self, name: str, **limits: Any) -> None:
        self.credentials[name] = {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "CloudCredential",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"provider": "ec2", "region": "us-east-1", "secretRef": {"name": "keys"}, "limits": limits},
        }

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.credentials.get(name)

    async def get_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return {"aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "not-a-secret"}


async def test_the_connectors_of_one_credential_share_one_budget() -> None:
    kube = CredentialKube()
    kube.add("aws", maxInstances=10)
    kube.add("other", maxInstances=10)
    clouds = Clouds(kube)  # type: ignore[arg-type]
    try:
        east = await clouds.connector(NS, "aws")
        west = await clouds.connector(NS, "aws", "eu-central-1")
        other = await clouds.connector(NS, "other")
        assert west is not east
        assert west.budget is east.budget
        assert other.budget is not east.budget

        # A changed credential means a rebuilt connector: the count it kept carries over.
        kube.add("aws", maxInstances=20)
        await clouds.load(NS, "aws")
        rebuilt = await clouds.connector(NS, "aws")
        assert rebuilt is not east
        assert rebuilt.budget is east.budget

        # A deleted credential starts from a fresh listing when it comes back.
        await clouds.forget(NS, "aws")
        again = await clouds.connector(NS, "aws")
        assert again.budget is not east.budget
    finally:
        await clouds.close()


async def test_a_credentials_limits_reach_its_connectors_destroy_budget_too() -> None:
    kube = CredentialKube()
    kube.add("aws", requestsPerSecond=2, destroyRequestsPerSecond=1, destroyBurst=7, destroyInstanceBurst=50)
    kube.add("plain")
    clouds = Clouds(kube)  # type: ignore[arg-type]
    try:
        limits = (await clouds.connector(NS, "aws")).config.limits
        assert (limits.requests_per_second, limits.destroy_requests_per_second, limits.destroy_burst) == (2, 1, 7)
        assert (limits.destroy_instances_per_second, limits.destroy_instance_burst) == (20, 50)
        # Unset: EC2's own TerminateInstances buckets.
        plain = (await clouds.connector(NS, "plain")).config.limits
        assert (plain.destroy_requests_per_second, plain.destroy_burst) == (5, 100)
        assert (plain.destroy_instances_per_second, plain.destroy_instance_burst) == (20, 1000)
    finally:
        await clouds.close()
