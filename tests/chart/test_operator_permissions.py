"""`skyfleet run` with exactly what the chart gives it: its ServiceAccount's token and its environment.

There are no nodes, so the chart's pod never runs; the same process runs here instead, logged in
as the chart's ServiceAccount, against EC2 emulated on loopback. If the chart's RBAC missed a
verb the operator needs, the shop would not come up, or the operator would log a Forbidden.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.net import free_port
from tests.chart.helpers import CHART, ROOT, Cluster, Helm, restore_crds

pytestmark = pytest.mark.chart

RELEASE = "sfop"


def example_objects(endpoint: str) -> dict[str, Any]:
    """examples/ with every CloudCredential pointed at the emulator, and only the shop's db tier, as one List."""
    items = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "CloudCredential":
                doc["spec"]["endpoint"] = {"url": endpoint}
            if doc and doc["kind"] == "Deployment":
                doc["spec"]["nodeGroups"] = doc["spec"]["nodeGroups"][:1]
            if doc:
                items.append(doc)
    return {"apiVersion": "v1", "kind": "List", "items": items}


def ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    return current and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="module")
def cluster(control_plane: Any, helm: Helm) -> Iterator[Cluster]:
    cluster = Cluster(control_plane, helm)
    yield cluster
    restore_crds(cluster)


@pytest.fixture(params=["cluster-wide", "namespaced"])
def installed(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(operator namespace, application namespace) with the chart installed in the given mode."""
    suffix = uuid.uuid4().hex[:6]
    namespace, app = f"skyfleet-op-{suffix}", f"shop-{suffix}"
    cluster.kubectl("create", "namespace", app)
    release_args = ["--set", "crds.install=false"]
    if request.param == "namespaced":
        release_args += ["--set", f"watchNamespaces={{{app}}}"]
    if cluster.kubectl("get", "crd/deployments.skyfleet.io", check=False).returncode != 0:
        cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/deployments.skyfleet.io")
    out = cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "--create-namespace", *release_args)
    assert out.returncode == 0, out.stderr
    yield namespace, app
    cluster.helm("uninstall", RELEASE, "-n", namespace)
    for ns in (namespace, app):
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def service_account_kubeconfig(cluster: Cluster, namespace: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", f"{RELEASE}-skyfleet", "-n", namespace, "--duration=20m").stdout.strip()
    config = yaml.safe_load(Path(cluster.plane.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return path


def chart_environment(cluster: Cluster, namespace: str) -> dict[str, str]:
    """The operator container's env as installed, with the downward API filled in."""
    deployment = json.loads(
        cluster.kubectl("get", "deploy", f"{RELEASE}-skyfleet", "-n", namespace, "-o", "json").stdout
    )
    env: dict[str, str] = {}
    for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "valueFrom" not in var:
            env[var["name"]] = var.get("value", "")  # the API server drops empty values
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace":
            env[var["name"]] = namespace
        elif var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name":
            env[var["name"]] = f"{RELEASE}-skyfleet-0"
    return env


def test_operator_serves_the_shop_with_the_charts_permissions(
    cluster: Cluster, installed: tuple[str, str], tmp_path: Path
) -> None:
    namespace, app = installed
    env = chart_environment(cluster, namespace)
    # Same settings as the pod, on free loopback ports instead of the pod's own.
    metrics_port, liveness_port = free_port(), free_port()
    env["SKYFLEET_METRICS_PORT"] = str(metrics_port)
    env["SKYFLEET_METRICS_HOST"] = "127.0.0.1"
    env["SKYFLEET_OBSERVE_PERIOD"] = "2"  # only timing: see the VM run sooner than every 15 s
    env["SKYFLEET_ALLOW_ENDPOINT"] = "127.0.0.1"  # the emulator listens on loopback
    env["SKYFLEET_LIVENESS"] = env["SKYFLEET_LIVENESS"].replace("0.0.0.0:8081", f"127.0.0.1:{liveness_port}")
    kubeconfig = service_account_kubeconfig(cluster, namespace, tmp_path / "kubeconfig")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SKYFLEET_", "KUBECONFIG"))}

    log_path = tmp_path / "operator.log"
    with EC2Emulator() as emulator, log_path.open("wb") as log:
        cluster.kubectl("apply", "-n", app, "-f", "-", input=json.dumps(example_objects(emulator.endpoint)))
        operator = subprocess.Popen(
            [sys.executable, "-m", "skyfleet.cli", "run"],  # what the image's `skyfleet run` entry point calls
            env={**base, **env, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 150
            while True:
                assert operator.poll() is None, log_path.read_text()[-3000:]
                shop = json.loads(
                    cluster.kubectl("get", "deployments.skyfleet.io", "shop", "-n", app, "-o", "json").stdout
                )
                if ready(shop):
                    break
                assert time.monotonic() < deadline, cluster.kubectl("get", "skyfleet", "-n", app).stdout
                time.sleep(1)

            with urllib.request.urlopen(f"http://127.0.0.1:{liveness_port}/healthz", timeout=5) as probe:
                assert probe.status == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as scrape:
                assert "skyfleet_" in scrape.read().decode()
            lease = json.loads(
                cluster.kubectl("get", "lease", f"{RELEASE}-skyfleet", "-n", namespace, "-o", "json").stdout
            )
            assert lease["spec"]["holderIdentity"]

            # The example's ScalingPolicy governs the web tier, which this shop lacks: its status
            # (written through scalingpolicies/status) says so.
            deadline = time.monotonic() + 30
            while True:
                policy = json.loads(
                    cluster.kubectl("get", "scalingpolicies.skyfleet.io", "shop-web", "-n", app, "-o", "json").stdout
                )
                reasons = [c["reason"] for c in policy.get("status", {}).get("conditions", []) if c["type"] == "Ready"]
                if reasons:
                    break
                assert time.monotonic() < deadline, "the ScalingPolicy got no status"
                time.sleep(1)
            assert reasons == ["TargetNotFound"]

            # Deleting needs finalizer patches and Instance deletes (and no write to any Secret).
            cluster.kubectl("delete", "deployments.skyfleet.io", "shop", "-n", app, "--wait=false")
            deadline = time.monotonic() + 60
            while cluster.kubectl("get", "instances.skyfleet.io", "-n", app, "-o", "name").stdout.strip():
                assert time.monotonic() < deadline, "Instances were not deleted"
                time.sleep(1)
        finally:
            os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait()
    output = log_path.read_text()
    assert "forbidden" not in output.lower(), [line for line in output.splitlines() if "orbidden" in line][:5]
