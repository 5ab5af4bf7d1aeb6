"""Small helpers shared by the chart tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
