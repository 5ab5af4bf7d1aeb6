"""Prometheus metrics.

Labels are bounded: controller, provider, operation, outcome, phase, reason. Never object names,
VM ids or secret values, so cardinality does not grow with the fleet. The names follow
controller-runtime's where one exists, so dashboards port over; `charts/skyfleet/metrics.txt` is
the contract the chart's dashboard and alerts are checked against.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Mapping
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    start_http_server,
)

from skyfleet import __version__

__all__ = ["Metrics"]

# Every counter and histogram would also export a *_created gauge per label set: twice the series,
# read by nothing here (controller-runtime exports none), so they are off.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

# Provisioning on a real cloud takes from seconds to several minutes.
_READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 1200)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The process's CPU, memory, file descriptors and start time, the interpreter's version and
        # its garbage collector: what controller-runtime exports as its runtime metrics.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.reconcile_total = Counter(
            "skyfleet_reconcile_total",
            "Reconcile passes by controller and result.",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_time = Histogram(
            "skyfleet_reconcile_time_seconds", "Duration of reconcile passes.", ["controller"], registry=r
        )
        self.reconcile_errors = Counter(
            "skyfleet_reconcile_errors_total", "Reconcile passes that failed unexpectedly.", ["controller"], registry=r
        )
        self.cloud_requests = Counter(
            "skyfleet_cloud_requests_total",
            "Requests to cloud APIs by provider, operation and outcome (success or the error class).",
            ["provider", "operation", "outcome"],
            registry=r,
        )
        self.cloud_request_duration = Histogram(
            "skyfleet_cloud_request_duration_seconds",
            "Duration of requests to cloud APIs.",
            ["provider", "operation"],
            registry=r,
        )
        self.cloud_throttled = Counter(
            "skyfleet_cloud_throttled_total",
            "Requests the cloud answered with throttling.",
            ["provider", "operation"],
            registry=r,
        )
        self.instances = Gauge(
            "skyfleet_instances", "Instances by provider and phase.", ["provider", "phase"], registry=r
        )
        self.time_to_ready = Histogram(
            "skyfleet_instance_time_to_ready_seconds",
            "Seconds from an Instance's creation to its VM running.",
            ["provider"],
            buckets=_READY_BUCKETS,
            registry=r,
        )
        self.orphaned_vms = Gauge(
            "skyfleet_orphaned_vms", "VMs tagged with this cluster id whose Instance is gone.", ["provider"], registry=r
        )
        self.build_info = Gauge(
            "skyfleet_build_info", "Always 1; the version label says which.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.cluster_info = Gauge(
            "skyfleet_cluster_info",
            "Always 1; cluster_id is the tag value marking this installation's VMs.",
            ["cluster_id"],
            registry=r,
        )
        self.watch_last_event = Gauge(
            "skyfleet_watch_last_event_timestamp_seconds",
            "Unix time of the last watch event per resource: a stale value means a dead watch.",
            ["resource"],
            registry=r,
        )
        self.vms_created = Counter("skyfleet_vms_created_total", "VMs created or adopted.", ["provider"], registry=r)
        self.vms_destroyed = Counter("skyfleet_vms_destroyed_total", "VMs destroyed.", ["provider"], registry=r)
        self.orphans_deleted = Counter(
            "skyfleet_orphaned_vms_deleted_total",
            "Orphaned VMs deleted by the sweep (spec.orphans.delete).",
            ["provider"],
            registry=r,
        )
        self.events_dropped = Counter(
            "skyfleet_events_dropped_total",
            "Kubernetes events not posted because too many were waiting (a burst), by reason.",
            ["reason"],
            registry=r,
        )
        self.create_failures = Counter(
            "skyfleet_vm_create_failures_total", "Failed VM creations by reason.", ["provider", "reason"], registry=r
        )
        self.image_builds = Counter(
            "skyfleet_image_builds_total",
            "Finished image bakes by outcome (success or the failure reason).",
            ["provider", "outcome"],
            registry=r,
        )
        self.image_build_duration = Histogram(
            "skyfleet_image_build_duration_seconds",
            "Seconds from a bake's start to its image being available.",
            ["provider"],
            buckets=(60, 120, 300, 600, 900, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.builder_vms = Gauge(
            "skyfleet_builder_vms", "Builder VMs of bakes in progress, per provider.", ["provider"], registry=r
        )
        self._builders: dict[tuple[str, str], Tally[str]] = {}
        # ScalingPolicies: labels from fixed vocabularies only (never a namespace, policy or query).
        self.scaling_decisions = Counter(
            "skyfleet_scaling_decisions_total",
            "Group changes decided by ScalingPolicies, by direction (out, in, up, down).",
            ["direction"],
            registry=r,
        )
        self.metric_query_errors = Counter(
            "skyfleet_metric_query_errors_total",
            "Metric queries without a usable number, by reason (MetricUnavailable, QueryInvalid, NoData).",
            ["reason"],
            registry=r,
        )
        # Per-credential figures summed per provider, so two credentials of one provider add up.
        self._orphans: dict[tuple[str, str], tuple[str, int]] = {}
        self._phases: dict[tuple[str, str], tuple[str, Tally[str]]] = {}
        self._phase_labels: set[tuple[str, str]] = set()

    def serve(self, host: str, port: int) -> None:
        if port:
            start_http_server(port, addr=host, registry=self.registry)

    # -- feeding -------------------------------------------------------------------------------
    def reconciled(self, controller: str, started: float, *, error: bool = False) -> None:
        """One reconcile pass finished; ``started`` is its time.monotonic() at the start."""
        self.reconcile_total.labels(controller, "error" if error else "success").inc()
        self.reconcile_time.labels(controller).observe(time.monotonic() - started)
        if error:
            self.reconcile_errors.labels(controller).inc()

    def observe_cloud_call(self, provider: str, operation: str, outcome: str, seconds: float) -> None:
        """The connectors' CallObserver."""
        self.cloud_requests.labels(provider, operation, outcome).inc()
        self.cloud_request_duration.labels(provider, operation).observe(seconds)
        if outcome == "throttled":
            self.cloud_throttled.labels(provider, operation).inc()

    def scaling_decision(self, direction: str) -> None:
        self.scaling_decisions.labels(direction).inc()

    def metric_query_error(self, reason: str) -> None:
        self.metric_query_errors.labels(reason).inc()

    def event_dropped(self, reason: str) -> None:
        self.events_dropped.labels(reason).inc()

    def watch_event(self, resource: str) -> None:
        self.watch_last_event.labels(resource).set(time.time())

    def vm_created(self, provider: str, created: datetime | None, *, running: bool) -> None:
        self.vms_created.labels(provider).inc()
        if running:  # some clouds answer a create with a running VM
            self.instance_ready(provider, created)

    def instance_ready(self, provider: str, created: datetime | None) -> None:
        if created is not None:
            self.time_to_ready.labels(provider).observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))

    def set_cluster_id(self, cluster_id: str) -> None:
        self.cluster_info.clear()
        self.cluster_info.labels(cluster_id).set(1)

    def set_orphans(self, namespace: str, credential: str, provider: str, count: int) -> None:
        self._orphans[(namespace, credential)] = (provider, count)
        self._publish_orphans()

    def set_builders(self, namespace: str, image: str, per_provider: Mapping[str, int]) -> None:
        """One Image's builder VMs; empty when it has none (or is gone)."""
        self._builders[(namespace, image)] = Tally(per_provider)
        totals: Tally[str] = sum(self._builders.values(), Tally())
        for prov in {labels[0] for labels in _label_sets(self.builder_vms)} | set(totals):
            self.builder_vms.labels(prov).set(totals.get(prov, 0))

    def set_instance_phases(self, namespace: str, credential: str, provider: str, phases: Mapping[str, int]) -> None:
        self._phases[(namespace, credential)] = (provider, Tally(phases))
        self._publish_phases()

    def forget_credential(self, namespace: str, credential: str) -> None:
        """A credential is gone: its share leaves the sums, and a provider no credential uses
        any more loses its series altogether (a stale value would keep alerts firing)."""
        self._orphans.pop((namespace, credential), None)
        self._phases.pop((namespace, credential), None)
        self._publish_orphans()
        self._publish_phases()

    def _publish_orphans(self) -> None:
        totals: Tally[str] = Tally()
        for prov, n in self._orphans.values():
            totals[prov] += n
        for prov, n in totals.items():
            self.orphaned_vms.labels(prov).set(n)
        for (prov,) in [labels for labels in _label_sets(self.orphaned_vms) if labels[0] not in totals]:
            self.orphaned_vms.remove(prov)

    def _publish_phases(self) -> None:
        totals: Tally[tuple[str, str]] = Tally()
        for prov, tally in self._phases.values():
            for phase, n in tally.items():
                totals[(prov, phase)] += n
        providers = {prov for prov, _ in self._phases.values()}
        # A phase nobody is in any more reads 0 rather than keeping its last value; a provider
        # no credential reports on any more has no series at all.
        self._phase_labels = {k for k in self._phase_labels | set(totals) if k[0] in providers}
        for prov, phase in self._phase_labels:
            self.instances.labels(prov, phase).set(totals.get((prov, phase), 0))
        for prov, phase in [k for k in _label_sets(self.instances) if k not in self._phase_labels]:
            self.instances.remove(prov, phase)


def _label_sets(metric: Gauge) -> list[tuple[str, ...]]:
    """The label values of every series a labelled gauge has."""
    return [tuple(labels.values()) for labels in _samples_labels(metric)]


def _samples_labels(metric: Gauge) -> list[dict[str, str]]:
    return [sample.labels for family in metric.collect() for sample in family.samples]
