"""CustomResourceDefinitions generated from the pydantic models.

Pydantic emits JSON Schema (2020-12); Kubernetes wants a structural OpenAPI v3 subset: no $ref,
no anyOf-with-null for optionals, boolean exclusiveMinimum, no defaults (defaults live in code so
GitOps tools see no drift), and a bound on every string and list so CEL cost estimation passes.
No maintained library does this conversion for pydantic v2, so it lives here, small and tested.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.api.common import CATEGORY, GROUP, VERSION, Resource
from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.api.instance import Instance
from skyfleet.api.policy import POLICY_FILENAME, secret_protection
from skyfleet.api.scalingpolicy import ScalingPolicy

KINDS: tuple[type[Resource], ...] = (CloudCredential, Image, Deployment, Instance, ScalingPolicy)

_DROPPED_KEYS = {"title", "default", "$defs", "examples"}
_KEPT_KEYS = {
    "type",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
}


class SchemaError(ValueError):
    """The models produce a schema Kubernetes would not accept."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline $ref, unwrap Optional (anyOf with null) and single allOf, keeping sibling keys."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **node}
    for key in ("anyOf", "allOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            if len(options) != 1:
                raise SchemaError(f"cannot express a union of {len(options)} types structurally: {options}")
            node = {**_resolve(options[0], defs), **node}
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, defs, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in _KEPT_KEYS or key.startswith("x-kubernetes-"):
            out[key] = value
        else:
            raise SchemaError(f"{path}: schema keyword {key!r} has no structural equivalent")
    if "enum" in out:
        out.setdefault("type", "string")
    if "properties" in out:
        out["type"] = "object"
    if "type" not in out:
        raise SchemaError(f"{path}: no type")
    if out["type"] == "string" and "maxLength" not in out and "enum" not in out and "format" not in out:
        raise SchemaError(f"{path}: strings need maxLength so CEL cost estimation passes")
    if out["type"] == "array" and "maxItems" not in out:
        raise SchemaError(f"{path}: lists need maxItems so CEL cost estimation passes")
    return out


def openapi_schema(kind: type[Resource]) -> dict[str, Any]:
    raw = kind.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    properties = raw["properties"]
    schema: dict[str, Any] = {
        "type": "object",
        "description": (kind.__doc__ or kind.crd.kind).strip().splitlines()[0],
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "skyfleet.io/v1alpha1"},
            "kind": {"type": "string", "description": kind.crd.kind},
            "metadata": {"type": "object"},
            "spec": _convert(properties["spec"], defs, "spec"),
            "status": _convert(properties["status"], defs, "status"),
        },
    }
    if kind.crd.root_validations:
        schema["x-kubernetes-validations"] = [dict(rule) for rule in kind.crd.root_validations]
    return schema


def crd_for(kind: type[Resource]) -> dict[str, Any]:
    info = kind.crd
    columns = []
    for column in info.printer_columns:
        entry: dict[str, Any] = {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
            "description": column.description,
        }
        if column.priority:
            entry["priority"] = column.priority
        columns.append(entry)
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        subresources["scale"] = {
            "specReplicasPath": info.scale.spec_replicas_path,
            "statusReplicasPath": info.scale.status_replicas_path,
            "labelSelectorPath": info.scale.label_selector_path,
        }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "skyfleet", "app.kubernetes.io/part-of": "skyfleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def crd_filename(kind: type[Resource]) -> str:
    return f"{GROUP}_{kind.crd.plural}.yaml"


def render_crds() -> dict[str, str]:
    """File name -> YAML text of everything committed under crds/: every CRD, and the admission
    policy that keeps a CloudCredential's Secret (installed wherever the CRDs are)."""
    header = "# Generated from operator/skyfleet/api by `make crds`. Do not edit.\n"
    files = {crd_filename(kind): header + yaml.safe_dump(crd_for(kind), sort_keys=False, width=120) for kind in KINDS}
    files[POLICY_FILENAME] = header + yaml.safe_dump_all(secret_protection(), sort_keys=False, width=120)
    return files


def write_crds(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_crds().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
