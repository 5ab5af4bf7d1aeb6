"""Manifests the e2e tests and the benchmarks apply, written once and built from the API models.

Test-only (like the rest of ``skyfleet.testing``). Every builder validates its spec with the
pydantic model the CRD is generated from (``skyfleet.api``) and writes it the way the operator
writes objects (``Model.to_api``: camelCase, unset fields left out), and it refuses a field
the model does not have instead of dropping it: a builder cannot produce a manifest the CRD
schema would prune or reject. Tests that apply deliberately invalid manifests write raw dicts.

Fields are given in the CRD's spelling (``imageRef``, ``maxConcurrency``); nested values may be
dicts in that spelling or model instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from skyfleet.api.cloudcredential import CloudCredential, CloudCredentialSpec
from skyfleet.api.common import API_VERSION, Model
from skyfleet.api.deployment import Deployment, DeploymentSpec, NodeGroup
from skyfleet.api.image import Image, ImageSpec
from skyfleet.api.scalingpolicy import ScalingPolicy, ScalingPolicySpec

__all__ = [
    "AMI",
    "cloud_credential",
    "deployment",
    "ec2_credential",
    "image",
    "node_group",
    "scaling_policy",
    "secret",
]

# An AMI id the moto emulator and fastec2 both know (moto's default Ubuntu image).
AMI = "ami-785db401"
M = TypeVar("M", bound=Model)


class UnknownField(ValueError):
    """A builder was given a field its model (and so its CRD) does not have."""


def _check_known(given: Any, dumped: Any, path: str) -> None:
    """Every key of ``given`` survives into ``dumped``: the model did not drop it as unknown."""
    if isinstance(given, BaseModel):
        return  # typed already
    if isinstance(given, Mapping) and isinstance(dumped, Mapping):
        for key, value in given.items():
            if value is None:
                continue
            name = key if key in dumped else to_camel(key)
            if name not in dumped:
                raise UnknownField(f"{path}.{key} is not a field of the CRD")
            _check_known(value, dumped[name], f"{path}.{name}")
    elif isinstance(given, Sequence) and not isinstance(given, str) and isinstance(dumped, list):
        for i, (item, out) in enumerate(zip(given, dumped, strict=False)):
            _check_known(item, out, f"{path}[{i}]")


def _dump(model: type[M], fields: Mapping[str, Any], path: str) -> dict[str, Any]:
    dumped = model.model_validate(dict(fields)).to_api()
    _check_known(fields, dumped, path)
    return dumped


def _object(kind: str, name: str, spec: dict[str, Any], labels: Mapping[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def secret(name: str, string_data: Mapping[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": dict(string_data)}


def cloud_credential(name: str, *, labels: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A CloudCredential; ``spec`` holds its spec fields (provider, region, secretRef, ...)."""
    kind = CloudCredential.model_fields["kind"].default
    return _object(kind, name, _dump(CloudCredentialSpec, spec, f"{kind}.spec"), labels)


def ec2_credential(
    name: str,
    region: str,
    endpoint: str,
    *,
    canary: str,
    keys: str | None = None,
    **spec: Any,
) -> list[dict[str, Any]]:
    """A Secret (named ``keys``, default ``<name>-keys``) and an EC2 CloudCredential pointing at
    ``endpoint``; ``spec`` adds CloudCredential spec fields (limits, parameters,
    verifyIntervalSeconds...). ``canary`` is the secret half of the key pair, which tests look
    for in logs, status and events."""
    keys = keys or f"{name}-keys"
    return [
        secret(keys, {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": canary}),
        cloud_credential(
            name, provider="ec2", region=region, secretRef={"name": keys}, endpoint={"url": endpoint}, **spec
        ),
    ]


def image(name: str, *, ami: str | None = AMI, labels: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """An Image; by default the EC2 AMI the emulators know (``ami=None``: give ``clouds`` yourself)."""
    if ami is not None and "clouds" not in spec:
        spec["clouds"] = [{"provider": "ec2", "id": ami}]
    kind = Image.model_fields["kind"].default
    return _object(kind, name, _dump(ImageSpec, spec, f"{kind}.spec"), labels)


def node_group(
    name: str,
    *,
    image: str,
    credential: str | None = None,
    replicas: int | None = 1,
    instance_type: str | None = "t3.micro",
    size: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One node group: ``replicas`` VMs of ``image`` placed with ``credential`` (or give
    ``placement``), sized by an EC2 ``instance_type`` (or give ``size``)."""
    if credential is not None:
        fields.setdefault("placement", {"targets": [{"credential": credential}]})
    group = {
        "name": name,
        "replicas": replicas,
        "imageRef": image,
        "size": dict(size) if size is not None else {"instanceTypes": {"ec2": instance_type}},
        **fields,
    }
    return _dump(NodeGroup, group, f"nodeGroups[{name}]")


def deployment(
    name: str, *groups: Mapping[str, Any], labels: Mapping[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A Deployment of ``groups`` (from :func:`node_group`); ``spec`` adds paused, deletionPolicy..."""
    kind = Deployment.model_fields["kind"].default
    return _object(kind, name, _dump(DeploymentSpec, {"nodeGroups": list(groups), **spec}, f"{kind}.spec"), labels)


def scaling_policy(name: str, *, labels: Mapping[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A ScalingPolicy; ``spec`` holds target, minReplicas, maxReplicas, metrics, behavior..."""
    kind = ScalingPolicy.model_fields["kind"].default
    return _object(kind, name, _dump(ScalingPolicySpec, spec, f"{kind}.spec"), labels)
