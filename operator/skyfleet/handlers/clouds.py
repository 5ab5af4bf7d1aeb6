"""Connectors per credential and region, built from a CloudCredential and its Secret.

The Secret is read by name whenever a credential is (re)loaded, so rotating it takes effect at
the next verification without a restart. A connector is rebuilt only when what it was built
from changes: connectors hold rate limiters and pools that must outlive single calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.connectors import CallObserver, Connector, CredentialConfig, Limits, SecretData, registry
from skyfleet.handlers.kube import Kube
from skyfleet.reconcile.credentials import secret_aliases

__all__ = ["Clouds", "CredentialUnavailable"]


class CredentialUnavailable(Exception):
    """The credential cannot be used now; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def limits_of(cred: CloudCredential) -> Limits:
    spec = cred.spec.limits
    defaults = Limits()
    if spec is None:
        return defaults
    return Limits(
        requests_per_second=spec.requests_per_second or defaults.requests_per_second,
        burst=spec.burst or defaults.burst,
        max_concurrency=spec.max_concurrency or defaults.max_concurrency,
        max_instances=spec.max_instances,
    )


@dataclass
class _Loaded:
    fingerprint: str
    credential: CloudCredential
    config: CredentialConfig


class Clouds:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._connectors: dict[tuple[str, str, str], tuple[str, Connector]] = {}
        self._flights: dict[tuple[int, str], asyncio.Lock] = {}
        # Told about every cloud request of every connector made here (the operator's metrics).
        self.observer: CallObserver | None = None

    def single_flight(self, connector: Connector, kind: str) -> asyncio.Lock:
        """One catalogue lookup per connector at a time: the first fills the connector's cache,
        the others then read it, instead of a hundred identical listings at once."""
        return self._flights.setdefault((id(connector), kind), asyncio.Lock())

    async def load(self, namespace: str, name: str) -> tuple[CloudCredential, CredentialConfig]:
        """Read the CloudCredential and its Secret now."""
        raw = await self.kube.get("cloudcredentials", namespace, name)
        if raw is None:
            self._loaded.pop((namespace, name), None)
            raise CredentialUnavailable("CredentialNotFound", f"CloudCredential {name!r} does not exist")
        cred = CloudCredential.model_validate(raw)
        secret_name = cred.spec.secret_ref.name
        data = await self.kube.get_secret(namespace, secret_name)
        if data is None:
            raise CredentialUnavailable("SecretNotFound", f"Secret {secret_name!r} does not exist in {namespace}")
        config = CredentialConfig(
            name=name,
            namespace=namespace,
            provider=cred.spec.provider,
            region=cred.spec.region,
            endpoint_url=cred.spec.endpoint.url if cred.spec.endpoint else None,
            parameters=dict(cred.spec.parameters or {}),
            secret=SecretData(secret_aliases(data)),
            limits=limits_of(cred),
        )
        self._loaded[(namespace, name)] = _Loaded(_fingerprint(cred, data), cred, config)
        return cred, config

    async def credential(self, namespace: str, name: str) -> tuple[CloudCredential, CredentialConfig]:
        loaded = self._loaded.get((namespace, name))
        if loaded is not None:
            return loaded.credential, loaded.config
        return await self.load(namespace, name)

    async def connector(self, namespace: str, name: str, region: str | None = None) -> Connector:
        """A connector for the credential in ``region`` (default: the credential's region)."""
        cred, config = await self.credential(namespace, name)
        loaded = self._loaded[(namespace, name)]
        region = region or config.region or ""
        key = (namespace, name, region)
        cached = self._connectors.get(key)
        if cached is not None and cached[0] == loaded.fingerprint:
            return cached[1]
        if cached is not None:
            await cached[1].close()
        if region and region != config.region:
            config = CredentialConfig(
                name=config.name,
                namespace=config.namespace,
                provider=config.provider,
                region=region,
                endpoint_url=config.endpoint_url,
                parameters=config.parameters,
                secret=config.secret,
                limits=config.limits,
            )
        connector = registry.create(cred.spec.connector or "libcloud", config)
        connector.observer = self.observer
        self._connectors[key] = (loaded.fingerprint, connector)
        return connector

    async def forget(self, namespace: str, name: str) -> None:
        self._loaded.pop((namespace, name), None)
        for key in [k for k in self._connectors if k[:2] == (namespace, name)]:
            await self._connectors.pop(key)[1].close()

    async def close(self) -> None:
        for _, connector in self._connectors.values():
            await connector.close()
        self._connectors.clear()


def _fingerprint(cred: CloudCredential, data: dict[str, str]) -> str:
    """Changes when the spec or the Secret's values change; the values themselves never leave here."""
    material: dict[str, Any] = {"spec": cred.spec.to_api(), "secret": sorted(data.items())}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
