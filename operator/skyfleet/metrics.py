"""Prometheus metrics. Labels are names and reasons only: never secret values, never VM ids."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.vms_created = Counter(
            "skyfleet_vms_created_total", "VMs created (or adopted) for Instances.", ["provider"]
        )
        self.vms_destroyed = Counter(
            "skyfleet_vms_destroyed_total", "VMs destroyed for deleted Instances.", ["provider"]
        )
        self.create_failures = Counter(
            "skyfleet_vm_create_failures_total", "Failed VM creations by reason.", ["provider", "reason"]
        )
        self.orphaned_vms = Gauge(
            "skyfleet_orphaned_vms",
            "VMs tagged with this cluster id whose Instance is gone.",
            ["namespace", "credential"],
        )
        self.reconcile_errors = Counter(
            "skyfleet_reconcile_errors_total", "Unexpected errors while reconciling, by kind.", ["kind"]
        )

    def serve(self, host: str, port: int) -> None:
        if port:
            start_http_server(port, addr=host)
