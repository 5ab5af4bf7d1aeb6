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
