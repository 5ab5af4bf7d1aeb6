"""The generated CRDs and the models behind them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.api import CloudCredential, Deployment, Image, Instance
from skyfleet.api.common import Resource
from skyfleet.api.crd import KINDS, SchemaError, _convert, crd_for, render_crds

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BY_KIND: dict[str, type[Resource]] = {k.crd.kind: k for k in KINDS}
# Short names that kubectl already resolves to built-in kinds; ours must not shadow them.
BUILTIN_SHORT_NAMES = {"deploy", "po", "svc", "cm", "ns", "no", "pv", "pvc", "sa", "ds", "rs", "sts", "ing", "ep"}


def example_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield f"{path.relative_to(ROOT)}:{doc['kind']}/{doc['metadata']['name']}", doc


def walk_properties(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from walk_properties(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk_properties(schema["items"], f"{path}[]")


def test_committed_crds_match_the_models() -> None:
    committed = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert committed == render_crds(), "crds/ is stale: run `make crds` and commit the result"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.crd.kind)
def test_every_field_is_explained(kind: type[Resource]) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undocumented = [
        path
        for path, sub in walk_properties(schema)
        if path not in (".apiVersion", ".kind", ".metadata") and not sub.get("description")
    ]
    assert undocumented == []


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.crd.kind)
def test_defaults_stay_out_of_the_schema(kind: type[Resource]) -> None:
    # A default in the schema shows up as drift in GitOps tools: the stored object differs from Git.
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert [path for path, sub in walk_properties(schema) if "default" in sub] == []


def test_kinds_have_unique_short_names_in_the_skyfleet_category() -> None:
    names = [n for kind in KINDS for n in kind.crd.short_names]
    assert len(names) == len(set(names))
    assert not set(names) & BUILTIN_SHORT_NAMES
    for kind in KINDS:
        crd = crd_for(kind)
        assert crd["spec"]["names"]["categories"] == ["skyfleet"]
        assert crd["spec"]["versions"][0]["subresources"]["status"] == {}
        assert all(c["description"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"])


def test_conditions_are_a_map_keyed_by_type() -> None:
    for kind in KINDS:
        status = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        conditions = status["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]


OUR_EXAMPLES = {name: doc for name, doc in example_documents() if doc["apiVersion"] == "skyfleet.io/v1alpha1"}


@pytest.mark.parametrize("name", sorted(OUR_EXAMPLES))
def test_examples_load_into_the_models_without_losing_anything(name: str) -> None:
    doc = OUR_EXAMPLES[name]
    model = BY_KIND[doc["kind"]].model_validate(doc)
    assert model.to_api()["spec"] == doc["spec"]


def test_model_reads_camel_case_and_keeps_units_in_names() -> None:
    deployment = Deployment.model_validate(
        {
            "metadata": {"name": "shop"},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "db",
                        "imageRef": "ubuntu",
                        "size": {"cpu": 2, "memoryMiB": 2048, "diskGiB": 20},
                        "placement": {"targets": [{"credential": "aws"}]},
                    }
                ]
            },
        }
    )
    size = deployment.spec.node_groups[0].size
    assert (size.cpu, size.memory_mib, size.disk_gib) == (2, 2048, 20)
    assert deployment.spec.node_groups[0].replicas is None  # the default lives in code, not in the object
    assert deployment.to_api()["spec"]["nodeGroups"][0]["size"] == {"cpu": 2, "memoryMiB": 2048, "diskGiB": 20}


def test_status_models_read_what_the_api_server_returns() -> None:
    instance = Instance.model_validate(
        {
            "metadata": {"name": "shop-db-0", "uid": "u-1", "resourceVersion": "7"},
            "spec": {
                "deployment": "shop",
                "group": "db",
                "credential": "aws",
                "imageRef": "ubuntu",
                "templateHash": "abc",
            },
            "status": {
                "phase": "Running",
                "providerId": "i-0123",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Running",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "someFutureField": 1,
            },
        }
    )
    assert instance.status is not None
    assert instance.status.provider_id == "i-0123"
    assert instance.status.conditions[0].status == "True"
    assert instance.metadata.resource_version == "7"


@pytest.mark.parametrize(
    ("node", "error"),
    [
        ({"type": "string"}, "maxLength"),
        ({"type": "array", "items": {"type": "integer"}}, "maxItems"),
        ({"anyOf": [{"type": "string", "maxLength": 1}, {"type": "integer"}]}, "union"),
        ({"type": "object", "oneOf": []}, "oneOf"),
    ],
)
def test_schema_conversion_refuses_what_kubernetes_would_reject(node: dict[str, Any], error: str) -> None:
    with pytest.raises(SchemaError, match=error):
        _convert(node, {}, "spec.x")


def test_schema_conversion_turns_json_schema_into_structural_openapi() -> None:
    defs = {
        "Inner": {"type": "object", "title": "Inner", "properties": {"n": {"type": "number", "exclusiveMinimum": 0}}}
    }
    converted = _convert({"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "default": None}, defs, "spec")
    assert converted == {
        "type": "object",
        "properties": {"n": {"type": "number", "minimum": 0, "exclusiveMinimum": True}},
    }


def test_resources_know_their_kind() -> None:
    assert [k.crd.kind for k in (CloudCredential, Image, Deployment, Instance)] == [
        "CloudCredential",
        "Image",
        "Deployment",
        "Instance",
    ]
