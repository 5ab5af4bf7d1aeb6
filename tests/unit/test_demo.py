"""What `skyfleet demo` shows and decides, without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfleet.demo import ROOT, configured_cluster_reachable, demo_manifests, deployment_ready, render_table

pytestmark = pytest.mark.unit


def deployment(ready: str | None, generation: int = 2, observed: int | None = 2) -> dict[str, object]:
    status: dict[str, object] = {"phase": "Running", "observedGeneration": observed}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": ready, "reason": "AllRunning"}]
    return {"metadata": {"name": "shop", "generation": generation}, "status": status}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (deployment("True"), True),
        (deployment("False"), False),
        (deployment(None), False),
        (deployment("True", generation=3, observed=2), False),  # Ready for an older spec is not ready
    ],
)
def test_a_deployment_counts_as_ready_only_for_its_current_generation(obj: dict[str, object], expected: bool) -> None:
    assert deployment_ready(obj) is expected


def test_table_lists_each_instance_with_group_cloud_phase_and_address() -> None:
    instances = [
        {
            "metadata": {"name": "shop-web-0"},
            "spec": {"group": "web", "credential": "aws-virginia"},
            "status": {"phase": "Creating"},
        },
        {
            "metadata": {"name": "shop-db-0"},
            "spec": {"group": "db", "credential": "aws-frankfurt"},
            "status": {"phase": "Running", "address": "10.0.0.7"},
        },
    ]
    lines = render_table([deployment("False")], instances).splitlines()
    assert lines[0].split() == ["GROUP", "INSTANCE", "CLOUD", "PHASE", "ADDRESS"]
    assert lines[1].split() == ["db", "shop-db-0", "aws-frankfurt", "Running", "10.0.0.7"]
    assert lines[2].split() == ["web", "shop-web-0", "aws-virginia", "Creating", "-"]
    assert lines[-1] == "deployment/shop: Running  Ready=False(AllRunning)"


def test_empty_fleet_says_so() -> None:
    assert "(no Instances yet)" in render_table([], [])


def test_demo_points_every_credential_at_the_emulator_and_keeps_the_rest() -> None:
    docs = demo_manifests(ROOT / "examples", "http://127.0.0.1:4567/")
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CloudCredential") == 2
    assert {"Secret", "Image", "Deployment"} <= set(kinds)
    for doc in docs:
        if doc["kind"] == "CloudCredential":
            assert doc["spec"]["endpoint"] == {"url": "http://127.0.0.1:4567/"}
    regions = {d["spec"]["region"] for d in docs if d["kind"] == "CloudCredential"}
    assert len(regions) == 2  # two regions of one emulator act as two clouds


def test_no_kubeconfig_means_no_configured_cluster(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    assert configured_cluster_reachable(env) is False


def test_demo_without_its_extra_says_which_install_brings_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    import skyfleet.demo
    from skyfleet.demo import DEMO_PACKAGES, DemoOptions, missing_demo_packages, run_demo

    assert missing_demo_packages() == []  # the test environment has the extra
    assert missing_demo_packages(lambda module: None) == list(DEMO_PACKAGES.values())
    # As after a plain `pip install skyfleet`: moto cannot be found (a stand-in for its absence).
    real = importlib.util.find_spec
    monkeypatch.setattr(
        skyfleet.demo,
        "missing_demo_packages",
        lambda: missing_demo_packages(lambda m: None if m == "moto" else real(m)),
    )
    assert run_demo(DemoOptions(once=True)) == 2
    err = capsys.readouterr().err
    assert "moto[server]" in err
    assert "pip install 'skyfleet[demo]'" in err


def test_the_cli_and_the_demo_module_import_no_test_only_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, skyfleet.cli, skyfleet.demo; skyfleet.cli.build_parser().format_help();"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('moto', 'cryptography', 'boto3', 'pytest'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
