"""Manifests the e2e tests and the benchmarks apply, written once.

Test-only (like the rest of ``skyfleet.testing``): an EC2 CloudCredential with its Secret, as a
user writes them, pointed at a loopback emulator or fault proxy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ec2_credential"]


def ec2_credential(
    name: str,
    region: str,
    endpoint: str,
    *,
    canary: str,
    keys: str | None = None,
    **spec: Any,
) -> list[dict[str, Any]]:
    """A Secret (named ``keys``, default ``<name>-keys``) and a CloudCredential pointing at
    ``endpoint``; ``spec`` adds CloudCredential spec fields (limits, parameters,
    verifyIntervalSeconds...). ``canary`` is the secret half of the key pair, which tests look
    for in logs, status and events."""
    secret = keys or f"{name}-keys"
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret},
            "stringData": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": canary},
        },
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "CloudCredential",
            "metadata": {"name": name},
            "spec": {
                "provider": "ec2",
                "region": region,
                "secretRef": {"name": secret},
                "endpoint": {"url": endpoint},
                **spec,
            },
        },
    ]
