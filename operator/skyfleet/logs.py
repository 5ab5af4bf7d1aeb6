"""Every log line about an object names it, also lines from code that never saw a kopf logger.

kopf's JSON format adds an ``object`` reference to records from its per-object loggers only.
Our own modules (connectors, the Kubernetes client wrapper) log through plain module loggers,
so a filter fills the reference in from the object kopf is handling in the current context,
which asyncio tasks and our executor calls (copy_context) carry along.
"""

from __future__ import annotations

import logging
from typing import Any

from kopf._core.actions.execution import cause_var  # pinned kopf 1.x: the handler's cause

__all__ = ["ObjectRefFilter", "install_object_refs"]


class ObjectRefFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k8s_ref"):
            body: Any = getattr(cause_var.get(None), "body", None)
            meta = body.get("metadata", {}) if body is not None else {}
            if meta.get("name"):
                record.k8s_ref = {
                    "apiVersion": body.get("apiVersion"),
                    "kind": body.get("kind"),
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                    "namespace": meta.get("namespace"),
                }
        return True


# These loggers dump whole request and response bodies at DEBUG, Secrets included. Nothing in
# them is worth a secret in the log, so they never log below INFO, whatever the log level.
BODY_DUMPING_LOGGERS = ("kubernetes.client.rest",)


def install_object_refs(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of ``logger`` (default: root, where kopf.configure puts its own)
    and keep body-dumping client loggers above DEBUG."""
    for name in BODY_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, ObjectRefFilter) for f in handler.filters):
            handler.addFilter(ObjectRefFilter())
