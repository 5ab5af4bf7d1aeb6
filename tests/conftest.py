"""Fixtures for tests against a real local control plane (see skyfleet.testing.controlplane)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.testing.controlplane import ControlPlane

CRDS = Path(__file__).resolve().parents[1] / "crds"


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """One etcd + kube-apiserver + kube-controller-manager for the whole session, stopped at its end.

    Skyfleet's CRDs are installed before the controller-manager starts, as they would be long before
    the operator runs in a real cluster, so garbage collection covers the custom kinds from the start.
    """
    with ControlPlane(crds=[CRDS] if CRDS.is_dir() else []) as plane:
        yield plane


@pytest.fixture
def namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test, with its default ServiceAccount in place."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:50].rstrip("-")
    name = f"{slug or 'test'}-{secrets.token_hex(3)}"
    control_plane.kubectl("create", "namespace", name)
    # Pods are rejected until the controller-manager has created the default ServiceAccount.
    control_plane.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
    yield name
    # Not waiting: namespace deletion takes seconds and nothing later depends on its completion.
    control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
