"""Operator settings from the environment and `skyfleet run` flags."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from skyfleet.cli import RUN_FLAGS, env_var
from skyfleet.settings import DEPRECATED_ENV, Settings

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


# A valid value per flag, as the environment would give it, and what the setting becomes.
ENV_VALUES = {
    "--namespace": ("team-a,team-b", ["team-a", "team-b"]),
    "--cluster-id": ("c1", "c1"),
    "--metrics-port": ("9191", 9191),
    "--metrics-host": ("127.0.0.1", "127.0.0.1"),
    "--log-format": ("json", "json"),
    "--log-level": ("DEBUG", "DEBUG"),
    "--liveness": ("http://0.0.0.0:9999/healthz", "http://0.0.0.0:9999/healthz"),
    "--workers": ("3", 3),
    "--allow-endpoint": ("127.0.0.1", ["127.0.0.1"]),
    "--cloud-threads": ("5", 5),
    "--observe-period": ("7", 7.0),
    "--resync-period": ("9", 9.0),
    "--prometheus-url": ("http://prometheus.monitoring:9090", "http://prometheus.monitoring:9090"),
    "--scaling-period": ("11", 11.0),
    "--lease-namespace": ("ops", "ops"),
    "--leader-election": ("false", False),
}


@pytest.mark.parametrize(("flag", "field"), [(f, field) for f, field, _ in RUN_FLAGS if f != "--all-namespaces"])
def test_every_run_flag_reads_skyfleet_flag_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, flag: str, field: str
) -> None:
    raw, expected = ENV_VALUES[flag]
    monkeypatch.setenv(env_var(flag), raw)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(("flag", "field"), [(f, field) for f, field, _ in RUN_FLAGS if f != "--all-namespaces"])
def test_run_help_shows_each_flags_default_and_variable(flag: str, field: str) -> None:
    help_text = next(kw["help"] for f, _, kw in RUN_FLAGS if f == flag)
    assert f"env: {env_var(flag)})" in help_text
    stated = help_text.rsplit("(default: ", 1)[1].split(";")[0]
    default = Settings.model_fields[field].default
    if isinstance(default, bool):
        assert stated == ("on" if default else "off")
    elif isinstance(default, (int, float)):
        assert float(stated) == default
    elif isinstance(default, str):
        assert stated == default


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED_ENV.items()))
def test_old_variable_names_still_work_and_the_new_one_wins(
    monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> None:
    field = {"SKYFLEET_NAMESPACE": "namespaces", "SKYFLEET_LIVENESS": "liveness_endpoint"}.get(new, "allowed_endpoints")
    value = "http://0.0.0.0:1/healthz" if field == "liveness_endpoint" else "127.0.0.1"
    monkeypatch.setenv(old, value)
    before = getattr(Settings(), field)
    assert before in (value, [value])
    other = "http://0.0.0.0:2/healthz" if field == "liveness_endpoint" else "10.0.0.1"
    monkeypatch.setenv(new, other)
    assert getattr(Settings(), field) in (other, [other])


def test_run_without_any_cluster_says_so_and_exits_instead_of_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "SKYFLEET_"))}
    env.update(KUBECONFIG=str(tmp_path / "no-such-kubeconfig"), HOME=str(tmp_path))
    cmd = [sys.executable, "-m", "skyfleet.cli", "run", "--cluster-id", "c1", "--liveness", "", "--metrics-port", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)
    assert proc.returncode == 2
    assert "no Kubernetes cluster configured" in proc.stderr
    assert "skyfleet demo" in proc.stderr
    assert "Traceback" not in proc.stderr
