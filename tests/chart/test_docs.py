"""docs/install.md shows what the chart really does."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.chart.helpers import CHART, KUBE_VERSION, ROOT, Helm, Render, one

pytestmark = pytest.mark.chart

DOC = ROOT / "docs" / "install.md"


def test_argocd_snippet_in_docs_is_what_the_chart_ships(render: Render) -> None:
    text = DOC.read_text()
    block = re.search(r"<!-- argocd-health:begin.*?-->\s*```yaml\n(.*?)```\s*<!-- argocd-health:end -->", text, re.S)
    assert block, "the generated Argo CD block is missing from docs/install.md"
    documented = yaml.safe_load(block.group(1))["data"]
    shipped = one(render({"argocd": {"healthChecks": True}}), "ConfigMap")["data"]
    assert documented == shipped, "regenerate the block in docs/install.md from charts/skyfleet/argocd/"


def test_schema_error_quoted_in_docs_is_helms(helm: Helm) -> None:
    out = helm("template", "skyfleet", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicaCont=2")
    assert out.returncode != 0
    quoted = re.search(r"\$ helm install skyfleet charts/skyfleet --set replicaCont=2\n(.*?)```", DOC.read_text(), re.S)
    assert quoted
    for line in quoted.group(1).strip().splitlines():
        assert line in out.stderr, line


def test_documented_values_exist(render: Render) -> None:
    """Every `--set key=` in the docs names a real value (the schema would reject it otherwise)."""
    keys = set(re.findall(r"--set(?:-string)? '?([A-Za-z.]+)=", DOC.read_text())) - {"replicaCont"}  # the typo example
    assert {"image.repository", "watchNamespaces", "metrics.serviceMonitor.enabled"} <= keys
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in keys:
        node = values
        for part in key.split("."):
            if part == "labels" or not isinstance(node, dict):
                break
            assert part in node, f"docs/install.md sets {key}, which the chart does not have"
            node = node[part]
