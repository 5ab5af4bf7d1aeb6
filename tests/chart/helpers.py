"""Small helpers shared by the chart tests."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skyfleet.api.crd import KINDS

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "skyfleet"


def _kube_version() -> str:
    """The Kubernetes version the test control plane runs (pinned in tools/kube/go.mod).

    helm's built-in default depends on how it was built; rendering for the real version makes
    Chart.yaml's kubeVersion constraint count.
    """
    for line in (ROOT / "tools" / "kube" / "go.mod").read_text().splitlines():
        parts = line.split()
        if parts[:2] == ["require", "k8s.io/kubernetes"]:
            return parts[2].lstrip("v")
    raise AssertionError("k8s.io/kubernetes is not pinned in tools/kube/go.mod")


KUBE_VERSION = _kube_version()

Helm = Callable[..., subprocess.CompletedProcess[str]]
Render = Callable[..., list[dict[str, Any]]]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in by_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def metric_names() -> set[str]:
    """The metric names the operator exports: the contract in charts/skyfleet/metrics.txt."""
    lines = (CHART / "metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


class Cluster:
    """helm and kubectl against the shared control plane."""

    def __init__(self, control_plane: Any, helm: Helm) -> None:
        self.plane = control_plane
        self._helm = helm

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._helm(*args, "--kubeconfig", str(self.plane.kubeconfig), extra_env=dict(self.plane.env))

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.plane.kubectl(*args, input=input, check=check)
        return result

    def can(self, who: str, *args: str) -> bool:
        out = self.kubectl("auth", "can-i", *args, f"--as={who}", check=False)
        return out.stdout.strip() == "yes"

    def crd(self, plural: str) -> dict[str, Any]:
        out = self.kubectl("get", "crd", f"{plural}.skyfleet.io", "-o", "json")
        crd: dict[str, Any] = json.loads(out.stdout)
        return crd


def adopt_existing_crds(cluster: Cluster, release: str, namespace: str) -> None:
    """CRDs applied earlier with kubectl (as docs/install.md describes) become the release's."""
    for kind in KINDS:
        name = f"crd/{kind.crd.plural}.skyfleet.io"
        if cluster.kubectl("get", name, check=False).returncode != 0:
            continue
        cluster.kubectl("label", "--overwrite", name, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl(
            "annotate",
            "--overwrite",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )


def restore_crds(cluster: Cluster) -> None:
    """Leave the shared control plane's CRDs exactly as crds/ says, whatever a test did to them."""
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        cluster.kubectl("replace", "-f", str(path), check=False)
