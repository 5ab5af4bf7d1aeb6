"""The Grafana dashboard only queries metrics the operator exports (charts/skyfleet/metrics.txt)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.chart.helpers import CHART, metric_names

pytestmark = pytest.mark.chart

DASHBOARD = CHART / "dashboards" / "skyfleet.json"
# Histograms are queried through their _bucket/_sum/_count series.
HISTOGRAMS = {
    "skyfleet_reconcile_time_seconds",
    "skyfleet_cloud_request_duration_seconds",
    "skyfleet_instance_time_to_ready_seconds",
    "skyfleet_image_build_duration_seconds",
}
METRIC = re.compile(r"\bskyfleet_[a-z0-9_]+")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and templating query."""
    out = [
        (panel.get("title", "?"), target["expr"])
        for panel in panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            out.append((f"${var['name']}", query))
    return out


def base_name(series: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if series.endswith(suffix) and series.removesuffix(suffix) in HISTOGRAMS:
            return series.removesuffix(suffix)
    return series


def test_contract_lists_the_metrics_the_issue_names() -> None:
    # tests/unit/test_metrics.py holds the list equal to what the operator exports.
    names = metric_names()
    assert names >= HISTOGRAMS
    assert all(re.fullmatch(r"(skyfleet|process|python)_[a-z0-9_]+", n) for n in names)


def test_every_query_names_an_exported_metric() -> None:
    exported = metric_names()
    found = queries()
    assert len(found) >= 10
    for where, expr in found:
        used = {base_name(m) for m in METRIC.findall(expr)}
        assert used, f"{where}: query names no Skyfleet metric: {expr}"
        assert used <= exported, f"{where}: {sorted(used - exported)} not exported by the operator"


def test_histograms_are_queried_as_histograms() -> None:
    for where, expr in queries():
        for series in METRIC.findall(expr):
            assert series not in HISTOGRAMS, f"{where}: a histogram has no bare series {series}"
            if series.endswith("_bucket"):
                assert "histogram_quantile" in expr, where
                assert re.search(r"by \([^)]*\ble\b", expr), f"{where}: buckets must keep the le label"


def test_dashboard_answers_the_questions_it_is_for() -> None:
    used = {base_name(m) for _, expr in queries() for m in METRIC.findall(expr)}
    # fleet size by cloud, time to ready, API errors and throttling, reconcile latency
    assert {
        "skyfleet_instances",
        "skyfleet_instance_time_to_ready_seconds",
        "skyfleet_cloud_requests_total",
        "skyfleet_cloud_throttled_total",
        "skyfleet_reconcile_time_seconds",
    } <= used
    titles = {p.get("title", "") for p in panels(dashboard()["panels"])}
    assert "Fleet size by cloud" in titles
    # bakes: how many, by outcome; how long; builder VMs up right now
    assert {
        "skyfleet_image_builds_total",
        "skyfleet_image_build_duration_seconds",
        "skyfleet_builder_vms",
    } <= used
    assert {"Image builds by outcome", "Bake duration (p50, p95)", "Builder VMs"} <= titles
    assert any("Time to ready" in t for t in titles)


def test_dashboard_is_importable() -> None:
    board = dashboard()
    assert board["uid"] == "skyfleet-overview"
    assert board["title"] == "Skyfleet"
    ids = [p["id"] for p in panels(board["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    names = [v["name"] for v in board["templating"]["list"]]
    assert "datasource" in names
    for panel in panels(board["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["gridPos"]["w"] <= 24
