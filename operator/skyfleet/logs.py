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

kopf logs two INFO lines for every handler run that went well ("Handler 'x' succeeded.",
"Creation is processed: 1 succeeded; 0 failed."): at fleet scale they were most of the log and
a twelfth of the event loop's time while thousands of Instances were created. They are kept at
``--log-level DEBUG`` only; a failure, a retry and everything our handlers say are kept.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from skyfleet.contract.errors import clean_message

__all__ = [
    "ObjectRefFilter",
    "RoutineSuccessFilter",
    "TransportFilter",
    "about",
    "current_object",
    "install_object_refs",
]

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


# kopf's lines for a handler run that went well (kopf/_core/actions/execution.py, processing.py).
_ROUTINE_SUCCESS = re.compile(r"^(Handler '[^']*' succeeded\.|\w+ is processed: \d+ succeeded; 0 failed\.)$")


class RoutineSuccessFilter(logging.Filter):
    """Drops kopf's INFO lines about handlers that succeeded, unless its logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        return not _ROUTINE_SUCCESS.match(str(record.msg))


def install_object_refs(logger: logging.Logger | None = None) -> None:
    """Add the filters to every handler of ``logger`` (default: root, where kopf.configure puts its
    own), keep the HTTP libraries' loggers above DEBUG and kopf's routine success lines out."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RoutineSuccessFilter) for f in objects.filters):
        objects.addFilter(RoutineSuccessFilter())
    for name in BODY_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).getEffectiveLevel()))
    for handler in (logger or logging.getLogger()).handlers:
        for kind in (TransportFilter, ObjectRefFilter):
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())
