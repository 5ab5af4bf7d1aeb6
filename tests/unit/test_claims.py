"""What the README, docs and chart claim about the product agrees with the product."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.cli import RUN_FLAGS, env_var
from skyfleet.settings import Settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _validations(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found += node.get("x-kubernetes-validations", [])
        for value in node.values():
            found += _validations(value)
    elif isinstance(node, list):
        for value in node:
            found += _validations(value)
    return found


def minimum_kubernetes() -> tuple[tuple[int, int], tuple[int, int]]:
    """(what the CRDs alone need, what the chart needs), from what they use."""
    crds = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("skyfleet.io_*.yaml"))]
    rules = [rule for crd in crds for rule in _validations(crd)]
    crd_min = (1, 25)  # x-kubernetes-validations (CEL) on by default
    if any("fieldPath" in r or "reason" in r for r in rules):
        crd_min = (1, 28)
    templates = " ".join(p.read_text() for p in (ROOT / "charts/skyfleet/templates").glob("*.yaml"))
    chart_min = crd_min
    if re.search(r"admissionregistration\.k8s\.io/v1\s*\n\s*kind: ValidatingAdmissionPolicy", templates):
        chart_min = max(chart_min, (1, 30))
    return crd_min, chart_min


def test_chart_and_docs_state_the_kubernetes_the_crds_and_policy_need() -> None:
    (crd_major, crd_minor), (major, minor) = minimum_kubernetes()
    chart = yaml.safe_load((ROOT / "charts/skyfleet/Chart.yaml").read_text())
    assert chart["kubeVersion"] == f">={major}.{minor}.0-0"
    readme = (ROOT / "README.md").read_text()
    assert f"Kubernetes {major}.{minor} or newer" in readme
    assert f"need {crd_major}.{crd_minor}" in readme
    assert f"You need Kubernetes {major}.{minor} or newer" in (ROOT / "docs/install.md").read_text()


def test_readme_states_the_liveness_default_the_code_uses() -> None:
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `--liveness"))
    default = row.split("|")[3].strip().strip("`")
    assert default == Settings.model_fields["liveness_endpoint"].default


def test_readme_names_each_run_flag_with_its_variable() -> None:
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `--")]
    for flag, _, _ in RUN_FLAGS:
        if flag == "--all-namespaces":
            continue
        bare = flag.removeprefix("--")
        row = next((r for r in rows if re.search(rf"`--(\[no-\])?{bare}[` ]", r)), None)
        assert row is not None, f"README's flag table lacks {flag}"
        assert f"`{env_var(flag)}`" in row, f"README names another variable for {flag}: {row}"
