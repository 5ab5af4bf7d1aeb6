"""Fixtures for tests against the real control plane that need Skyfleet's CRDs installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from skyfleet.api.crd import KINDS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def installed_crds(control_plane: Any) -> list[str]:
    """Apply crds/ to the shared control plane and wait until every CRD is Established."""
    control_plane.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    names = [f"crd/{kind.crd.plural}.skyfleet.io" for kind in KINDS]
    control_plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    # Refresh kubectl's discovery cache, as a user would after installing CRDs, so short names,
    # categories and `kubectl explain` see the new kinds in whatever order the tests run.
    control_plane.kubectl("api-resources", "--api-group=skyfleet.io")
    return names
