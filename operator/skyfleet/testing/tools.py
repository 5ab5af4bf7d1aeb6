"""Where the control-plane binaries (etcd, kube-apiserver, kube-controller-manager, kubectl, helm) live.

They are built from the upstream Go modules pinned under ``tools/`` by ``tools/build.sh`` into a cache
outside the repository; the first call builds them (minutes), later calls only find them.
``SKYFLEET_TOOLS_BIN`` names a ready directory instead, for machines that ship the binaries.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

__all__ = ["REQUIRED", "ToolsError", "repo_root", "tools_bin"]

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


class ToolsError(RuntimeError):
    """The binaries are neither configured nor buildable here."""


def repo_root() -> Path:
    """The source checkout this package runs from (``operator/skyfleet/testing`` is three levels down)."""
    return Path(__file__).resolve().parents[3]


def _check(bin_dir: Path, origin: str) -> Path:
    missing = [name for name in REQUIRED if not os.access(bin_dir / name, os.X_OK)]
    if missing:
        raise ToolsError(f"{origin} {bin_dir} lacks {', '.join(missing)}")
    return bin_dir


@functools.cache
def tools_bin() -> Path:
    """The directory holding all of ``REQUIRED``, building them on first use."""
    override = os.environ.get("SKYFLEET_TOOLS_BIN")
    if override:
        return _check(Path(override).expanduser().resolve(), "SKYFLEET_TOOLS_BIN")
    script = repo_root() / "tools" / "build.sh"
    if not script.is_file():
        raise ToolsError(
            f"{script} not found: the package is not running from a source checkout; "
            "set SKYFLEET_TOOLS_BIN to a directory with " + ", ".join(REQUIRED)
        )
    # stderr stays attached so a cold build (minutes) shows what it is doing.
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ToolsError(f"{script} failed with exit code {result.returncode}")
    return _check(Path(lines[-1]), f"{script} printed")
