"""The layering the design promises, checked from the source: decisions stay pure.

reconcile/ imports neither kopf, nor libcloud, nor the Kubernetes client; connectors/, api/ and
settings do not import kopf; only connectors/ imports libcloud.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "skyfleet"


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def modules(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


@pytest.mark.parametrize("path", modules("reconcile"), ids=lambda p: p.name)
def test_reconcile_is_pure(path: Path) -> None:
    assert imported_roots(path).isdisjoint({"kopf", "libcloud", "kubernetes", "boto3", "requests", "aiohttp"})


def test_decisions_connectors_and_api_do_not_import_kopf() -> None:
    # kopf belongs to the adapters (handlers/) and the operator's setup (run, logging); the layers
    # that must work without it are listed, so a new setup module needs no change here.
    kopf_free = [*modules("reconcile"), *modules("connectors"), *modules("api"), PACKAGE / "settings.py"]
    offenders = [p.relative_to(PACKAGE) for p in kopf_free if "kopf" in imported_roots(p)]
    assert offenders == []


def test_only_connectors_import_libcloud() -> None:
    allowed = set(modules("connectors"))
    offenders = [p.relative_to(PACKAGE) for p in modules() if "libcloud" in imported_roots(p) and p not in allowed]
    assert offenders == []
