"""Where the test binaries (etcd, kube-apiserver, kube-controller-manager, kubectl, helm, prometheus) live.

They are built from the upstream Go modules pinned under ``tools/`` by ``tools/build.sh`` (and, under a
cache key of its own, ``tools/prometheus/build.sh``) into a cache outside the repository; the first call
builds them (minutes), later calls only find them. ``SKYFLEET_TOOLS_BIN`` names a ready directory
instead, for machines that ship the binaries.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

__all__ = ["REQUIRED", "ToolsError", "prometheus_binary", "repo_root", "tools_bin"]

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
    return _check(_build(script, REQUIRED), f"{script} printed")


@functools.cache
def prometheus_binary() -> Path:
    """The Prometheus server, from ``SKYFLEET_TOOLS_BIN`` when it has one, else built on first use."""
    override = os.environ.get("SKYFLEET_TOOLS_BIN")
    if override and os.access(Path(override).expanduser() / "prometheus", os.X_OK):
        return Path(override).expanduser().resolve() / "prometheus"
    script = repo_root() / "tools" / "prometheus" / "build.sh"
    binary = _build(script, ("prometheus",)) / "prometheus"
    if not os.access(binary, os.X_OK):
        raise ToolsError(f"{script} printed a directory without prometheus: {binary.parent}")
    return binary


def _build(script: Path, names: tuple[str, ...]) -> Path:
    """Run a build script and return the bin directory it prints last."""
    if not script.is_file():
        raise ToolsError(
            f"{script} not found: the package is not running from a source checkout; "
            "set SKYFLEET_TOOLS_BIN to a directory with " + ", ".join(names)
        )
    # stderr stays attached so a cold build (minutes) shows what it is doing.
    result = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ToolsError(f"{script} failed with exit code {result.returncode}")
    return Path(lines[-1])
