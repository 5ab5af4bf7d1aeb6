"""Where scaling policies read their numbers: I/O that handlers call and reconcile never sees.

Decisions in ``skyfleet.reconcile`` get the numbers as data; only this package talks to metric
servers (today: a Prometheus HTTP API).
"""

from skyfleet.metricsources.prometheus import (
    NoData,
    PrometheusClient,
    QueryError,
    QueryInvalid,
    QueryResult,
    Sample,
    Unavailable,
)

__all__ = ["NoData", "PrometheusClient", "QueryError", "QueryInvalid", "QueryResult", "Sample", "Unavailable"]
