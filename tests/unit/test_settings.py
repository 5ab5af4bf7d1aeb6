"""Operator settings from the environment and `skyfleet run` flags."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from skyfleet.settings import Settings

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("SKYFLEET_"):
            monkeypatch.delenv(key)


def test_defaults_are_cluster_wide_with_leader_election() -> None:
    s = Settings()
    assert s.cluster_wide
    assert s.leader_election
    assert (s.log_format, s.workers, s.metrics_port) == ("text", 8, 9090)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("team-a, team-b", ["team-a", "team-b"]), ('["x","y"]', ["x", "y"]), ("", [])],
)
def test_namespaces_from_env(monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]) -> None:
    monkeypatch.setenv("SKYFLEET_NAMESPACES", value)
    s = Settings()
    assert s.namespaces == expected
    assert s.cluster_wide == (not expected)


def test_flags_win_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLEET_CLUSTER_ID", "from-env")
    monkeypatch.setenv("SKYFLEET_LOG_FORMAT", "json")
    s = Settings(cluster_id="from-flag")
    assert (s.cluster_id, s.log_format) == ("from-flag", "json")


def test_empty_liveness_disables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLEET_LIVENESS_ENDPOINT", "")
    assert Settings().liveness_endpoint is None


def test_allowed_endpoints_from_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYFLEET_ALLOWED_ENDPOINTS", "127.0.0.1, *.lab.example.org,10.0.0.0/8")
    assert Settings().allowed_endpoints == ["127.0.0.1", "*.lab.example.org", "10.0.0.0/8"]
    assert Settings(allowed_endpoints=["::1"]).allowed_endpoints == ["::1"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"log_format": "xml"},
        {"workers": 0},
        {"cluster_id": "has spaces"},
        {"metrics_port": 70000},
        {"typo": 1},
        {"allowed_endpoints": ["not a host!"]},
        {"cloud_threads": 0},
    ],
)
def test_bad_settings_are_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**overrides)  # type: ignore[arg-type]


def test_run_rejects_bad_flags_without_starting(capsys: pytest.CaptureFixture[str]) -> None:
    from skyfleet.cli import main

    assert main(["run", "--cluster-id", "not valid!", "--no-leader-election"]) == 2
    assert "cluster_id" in capsys.readouterr().err
