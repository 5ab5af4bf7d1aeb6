"""Kubernetes events from Skyfleet: reported by component ``skyfleet`` and this pod, with an action.

kopf posts events as component ``kopf``, instance ``dev`` and action ``Action?``, which is what
``kubectl get events`` and event exporters then show for every one of ours. Our events are posted
here instead: ``reportingComponent``/``source.component`` ``skyfleet``, ``reportingInstance`` the
pod's name (``POD_NAME``, else the host name), and ``action`` what Skyfleet was doing
(``action_for``). Posting never blocks a handler: the call runs on the Kubernetes client's pool
in the background, and a failed post is logged (reason only) and dropped, as kopf does.

kopf also turns its per-object log records at WARNING and above (a handler failing or retrying)
into events; ``ObjectLogEvents`` does that job in its place (kopf's poster is switched off in
operator.py), so those events too say who reported them and what it was doing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from skyfleet.handlers.kube import Kube
from skyfleet.reconcile.messages import safe_message

__all__ = ["COMPONENT", "Events", "ObjectLogEvents", "action_for", "reporting_instance"]

log = logging.getLogger(__name__)

COMPONENT = "skyfleet"
# What Skyfleet was doing when it posted an event with this reason (``action`` of the Event);
# anything else is part of reconciling the object. CamelCase, at most 128 characters.
_ACTIONS: dict[str, tuple[str, ...]] = {
    "Create": (
        "VMCreated",
        "Creating",
        "UserDataTooLarge",
        "UserDataUnsupported",
        "ImageNotFound",
        "QuotaExceeded",
        "CapacityUnavailable",
    ),
    "Delete": (
        "Deleting",
        "VMDestroyed",
        "DestroyFailed",
        "CannotDestroyVM",
        "OwnershipMismatch",
        "OrphanDeleted",
        "OrphanDeleteFailed",
    ),
    "Release": ("VMOrphaned", "VMNotReleased", "ReleaseFailed", "CannotReleaseVM"),
    "Observe": ("VMRunning", "VMLost", "VMStopped", "VMStateChanged", "OrphanedVMs", "RegionsObserved"),
}
_BY_REASON = {reason: action for action, reasons in _ACTIONS.items() for reason in reasons}
_DEFAULT_ACTION = {"CloudCredential": "Verify", "Image": "Resolve"}


def action_for(kind: str | None, reason: str) -> str:
    """The Event's ``action``: what Skyfleet did or tried, from the reason and the object's kind."""
    return _BY_REASON.get(reason) or _DEFAULT_ACTION.get(kind or "") or "Reconcile"


def reporting_instance() -> str:
    """This pod's name (the chart sets ``POD_NAME`` from the downward API), else the host name."""
    return (os.environ.get("POD_NAME") or socket.gethostname())[:128]


class Events:
    """Posts core/v1 Events about our objects, in the background."""

    def __init__(self, kube: Kube, instance: str | None = None) -> None:
        self.kube = kube
        self.instance = instance or reporting_instance()
        self._pending: set[asyncio.Task[None]] = set()

    def body(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": safe_message(message),
            "action": action_for(obj.get("kind"), reason),
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "source": {"component": COMPONENT, "host": self.instance},
            "firstTimestamp": ts[:19] + "Z",
            "lastTimestamp": ts[:19] + "Z",
            "eventTime": ts,
            "count": 1,
        }

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Queue one event; returns at once (call from the event loop)."""
        body = self.body(obj, type_, reason, message)
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            await self.kube.create_event(body["metadata"]["namespace"], body)
        except Exception as exc:  # events are auxiliary: never fail a handler for one
            log.warning("could not post event %s: %s", body["reason"], type(exc).__name__)


class ObjectLogEvents(logging.Handler):
    """Posts kopf's per-object log records (``kopf.objects``, WARNING and above) as events."""

    def __init__(self, events: Events, loop: asyncio.AbstractEventLoop, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.events = events
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        ref = getattr(record, "k8s_ref", None)
        if not isinstance(ref, Mapping) or not ref.get("name") or getattr(record, "k8s_skip", False):
            return
        obj = {
            "apiVersion": ref.get("apiVersion"),
            "kind": ref.get("kind"),
            "metadata": {"name": ref.get("name"), "namespace": ref.get("namespace"), "uid": ref.get("uid")},
        }
        type_ = "Normal" if record.levelno < logging.WARNING else "Warning"
        try:
            # Records come from kopf's event loop, or from a thread it started: post from the loop.
            self.loop.call_soon_threadsafe(self.events.post, obj, type_, "Logging", record.getMessage())
        except RuntimeError:  # the loop is closed: the operator is stopping
            return
