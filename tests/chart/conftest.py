"""Helpers for the chart tier: the pinned helm binary and rendering the chart with given values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.testing.tools import tools_bin
from tests.chart.helpers import CHART, KUBE_VERSION, Helm, Render


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    helm = tools_bin() / "helm"
    assert helm.is_file(), f"helm was not built: {helm}"
    return helm


@pytest.fixture(scope="session")
def helm(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm with an isolated config/cache home; returns the completed process (not checked)."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "PATH": "/usr/bin:/bin",
    }

    def run(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**env, **(extra_env or {})}
        return subprocess.run(
            [str(helm_bin), *args], check=False, capture_output=True, text=True, env=full_env, timeout=120
        )

    return run


@pytest.fixture(scope="session")
def render(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """`helm template` the chart with ``values`` (a dict) and return the objects it renders."""
    values_dir = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def _render(
        values: dict[str, Any] | None = None,
        *,
        api_versions: tuple[str, ...] = (),
        chart: Path = CHART,
        namespace: str = "skyfleet-system",
    ) -> list[dict[str, Any]]:
        values_file = values_dir / f"values-{next(counter)}.yaml"
        values_file.write_text(yaml.safe_dump(values or {}))
        args = ["template", "sf", str(chart), "-n", namespace, "--kube-version", KUBE_VERSION, "-f", str(values_file)]
        for api in api_versions:
            args += ["--api-versions", api]
        out = helm(*args)
        assert out.returncode == 0, out.stderr
        return [doc for doc in yaml.safe_load_all(out.stdout) if doc]

    return _render


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """A private copy of the chart that a test may modify."""
    dest = tmp_path / "skyfleet"
    shutil.copytree(CHART, dest)
    return dest
