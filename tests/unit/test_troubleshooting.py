"""docs/troubleshooting.md explains every reason the operator writes into a condition or an Event."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "skyfleet"
# CamelCase with at least two capitals: how reasons are spelled (VMCreated, NoMatch).
REASON_SHAPE = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
# Such literals that are not reasons: class and type names, condition types, bake steps, units.
NOT_REASONS = {
    "BootSource", "BoundedProgressStorage", "ConfigMap", "CopyImage", "CreateFailure",
    "CredentialUnavailable", "CredentialView", "DeleteBuilder", "DeleteImage", "DependencyError",
    "DigestDiffBaseStorage", "EffectiveGroup", "GiB", "ImageError", "InstanceView", "LaunchBuilder",
    "MiB", "NewInstance", "NoAddresses", "NotFound", "OrphanPlan", "OrphanedVMs", "RegionCheck",
    "RegionChecks", "RegionFailure", "RegionsVerdict", "ScaleIn", "ScaleOut", "SizeDown", "SizeUp",
    "TemplateError", "WaitBuilder", "WaitImage", "CloudCredential", "ScalingPolicy", "LoopSpec",
    "ObjectLogEvents", "StatusModel", "DeploymentView", "GroupView",
}  # fmt: skip


def reasons_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("reconcile", "handlers"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = node.value
                    if REASON_SHAPE.match(text) and sum(c.isupper() for c in text) >= 2:
                        found.add(text)
    return found - NOT_REASONS


def test_every_reason_the_code_emits_is_documented() -> None:
    documented = set(re.findall(r"`([A-Za-z0-9]+)`", (ROOT / "docs" / "troubleshooting.md").read_text()))
    missing = sorted(reasons_in_code() - documented)
    assert not missing, f"add these reasons to docs/troubleshooting.md (or to NOT_REASONS): {missing}"


def test_the_scan_finds_reasons() -> None:
    # Guards the scan itself: these are written by the code today.
    assert {"SecretNotFound", "VMCreated", "UnknownParameter", "NoMatch"} <= reasons_in_code()
