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


def _pins(lock: Path) -> dict[str, str]:
    return {
        m.group(1).lower().replace("_", "-"): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", lock.read_text(), flags=re.MULTILINE)
    }


@pytest.mark.parametrize(("lock", "extras"), [("requirements.lock", ()), ("requirements-test.lock", ("test",))])
def test_locks_pin_every_declared_dependency_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *(d for e in extras for d in project["optional-dependencies"][e])]
    pins = _pins(ROOT / lock)
    for line in declared:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{lock} lacks {name}: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{lock} pins {name}=={pins[name]}, not {req}"
    text = (ROOT / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text)[1:]
    assert all("--hash=sha256:" in block for block in blocks), "every pin carries its hashes"


def test_the_version_is_the_same_everywhere_and_the_build_reads_the_spdx_license() -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "charts/skyfleet/Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (version, version)
    assert f"ARG VERSION={version}\n" in (ROOT / "Dockerfile").read_text()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    # An SPDX expression in project.license needs setuptools 77 (PEP 639).
    assert isinstance(
        project_license := tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"], str
    )
    assert project_license == "Apache-2.0"
    assert build == ["setuptools>=77"]


def test_committed_api_reference_is_generated_from_the_crds() -> None:
    from skyfleet.api.reference import render_reference

    committed = (ROOT / "docs" / "api-reference.md").read_text()
    assert committed == render_reference(), "docs/api-reference.md is stale: run `make crds` and commit the result"
