"""The operator's metrics: the contract the chart's dashboard and alerts rely on, and the sums."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from skyfleet import __version__
from skyfleet.metrics import Metrics

pytestmark = pytest.mark.unit

CONTRACT = Path(__file__).resolve().parents[2] / "charts/skyfleet/metrics.txt"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, tuple(sorted(labels.items()))))


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    metrics = Metrics()
    # Touch every labelled family once so each appears in the exposition.
    metrics.reconciled("deployment", 0.0)
    metrics.observe_cloud_call("ec2", "create", "throttled", 0.1)
    metrics.set_instance_phases("ns", "aws", "ec2", {"Running": 1})
    metrics.instance_ready("ec2", datetime.now(UTC))
    metrics.set_orphans("ns", "aws", "ec2", 0)
    metrics.watch_event("deployments")
    metrics.scaling_decision("out")
    metrics.metric_query_error("QueryInvalid")
    metrics.image_builds.labels("ec2", "success").inc()
    metrics.image_build_duration.labels("ec2").observe(60.0)
    metrics.set_builders("ns", "web", {"ec2": 1})
    text = generate_latest(metrics.registry).decode()
    exported = set(re.findall(r"^# TYPE (\S+)", text, flags=re.MULTILINE))
    contract = {line for line in CONTRACT.read_text().splitlines() if line and not line.startswith("#")}
    # Both ways: the dashboard and alerts may rely on every listed name, and nothing goes unlisted.
    assert exported == contract
    assert value(metrics, "skyfleet_build_info", version=__version__) == 1


def test_process_and_python_runtime_metrics_are_exported() -> None:
    metrics = Metrics()
    assert (value(metrics, "process_resident_memory_bytes") or 0) > 0
    assert (value(metrics, "process_start_time_seconds") or 0) > 0
    assert value(metrics, "python_gc_collections_total", generation="0") is not None


def test_cloud_calls_count_by_outcome_and_throttling_separately() -> None:
    metrics = Metrics()
    for outcome in ("success", "success", "throttled", "quota_exceeded"):
        metrics.observe_cloud_call("ec2", "create", outcome, 0.2)
    assert value(metrics, "skyfleet_cloud_requests_total", provider="ec2", operation="create", outcome="success") == 2
    assert value(metrics, "skyfleet_cloud_throttled_total", provider="ec2", operation="create") == 1
    assert value(metrics, "skyfleet_cloud_request_duration_seconds_count", provider="ec2", operation="create") == 4


def test_instances_and_orphans_add_up_over_credentials_of_one_provider() -> None:
    metrics = Metrics()
    metrics.set_instance_phases("a", "aws-1", "ec2", {"Running": 2, "Creating": 1})
    metrics.set_instance_phases("b", "aws-2", "ec2", {"Running": 3})
    metrics.set_orphans("a", "aws-1", "ec2", 1)
    metrics.set_orphans("b", "aws-2", "ec2", 2)
    assert value(metrics, "skyfleet_instances", provider="ec2", phase="Running") == 5
    assert value(metrics, "skyfleet_orphaned_vms", provider="ec2") == 3
    # The creating VM came up: a phase nobody is in any more reads 0, not its last value.
    metrics.set_instance_phases("a", "aws-1", "ec2", {"Running": 3})
    assert value(metrics, "skyfleet_instances", provider="ec2", phase="Creating") == 0
    assert value(metrics, "skyfleet_instances", provider="ec2", phase="Running") == 6


def test_reconcile_results_and_time_to_ready() -> None:
    metrics = Metrics()
    metrics.reconciled("image", 0.0)
    metrics.reconciled("image", 0.0, error=True)
    metrics.instance_ready("ec2", datetime.now(UTC) - timedelta(seconds=42))
    assert value(metrics, "skyfleet_reconcile_total", controller="image", result="success") == 1
    assert value(metrics, "skyfleet_reconcile_errors_total", controller="image") == 1
    assert value(metrics, "skyfleet_instance_time_to_ready_seconds_bucket", provider="ec2", le="30.0") == 0
    assert value(metrics, "skyfleet_instance_time_to_ready_seconds_bucket", provider="ec2", le="60.0") == 1


def test_builder_vms_add_up_over_images_and_drop_to_zero_when_done() -> None:
    metrics = Metrics()
    metrics.set_builders("a", "web", {"ec2": 2})
    metrics.set_builders("b", "db", {"ec2": 1, "gce": 1})
    assert value(metrics, "skyfleet_builder_vms", provider="ec2") == 3
    assert value(metrics, "skyfleet_builder_vms", provider="gce") == 1
    metrics.set_builders("b", "db", {})
    assert value(metrics, "skyfleet_builder_vms", provider="ec2") == 2
    assert value(metrics, "skyfleet_builder_vms", provider="gce") == 0
