"""The shared test harness: manifest builders write only what the CRDs define, and the operator
launcher's command line and environment carry exactly the options a caller set."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.testing import manifests as m
from skyfleet.testing.launcher import IMAGE_ENV, OperatorConfig

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def crd_schema(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("skyfleet.io_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind}")


def undefined(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths in ``value`` the structural schema does not define (what the API server prunes)."""
    if isinstance(value, list) and "items" in schema:
        return [p for i, v in enumerate(value) for p in undefined(v, schema["items"], f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    known = schema.get("properties")
    if known is None:  # a map (instanceTypes, parameters): any key, values of one schema
        known = {k: schema.get("additionalProperties") or {} for k in value}
    found = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        found += undefined(item, known[key], where) if key in known else [where]
    return found


SIZE = {"cpu": 1, "memoryMiB": 512, "diskGiB": 20, "instanceTypes": {"ec2": "t3.nano"}}
BUILT = [
    m.ec2_credential(
        "c",
        "eu-central-1",
        "http://127.0.0.1:1/",
        canary="x",
        limits={"requestsPerSecond": 2, "burst": 5, "maxConcurrency": 3, "maxInstances": 9},
        parameters={"clientToken": "false"},
        verifyIntervalSeconds=30,
    )[1],
    m.image(
        "baked",
        recipe={"packages": ["nginx"], "scripts": ["true"]},
        build={"builder": {"size": SIZE}, "keep": 2},
    ),
    m.deployment(
        "shop",
        m.node_group("db", image="xenial", credential="c"),
        m.node_group("web", image="xenial", replicas=3, size=SIZE, credential="c", dependsOn=["db"], userData="#!"),
        paused=True,
        deletionPolicy="Orphan",
    ),
    m.scaling_policy(
        "web",
        target={"deployment": "shop", "group": "web"},
        maxReplicas=4,
        metrics=[{"name": "hot", "query": "max(load)", "for": "1m", "constraint": {"above": 1, "action": "ScaleOut"}}],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
    ),
]


@pytest.mark.parametrize("doc", BUILT, ids=lambda d: d["kind"])
def test_builders_write_only_fields_the_crd_defines(doc: dict[str, Any]) -> None:
    assert undefined(doc, crd_schema(doc["kind"])) == []
    assert doc["apiVersion"] == "skyfleet.io/v1alpha1"


def test_the_schema_walk_finds_a_field_the_crd_lacks() -> None:
    raw = {"spec": {"nodeGroups": [{"name": "a", "size": {"memoryMib": 1}}], "pause": True}}
    assert undefined(raw, crd_schema("Deployment")) == ["spec.nodeGroups[0].size.memoryMib", "spec.pause"]


def test_builders_keep_every_field_they_are_given() -> None:
    web = BUILT[2]["spec"]["nodeGroups"][1]
    assert web == {
        "name": "web",
        "replicas": 3,
        "imageRef": "xenial",
        "size": SIZE,
        "placement": {"targets": [{"credential": "c"}]},
        "dependsOn": ["db"],
        "userData": "#!",
    }
    assert BUILT[3]["spec"]["metrics"][0]["for"] == "1m"


@pytest.mark.parametrize(
    "build",
    [
        lambda: m.node_group("app", image="x", credential="c", replica=3),
        lambda: m.node_group("app", image="x", credential="c", size={"cpu": 1, "memoryMib": 512}),
        lambda: m.ec2_credential("c", "r", "http://127.0.0.1/", canary="x", limits={"maxInstance": 1}),
        lambda: m.image("i", recipe={"package": ["nginx"]}),
        lambda: m.deployment("d", m.node_group("app", image="x", credential="c"), pause=True),
        lambda: m.scaling_policy("p", target={"deployment": "d", "group": "g"}, maxReplicas=2, minReplica=1),
    ],
)
def test_builders_refuse_a_field_the_crd_does_not_have(build: Any) -> None:
    with pytest.raises(m.UnknownField, match="not a field of the CRD"):
        build()


def test_builders_refuse_what_the_schema_refuses() -> None:
    with pytest.raises(ValueError, match="replicas"):
        m.node_group("app", image="x", credential="c", replicas=-1)


def test_launcher_passes_only_the_options_set_and_extra_flags_last(tmp_path: Path) -> None:
    config = OperatorConfig(
        log_path=tmp_path / "operator.log",
        env={"KUBECONFIG": "/k"},
        namespace="ns",
        cluster_id="c1",
        observe_period=1.5,
        leader_election=False,
        extra_args=["--prometheus-url", "http://p"],
    )
    assert config.command("--metrics-port", "9") == [
        sys.executable,
        "-m",
        "skyfleet.cli",
        "run",
        "--namespace",
        "ns",
        "--cluster-id",
        "c1",
        "--metrics-port",
        "0",
        "--liveness",
        "",
        "--observe-period",
        "1.5",
        "--lease-namespace",
        "default",
        "--no-leader-election",
        "--allow-endpoint",
        "127.0.0.1",
        "--prometheus-url",
        "http://p",
        "--metrics-port",
        "9",
    ]
    bare = OperatorConfig(
        log_path=tmp_path / "o.log", metrics_port=None, liveness=None, lease_namespace=None, allow_endpoint=None
    )
    assert bare.command() == [sys.executable, "-m", "skyfleet.cli", "run"]


def test_launcher_environment_adds_lease_tracing_and_overrides(tmp_path: Path) -> None:
    config = OperatorConfig(
        log_path=tmp_path / "operator.log",
        env={"KUBECONFIG": "/k", "SKYFLEET_LOST_GRACE": "60"},
        lease_name="lease-1",
        tracemalloc=25,
        extra_env={"SKYFLEET_LOST_GRACE": "5"},
    )
    assert config.environment() == {
        "MALLOC_ARENA_MAX": "2",
        "KUBECONFIG": "/k",
        "PYTHONWARNINGS": "ignore::Warning",
        "SKYFLEET_LEASE_NAME": "lease-1",
        "PYTHONTRACEMALLOC": "25",
        "SKYFLEET_LOST_GRACE": "5",
    }


def dockerfile_runtime_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the image that ships)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stage = text.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in stage.splitlines():
        if line.strip().startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def test_launcher_runs_the_operator_with_the_images_malloc_settings() -> None:
    """Benchmarks and end-to-end tests measure the process as the image runs it."""
    shipped = dockerfile_runtime_env()
    assert shipped["MALLOC_ARENA_MAX"] == "2"
    assert {k: v for k, v in shipped.items() if k.startswith("MALLOC_")} == IMAGE_ENV
    assert OperatorConfig(log_path=Path("o.log"), env={}).environment()["MALLOC_ARENA_MAX"] == "2"


def test_launcher_image_env_yields_to_the_callers_environment() -> None:
    """A variable the caller sets wins (MALLOC_ARENA_MAX=16 is glibc's default on two cores),
    and ``image_env=False`` leaves the environment as inherited."""
    inherited = {"MALLOC_ARENA_MAX": "16"}
    assert OperatorConfig(log_path=Path("o.log"), env=inherited).environment()["MALLOC_ARENA_MAX"] == "16"
    bare = OperatorConfig(log_path=Path("o.log"), env={}, image_env=False).environment()
    assert "MALLOC_ARENA_MAX" not in bare
