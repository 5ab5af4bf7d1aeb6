"""docs/install.md shows what the chart really does."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from pathlib import Path
from typing import Any

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


LEGACY = "skyfleet.io/credential-in-use"


def test_documented_legacy_finalizer_removal_frees_secrets_and_nothing_else(control_plane: Any, tmp_path: Path) -> None:
    """The upgrade note's block, run as written against Secrets an earlier version left behind."""
    block = re.search(
        r"<!-- legacy-finalizer:begin.*?-->\s*```sh\n(.*?)```\s*<!-- legacy-finalizer:end -->", DOC.read_text(), re.S
    )
    assert block, "the legacy-finalizer block is missing from docs/install.md"
    ns = f"legacy-{uuid.uuid4().hex[:6]}"
    kubectl = control_plane.kubectl
    kubectl("create", "namespace", ns)

    def secret(name: str, *finalizers: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "finalizers": list(finalizers)}}

    def finalizers(name: str) -> list[str] | None:
        out = kubectl("get", "secret", name, "-n", ns, "--ignore-not-found", "-o", "json").stdout
        return json.loads(out)["metadata"].get("finalizers", []) if out.strip() else None

    docs = [
        secret("held", LEGACY),
        secret("shared", "example.com/other", LEGACY),
        secret("plain"),
        secret("deleting", LEGACY),
    ]
    kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    kubectl("delete", "secret", "deleting", "-n", ns, "--wait=false")

    def run(**extra: str) -> str:
        env = {
            "PATH": f"{control_plane.tools_bin}:/usr/bin:/bin",
            "KUBECONFIG": str(control_plane.kubeconfig),
            "HOME": str(tmp_path),  # kubectl's discovery cache
            **extra,
        }
        out = subprocess.run(
            ["bash", "-c", block.group(1)], check=False, capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    try:
        out = run()
        assert finalizers("held") == []
        assert finalizers("shared") == ["example.com/other"], "only Skyfleet's own finalizer goes"
        assert finalizers("plain") == []
        assert finalizers("deleting") == [LEGACY], "one already being deleted would go at once: kept"
        assert f"skipped {ns}/deleting" in out
        kubectl("delete", "secret", "held", "-n", ns, "--timeout=30s")
        assert finalizers("held") is None, "deleted, not stuck in Terminating"

        run(ALL="1")
        assert finalizers("deleting") is None
        assert run() == "", "a second run finds nothing to do"
    finally:
        kubectl(
            "patch", "secret", "shared", "-n", ns, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
        )
        kubectl(
            "patch",
            "secret",
            "deleting",
            "-n",
            ns,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        kubectl("delete", "namespace", ns, "--wait=false", check=False)
