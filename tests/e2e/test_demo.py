"""`make demo ONCE=1` on a bare machine, and its refusal to touch a configured cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
MARKER = "SKYFLEET_DEMO_TEST_RUN"


def processes_marked(token: str) -> list[str]:
    """Command lines of live processes that inherited the demo run's marker in their environment.

    Every process the demo starts (control plane, emulator, operator) inherits its environment,
    so a marker there finds them even after they were reparented, and ignores other test runs.
    """
    needle = f"{MARKER}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return found


def demo_state_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("skyfleet-demo-*")}


def bare_env(tmp_path: Path) -> dict[str, str]:
    """This machine's environment with no cluster configured: KUBECONFIG names a file that does not exist."""
    return {**os.environ, "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")}


def test_make_demo_once_reaches_ready_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before_dirs = demo_state_dirs()
    token = uuid.uuid4().hex
    result = subprocess.run(
        ["make", "-s", "demo", "ONCE=1"],
        cwd=ROOT,
        env={**bare_env(tmp_path), MARKER: token},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "Ready"
    table = result.stdout[result.stdout.rindex("GROUP") :]
    rows = [line.split() for line in table.splitlines()[1:] if line.startswith(("db ", "web "))]
    assert sorted(r[0] for r in rows) == ["db", "web", "web", "web"]
    assert all(r[3] == "Running" for r in rows)
    assert {r[2] for r in rows if r[0] == "web"} == {"aws-frankfurt", "aws-virginia"}  # two clouds
    assert "deployment/shop: Running" in table
    assert processes_marked(token) == []
    assert demo_state_dirs() == before_dirs


def test_demo_refuses_a_configured_cluster(control_plane: Any, tmp_path: Path) -> None:
    env = {**bare_env(tmp_path), **control_plane.env}
    result = subprocess.run(
        [sys.executable, "-m", "skyfleet.cli", "demo", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "--use-current-cluster" in result.stderr
    namespaces = control_plane.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/shop" not in namespaces
