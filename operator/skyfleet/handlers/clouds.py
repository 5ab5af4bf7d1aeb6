"""Connectors per credential and region, built from a CloudCredential and its Secret.

The Secret (and the ConfigMap or Secret holding the endpoint's CA bundle) is read by name
whenever a credential is (re)loaded, so rotating it takes effect at the next verification
without a restart. A connector is rebuilt only when what it was built from changes: connectors
hold rate limiters and pools that must outlive single calls. The connector it replaces is
closed gracefully: creates queued on it (or made by a handler that fetched it just before the
change) finish there, and only then does it let go of its connections.

Every connector gets the operator's endpoint rules (``--allow-endpoint``), its total deadline
per cloud call, and the process-wide cap on cloud threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import ssl
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from skyfleet.api.cloudcredential import CABundle, CloudCredential
from skyfleet.connectors import (
    CallObserver,
    Connector,
    CredentialConfig,
    EndpointPolicy,
    InstanceBudget,
    InvalidRequest,
    Limits,
    SecretData,
    TLSOptions,
    registry,
    workers,
)
from skyfleet.handlers.kube import Kube
from skyfleet.reconcile.credentials import secret_aliases
from skyfleet.settings import Settings

__all__ = ["Clouds", "CredentialUnavailable"]


class CredentialUnavailable(Exception):
    """The credential cannot be used now; ``reason`` is a CamelCase condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def limits_of(cred: CloudCredential, call_timeout: float | None = None) -> Limits:
    spec = cred.spec.limits
    defaults = Limits()
    timeout = call_timeout or defaults.call_timeout
    if spec is None:
        return Limits(call_timeout=timeout)
    return Limits(
        requests_per_second=spec.requests_per_second or defaults.requests_per_second,
        burst=spec.burst or defaults.burst,
        max_concurrency=spec.max_concurrency or defaults.max_concurrency,
        max_instances=spec.max_instances,
        call_timeout=timeout,
        destroy_requests_per_second=spec.destroy_requests_per_second or defaults.destroy_requests_per_second,
        destroy_burst=spec.destroy_burst or defaults.destroy_burst,
        destroy_instances_per_second=spec.destroy_instances_per_second or defaults.destroy_instances_per_second,
        destroy_instance_burst=spec.destroy_instance_burst or defaults.destroy_instance_burst,
    )


@dataclass
class _Loaded:
    fingerprint: str
    credential: CloudCredential
    config: CredentialConfig


class Clouds:
    def __init__(self, kube: Kube, settings: Settings | None = None) -> None:
        self.kube = kube
        settings = settings or Settings()
        self.policy = EndpointPolicy.parse(settings.allowed_endpoints)
        self.call_timeout = settings.cloud_call_timeout
        workers.configure(settings.cloud_threads)
        self._loaded: dict[tuple[str, str], _Loaded] = {}
        self._connectors: dict[tuple[str, str, str], tuple[str, Connector]] = {}
        self._flights: dict[tuple[int, str], asyncio.Lock] = {}
        # One count of our VMs per credential (maxInstances), shared by its connectors in every
        # region and kept across rebuilds; a new provider or endpoint means another account.
        self._budgets: dict[tuple[str, str, str, str], InstanceBudget] = {}
        # Told about every cloud request of every connector made here (the operator's metrics).
        self.observer: CallObserver | None = None

    def single_flight(self, connector: Connector, kind: str) -> asyncio.Lock:
        """One catalogue lookup per connector at a time: the first fills the connector's cache,
        the others then read it, instead of a hundred identical listings at once."""
        return self._flights.setdefault((id(connector), kind), asyncio.Lock())

    async def load(self, namespace: str, name: str) -> tuple[CloudCredential, CredentialConfig]:
        """Read the CloudCredential, its Secret and its CA bundle now."""
        raw = await self.kube.get("cloudcredentials", namespace, name)
        if raw is None:
            self._loaded.pop((namespace, name), None)
            raise CredentialUnavailable("CredentialNotFound", f"CloudCredential {name!r} does not exist")
        cred = CloudCredential.model_validate(raw)
        secret_name = cred.spec.secret_ref.name
        data = await self.kube.get_secret(namespace, secret_name)
        if data is None:
            raise CredentialUnavailable("SecretNotFound", f"Secret {secret_name!r} does not exist in {namespace}")
        endpoint = cred.spec.endpoint
        ca_bundle = None
        if endpoint is not None and endpoint.ca_bundle is not None:
            ca_bundle = await self._ca_bundle(namespace, endpoint.ca_bundle)
        config = CredentialConfig(
            name=name,
            namespace=namespace,
            provider=cred.spec.provider,
            region=cred.spec.region,
            endpoint_url=endpoint.url if endpoint else None,
            parameters=dict(cred.spec.parameters or {}),
            secret=SecretData(secret_aliases(data)),
            limits=limits_of(cred, self.call_timeout),
            endpoint_policy=self.policy,
            tls=TLSOptions(
                ca_bundle=ca_bundle,
                insecure_skip_verify=bool(endpoint and endpoint.insecure_skip_tls_verify and ca_bundle is None),
            ),
        )
        self._loaded[(namespace, name)] = _Loaded(_fingerprint(cred, data, ca_bundle), cred, config)
        return cred, config

    async def _ca_bundle(self, namespace: str, ref: CABundle) -> str:
        """The PEM text a caBundle reference points to; ``InvalidRequest`` says what is missing."""
        if ref.secret_key_ref is not None:
            kind, key_ref = "Secret", ref.secret_key_ref
            data = await self.kube.get_secret(namespace, key_ref.name)
        else:
            assert ref.config_map_key_ref is not None  # the CRD admits exactly one of both
            kind, key_ref = "ConfigMap", ref.config_map_key_ref
            data = await self._config_map(namespace, key_ref.name)
        where = f"caBundle: {kind} {key_ref.name!r}"
        if data is None:
            raise InvalidRequest(f"{where} does not exist in {namespace}", code="CABundleNotFound")
        pem = data.get(key_ref.key)
        if not pem:
            raise InvalidRequest(f"{where} has no key {key_ref.key!r}", code="CABundleNotFound")
        try:
            ssl.create_default_context(cadata=pem)
        except (ssl.SSLError, ValueError):
            raise InvalidRequest(
                f"{where} key {key_ref.key!r} holds no PEM certificate", code="InvalidCABundle"
            ) from None
        return pem

    async def _config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        def call() -> dict[str, str] | None:
            try:
                found = self.kube.core.read_namespaced_config_map(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                # Not the exception's text: it carries the API server's whole answer.
                raise InvalidRequest(
                    f"caBundle: ConfigMap {name!r} cannot be read ({exc.status} {exc.reason})",
                    code="CABundleUnreadable",
                ) from None
            return dict(found.data or {})

        return await asyncio.to_thread(call)

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
        if region and region != config.region:
            config = dataclasses.replace(config, region=region)
        connector = registry.create(cred.spec.connector or "libcloud", config)
        connector.observer = self.observer
        account = (namespace, name, config.provider, config.endpoint_url or "")
        connector.budget = self._budgets.setdefault(account, connector.budget)
        self._connectors[key] = (loaded.fingerprint, connector)
        if cached is not None:
            await self._retire(cached[1])
        return connector

    async def _retire(self, connector: Connector) -> None:
        """Let a replaced connector finish what it has started, then close (Connector.close)."""
        for flight in [k for k in self._flights if k[0] == id(connector)]:
            del self._flights[flight]
        await connector.close()

    async def forget(self, namespace: str, name: str) -> None:
        self._loaded.pop((namespace, name), None)
        for account in [k for k in self._budgets if k[:2] == (namespace, name)]:
            del self._budgets[account]
        for key in [k for k in self._connectors if k[:2] == (namespace, name)]:
            await self._retire(self._connectors.pop(key)[1])

    async def close(self) -> None:
        for _, connector in self._connectors.values():
            await connector.close()
        self._connectors.clear()


def _fingerprint(cred: CloudCredential, data: dict[str, str], ca_bundle: str | None) -> str:
    """Changes when the spec, the Secret's values or the CA bundle change; the values never leave here."""
    material: dict[str, Any] = {"spec": cred.spec.to_api(), "secret": sorted(data.items()), "ca": ca_bundle}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
