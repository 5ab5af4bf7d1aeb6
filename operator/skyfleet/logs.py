"""Every log line about an object names it, also lines from code that never saw a kopf logger;
and no log line carries what HTTP libraries would print at DEBUG.

kopf's JSON format adds an ``object`` reference to records from its per-object loggers only.
Our own modules (connectors, the Kubernetes client wrapper) log through plain module loggers,
so a filter fills the reference in from ``current_object``: a context variable the handlers set
(``about``) for the object they work on, which asyncio tasks and our executor calls
(copy_context) carry along.

HTTP libraries log whole request lines at DEBUG: urllib3 prints every URL with its query string,
and EC2's RunInstances sends the user data (base64) in the query string of a GET; the
Kubernetes client dumps request and response bodies, Secrets included. Their loggers are kept at
INFO or above whatever ``--log-level`` says, and a handler filter makes that hold even for a
logger someone sets to DEBUG later: it drops their records below INFO and cuts URLs in the rest
down to scheme and host (urllib3 warns with the full URL of a request it cannot parse).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from skyfleet.contract.errors import clean_message

__all__ = ["ObjectRefFilter", "TransportFilter", "about", "current_object", "install_object_refs"]

# The object the current handler or loop works on, as a log reference (kopf's ``k8s_ref`` shape).
current_object: ContextVar[Mapping[str, Any] | None] = ContextVar("skyfleet_current_object", default=None)


def object_ref(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The log reference of a Kubernetes object, or None for something without a name."""
    meta = body.get("metadata") or {}
    if not meta.get("name"):
        return None
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "namespace": meta.get("namespace"),
    }


@contextlib.contextmanager
def about(body: Mapping[str, Any]) -> Iterator[None]:
    """Every log record made inside names ``body`` (unless it names an object already)."""
    token = current_object.set(object_ref(body))
    try:
        yield
    finally:
        current_object.reset(token)


class ObjectRefFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "k8s_ref"):
            ref = current_object.get()
            if ref is not None:
                record.k8s_ref = dict(ref)
        return True


# These loggers print whole request lines (URLs with user data) or bodies (Secrets) at DEBUG.
# Nothing in them is worth that, so they never log below INFO, whatever the log level.
BODY_DUMPING_LOGGERS = ("kubernetes.client.rest", "urllib3", "requests", "libcloud", "requests_oauthlib")


def _from_http_library(record: logging.LogRecord) -> bool:
    return any(record.name == n or record.name.startswith(n + ".") for n in BODY_DUMPING_LOGGERS)


class TransportFilter(logging.Filter):
    """Drops DEBUG records of HTTP libraries and cuts URLs and query strings out of the others."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _from_http_library(record):
            return True
        if record.levelno < logging.INFO:
            return False
        record.msg = clean_message(record.getMessage())
        record.args = ()
        return True


def install_object_refs(logger: logging.Logger | None = None) -> None:
    """Add the filters to every handler of ``logger`` (default: root, where kopf.configure puts its
    own) and keep the HTTP libraries' loggers above DEBUG."""
    for name in BODY_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
    for handler in (logger or logging.getLogger()).handlers:
        for kind in (TransportFilter, ObjectRefFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
