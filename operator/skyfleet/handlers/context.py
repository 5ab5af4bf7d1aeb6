"""What every handler needs, passed through kopf's ``memo`` rather than module globals."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from skyfleet.api.common import GROUP, VERSION
from skyfleet.handlers.clouds import Clouds
from skyfleet.handlers.events import Events
from skyfleet.handlers.kube import Kube
from skyfleet.handlers.regions import RegionChecks
from skyfleet.metrics import Metrics
from skyfleet.settings import Settings

__all__ = ["FINALIZER", "GROUP", "VERSION", "Context", "ctx_of", "now", "wait_or_wake"]

# kopf's finalizer on our objects (operator.py configures kopf with it; Instances are created
# with it already on, see handlers/deployments.py).
FINALIZER = "skyfleet.io/finalizer"


@dataclass
class Context:
    settings: Settings
    kube: Kube
    clouds: Clouds
    metrics: Metrics
    # The tag value marking this installation's VMs: the setting, or derived at start-up.
    cluster_id: str
    # Regions the cloud does not know, per credential (asked once, remembered).
    regions: RegionChecks = field(default_factory=RegionChecks)
    # In-process wake-ups: an Instance event wakes its Deployment's loop without any API write.
    wakeups: dict[tuple[str, str, str], asyncio.Event] = field(default_factory=dict)
    # Last condition reason announced per object, so one transition makes one event even when
    # two passes race on a status the watch has not brought back yet.
    announced: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # Instances this process asked to delete, with when (see deployments.reconcile_once).
    recent_deletes: dict[tuple[str, str], float] = field(default_factory=dict)
    # Instances this operator created that its index may not show yet: (namespace, name) -> when.
    recent_creates: dict[tuple[str, str], float] = field(default_factory=dict)
    events: Events = field(init=False)

    def __post_init__(self) -> None:
        self.events = Events(self.kube, on_drop=self.metrics.event_dropped)

    def announce_once(self, kind: str, namespace: str, name: str, reason: str) -> bool:
        key = (kind, namespace, name)
        if self.announced.get(key) == reason:
            return False
        self.announced[key] = reason
        return True

    def wakeup(self, kind: str, namespace: str, name: str) -> asyncio.Event:
        return self.wakeups.setdefault((kind, namespace, name), asyncio.Event())

    def wake(self, kind: str, namespace: str, name: str) -> None:
        event = self.wakeups.get((kind, namespace, name))
        if event is not None:
            event.set()

    def event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """Post a Kubernetes event about ``obj`` in the background (see handlers/events.py)."""
        self.events.post(obj, type_, reason, message)


def ctx_of(memo: Any) -> Context:
    ctx = memo.ctx
    assert isinstance(ctx, Context)
    return ctx


def now() -> datetime:
    # Whole seconds: the API server stores RFC 3339 without fractions, and a fraction that
    # cannot round-trip would make every comparison with the stored status differ.
    return datetime.now(UTC).replace(microsecond=0)


async def wait_or_wake(wake: asyncio.Event, seconds: float, stopped: Any = None) -> None:
    """Sleep for ``seconds``, an in-process wake-up, or kopf stopping the daemon."""

    async def until_stopped() -> None:
        if stopped is not None:
            await stopped.wait()
        else:
            await asyncio.Event().wait()

    tasks = [asyncio.create_task(wake.wait()), asyncio.create_task(until_stopped())]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    wake.clear()
