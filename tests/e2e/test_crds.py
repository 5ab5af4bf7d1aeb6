"""The CRDs against a real kube-apiserver: installed, explained, and strict about bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "skyfleet.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


GROUP = {
    "name": "web",
    "replicas": 2,
    "imageRef": "ubuntu",
    "size": {"cpu": 1, "memoryMiB": 1024},
    "placement": {"strategy": "Spread", "targets": [{"credential": "aws"}]},
}
DEPLOYMENT = manifest("Deployment", "shop", {"nodeGroups": [GROUP]})
CREDENTIAL = manifest("CloudCredential", "aws", {"provider": "ec2", "region": "us-east-1", "secretRef": {"name": "k"}})
IMAGE = manifest("Image", "ubuntu", {"clouds": [{"provider": "ec2", "id": "ami-1"}]})
INSTANCE = manifest(
    "Instance",
    "shop-web-0",
    {"deployment": "shop", "group": "web", "credential": "aws", "imageRef": "ubuntu", "templateHash": "h1"},
)

BUILD = {"builder": {"size": {"cpu": 2, "memoryMiB": 2048}}}


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of base with the dotted path set to value (None deletes; an int indexes a list)."""
    doc = copy.deepcopy(base)
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split(".")]
    target = doc
    for key in keys[:-1]:
        target = target[key]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


# (case, manifest, text the API server's answer must contain: the field it names)
INVALID = [
    ("deployment name too long for VM names", changed(DEPLOYMENT, "metadata.name", "a" * 41), "metadata.name"),
    ("deployment name with underscore", changed(DEPLOYMENT, "metadata.name", "my_shop"), "metadata.name"),
    ("missing spec", changed(DEPLOYMENT, "spec", None), "spec"),
    ("missing nodeGroups", changed(DEPLOYMENT, "spec.nodeGroups", None), "spec.nodeGroups"),
    ("empty nodeGroups", changed(DEPLOYMENT, "spec.nodeGroups", []), "spec.nodeGroups"),
    ("negative replicas", changed(DEPLOYMENT, "spec.nodeGroups.0.replicas", -1), "spec.nodeGroups[0].replicas"),
    (
        "unknown placement strategy",
        changed(DEPLOYMENT, "spec.nodeGroups.0.placement.strategy", "Random"),
        "spec.nodeGroups[0].placement.strategy",
    ),
    ("no placement targets", changed(DEPLOYMENT, "spec.nodeGroups.0.placement.targets", []), "placement.targets"),
    (
        "group name not a DNS label",
        changed(DEPLOYMENT, "spec.nodeGroups.0.name", "Web_Tier"),
        "spec.nodeGroups[0].name",
    ),
    ("duplicate group names", changed(DEPLOYMENT, "spec.nodeGroups", [GROUP, GROUP]), "spec.nodeGroups[1]"),
    (
        "dependsOn an unknown group",
        changed(DEPLOYMENT, "spec.nodeGroups.0.dependsOn", ["db"]),
        "spec.nodeGroups: Invalid value",
    ),
    ("dependsOn itself", changed(DEPLOYMENT, "spec.nodeGroups.0.dependsOn", ["web"]), "dependsOn must name other"),
    ("size without cpu and memory", changed(DEPLOYMENT, "spec.nodeGroups.0.size", {"diskGiB": 10}), "size"),
    ("memory below the floor", changed(DEPLOYMENT, "spec.nodeGroups.0.size.memoryMiB", 64), "size.memoryMiB"),
    (
        "rollout that can never progress",
        changed(DEPLOYMENT, "spec.nodeGroups.0.rollout", {"maxSurge": 0, "maxUnavailable": 0}),
        "spec.nodeGroups[0].rollout",
    ),
    ("unknown deletionPolicy", changed(DEPLOYMENT, "spec.deletionPolicy", "Keep"), "spec.deletionPolicy"),
    ("typo in a field name", changed(DEPLOYMENT, "spec.nodeGroups.0.replica", 3), "spec.nodeGroups[0].replica"),
    ("credential without secretRef", changed(CREDENTIAL, "spec.secretRef", None), "spec.secretRef"),
    ("provider with capitals", changed(CREDENTIAL, "spec.provider", "EC2"), "spec.provider"),
    ("endpoint that is not a URL", changed(CREDENTIAL, "spec.endpoint", {"url": "ftp:/x"}), "spec.endpoint.url"),
    (
        "zero request rate",
        changed(CREDENTIAL, "spec.limits", {"requestsPerSecond": 0}),
        "spec.limits.requestsPerSecond",
    ),
    (
        "zero VMs per delete request",
        changed(CREDENTIAL, "spec.limits", {"destroyInstanceBurst": 0}),
        "spec.limits.destroyInstanceBurst",
    ),
    (
        "delete rate past its bound",
        changed(CREDENTIAL, "spec.limits", {"destroyRequestsPerSecond": 20000}),
        "spec.limits.destroyRequestsPerSecond",
    ),
    (
        "image source with both id and lookup",
        changed(IMAGE, "spec.clouds.0.lookup", {"namePattern": "debian-*"}),
        "spec.clouds[0]",
    ),
    ("image source for no cloud", changed(IMAGE, "spec.clouds.0.provider", None), "spec.clouds[0]"),
    ("image with no clouds and no parent", changed(IMAGE, "spec.clouds", None), "spec.clouds"),
    # spec.build: bounded and checked at admission, like the rest.
    ("build without a builder", changed(IMAGE, "spec.build", {"keep": 2}), "spec.build.builder"),
    ("builder without a size", changed(IMAGE, "spec.build", {"builder": {}}), "spec.build.builder.size"),
    (
        "builder size with neither cpu nor types",
        changed(IMAGE, "spec.build", {"builder": {"size": {"diskGiB": 20}}}),
        "spec.build.builder.size",
    ),
    ("keep 0 generations", changed(changed(IMAGE, "spec.build", BUILD), "spec.build.keep", 0), "spec.build.keep"),
    ("keep too many", changed(changed(IMAGE, "spec.build", BUILD), "spec.build.keep", 6), "spec.build.keep"),
    (
        "builder timeout under a minute",
        changed(changed(IMAGE, "spec.build", BUILD), "spec.build.builder.timeoutSeconds", 10),
        "spec.build.builder.timeoutSeconds",
    ),
    (
        "builder timeout over six hours",
        changed(changed(IMAGE, "spec.build", BUILD), "spec.build.builder.timeoutSeconds", 86400),
        "spec.build.builder.timeoutSeconds",
    ),
    (
        "unknown image deletionPolicy",
        changed(changed(IMAGE, "spec.build", BUILD), "spec.build.deletionPolicy", "Keep"),
        "spec.build.deletionPolicy",
    ),
    (
        "builder cloud for both a credential and a provider",
        changed(
            changed(IMAGE, "spec.build", BUILD),
            "spec.build.builder.clouds",
            [{"credential": "aws", "provider": "ec2", "zone": "us-east-1a"}],
        ),
        "spec.build.builder.clouds[0]",
    ),
    (
        "too many copy regions",
        changed(changed(IMAGE, "spec.build", BUILD), "spec.build.copyToRegions", [f"r{i}" for i in range(17)]),
        "spec.build.copyToRegions",
    ),
    (
        "typo in a build field",
        changed(changed(IMAGE, "spec.build", BUILD), "spec.build.keepGenerations", 2),
        "spec.build.keepGenerations",
    ),
]


def kubectl_apply(control_plane: Any, namespace: str, doc: dict[str, Any], check: bool = True) -> Any:
    return control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc), check=check)


def test_crds_become_established_and_listable(control_plane: Any, installed_crds: list[str]) -> None:
    # api-resources refreshes kubectl's discovery cache, as a user would after installing CRDs.
    resources = control_plane.kubectl("api-resources", "--api-group=skyfleet.io", "-o", "name").stdout.split()
    assert sorted(resources) == [
        "cloudcredentials.skyfleet.io",
        "deployments.skyfleet.io",
        "images.skyfleet.io",
        "instances.skyfleet.io",
        "scalingpolicies.skyfleet.io",
    ]
    # The category resolves: one command lists every Skyfleet kind in every namespace.
    assert control_plane.kubectl("get", "skyfleet", "-A").returncode == 0


def test_kubectl_explain_prints_field_descriptions(control_plane: Any, installed_crds: list[str]) -> None:
    explained = control_plane.kubectl("explain", "deployments.skyfleet.io.spec").stdout
    assert "nodeGroups" in explained
    assert "The tiers of the application." in explained
    deep = control_plane.kubectl("explain", "deployments.skyfleet.io.spec.nodeGroups.placement.strategy").stdout
    assert "fall back to the next on quota or capacity errors" in deep


def test_every_example_is_accepted(control_plane: Any, installed_crds: list[str], namespace: str) -> None:
    paths = sorted((ROOT / "examples").rglob("*.yaml"))
    for path in paths:
        control_plane.kubectl("apply", "-n", namespace, "-f", str(path))
    listed = control_plane.kubectl("get", "skyfleet", "-n", namespace, "-o", "name").stdout.split()
    expected = [
        f"{doc['kind'].lower()}.skyfleet.io/{doc['metadata']['name']}"
        for path in paths
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc["apiVersion"] == "skyfleet.io/v1alpha1"
    ]
    assert sorted(listed) == sorted(expected)
    # Short names and full names both resolve, and `deployments` alone still means apps/v1.
    assert (
        control_plane.kubectl("get", "sfd", "-n", namespace, "-o", "name").stdout.strip()
        == "deployment.skyfleet.io/shop"
    )
    assert "No resources found" in control_plane.kubectl("get", "deployments.apps", "-n", namespace).stderr


@pytest.mark.parametrize(("case", "doc", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(
    control_plane: Any, installed_crds: list[str], namespace: str, case: str, doc: dict[str, Any], field: str
) -> None:
    result = kubectl_apply(control_plane, namespace, doc, check=False)
    assert result.returncode != 0, f"{case}: accepted"
    assert field in result.stderr, result.stderr


def test_baked_image_is_stored_as_written(control_plane: Any, installed_crds: list[str], namespace: str) -> None:
    doc = changed(IMAGE, "spec.build", BUILD)
    kubectl_apply(control_plane, namespace, doc)
    stored = json.loads(control_plane.kubectl("get", "-n", namespace, "sfimg", "ubuntu", "-o", "json").stdout)
    # No defaults written into the object (keep, timeout, deletionPolicy live in code).
    assert stored["spec"]["build"] == BUILD


@pytest.mark.parametrize(
    ("case", "doc", "path", "value", "field"),
    [
        ("credential provider", CREDENTIAL, "spec.provider", "openstack", "spec.provider"),
        ("credential connector", changed(CREDENTIAL, "spec.connector", "libcloud"), "spec.connector", "x", "connector"),
        ("credential connector added", CREDENTIAL, "spec.connector", "libcloud", "spec.connector"),
        (
            "credential connector removed",
            changed(CREDENTIAL, "spec.connector", "libcloud"),
            "spec.connector",
            None,
            "spec.connector",
        ),
        ("instance spec", INSTANCE, "spec.credential", "other", "an Instance's spec is immutable"),
    ],
)
def test_immutable_field_cannot_change(
    control_plane: Any,
    installed_crds: list[str],
    namespace: str,
    case: str,
    doc: dict[str, Any],
    path: str,
    value: Any,
    field: str,
) -> None:
    kubectl_apply(control_plane, namespace, doc)
    result = kubectl_apply(control_plane, namespace, changed(doc, path, value), check=False)
    assert result.returncode != 0, f"{case}: change accepted"
    assert field in result.stderr
    assert "immutable" in result.stderr
