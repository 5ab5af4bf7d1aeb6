"""Kubernetes events from Skyfleet: reported by component ``skyfleet`` and this pod, with an action.

kopf posts events as component ``kopf``, instance ``dev`` and action ``Action?``, which is what
``kubectl get events`` and event exporters then show for every one of ours. Our events are posted
here instead: ``reportingComponent``/``source.component`` ``skyfleet``, ``reportingInstance`` the
pod's name (``POD_NAME``, else the host name), and ``action`` what Skyfleet was doing
(``action_for``). Posting never blocks a handler: the event joins a queue that a few posters
drain in the background through the Kubernetes client's pool, and a failed post is logged
(reason only) and dropped, as kopf does.

The queue is bounded, as client-go's event broadcaster is (1,000 queued, then dropped): when a
fleet of thousands is created at once, events are made faster than the API server takes them,
and an unbounded backlog held every waiting event's body, task and future in memory (about
20,000 at 10,000 Instances, still draining ten minutes after the fleet was Ready). An event
equal to one still waiting (same object, type, reason and message) is folded into it; past
the bound new events are dropped and counted in ``skyfleet_events_dropped_total``.

kopf also turns its per-object log records at WARNING and above (a handler failing or retrying)
into events; ``ObjectLogEvents`` does that job in its place (kopf's poster is switched off in
operator.py), so those events too say who reported them and what it was doing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from skyfleet.handlers.kube import Kube
from skyfleet.reconcile.messages import safe_message

__all__ = ["COMPONENT", "MAX_QUEUED", "POSTERS", "Events", "ObjectLogEvents", "action_for", "reporting_instance"]

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

# Events waiting to be posted, at most (client-go's broadcaster queues 1,000 too).
MAX_QUEUED = 1000
# Posts in flight at once: events never hold more of the Kubernetes client's threads.
POSTERS = 2

# What makes two waiting events the same: the object, type, reason and message.
_Key = tuple[str, str, str, str, str]


def action_for(kind: str | None, reason: str) -> str:
    """The Event's ``action``: what Skyfleet did or tried, from the reason and the object's kind."""
    return _BY_REASON.get(reason) or _DEFAULT_ACTION.get(kind or "") or "Reconcile"


def reporting_instance() -> str:
    """This pod's name (the chart sets ``POD_NAME`` from the downward API), else the host name."""
    return (os.environ.get("POD_NAME") or socket.gethostname())[:128]


class Events:
    """Posts core/v1 Events about our objects, in the background, from a bounded queue."""

    def __init__(
        self,
        kube: Kube,
        instance: str | None = None,
        *,
        max_queued: int = MAX_QUEUED,
        posters: int = POSTERS,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.kube = kube
        self.instance = instance or reporting_instance()
        self.max_queued = max_queued
        self.posters = posters
        # Told the reason of every event dropped because the queue was full.
        self.on_drop = on_drop
        self.dropped = 0
        self._queue: collections.deque[tuple[_Key, dict[str, Any]]] = collections.deque()
        self._waiting: set[_Key] = set()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def queued(self) -> int:
        return len(self._queue)

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
        involved = body["involvedObject"]
        key: _Key = (involved["namespace"], str(involved["name"]), type_, reason, body["message"])
        if key in self._waiting:
            return  # the same event is waiting already: one is enough
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % self.max_queued == 0:
                log.warning(
                    "%d events dropped: more than %d waiting to be posted (a burst larger than the API server takes)",
                    self.dropped,
                    self.max_queued,
                )
            if self.on_drop is not None:
                self.on_drop(reason)
            return
        self._queue.append((key, body))
        self._waiting.add(key)
        if len(self._running) < self.posters:
            task = asyncio.get_running_loop().create_task(self._drain())
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _drain(self) -> None:
        while self._queue:
            key, body = self._queue.popleft()
            self._waiting.discard(key)
            await self._post(body)

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
