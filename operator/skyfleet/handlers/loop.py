"""The one loop every per-object daemon runs: wake, run once, record metrics, report errors,
wait or wake.

A daemon (Deployment reconcile, Image resolve, CloudCredential verify and observe; next
ScalingPolicy and image bakes) is a kopf daemon handler that calls ``run_loop`` with its
``once`` step: an async function that does one pass and returns the delay until the next
(None: the loop's ``period``). The loop:

- wakes on ``ctx.wake(kind, namespace, name)`` (in-process, no API call), a timeout, or stop;
- records ``skyfleet_reconcile_*`` metrics under ``kind`` for every pass;
- retries soon after ``Conflict`` (another writer got there first: not an error);
- logs passes that fail with ``quiet`` errors at INFO (expected, reported elsewhere), others
  with their traceback, counts them as errors and, with ``error_event``, posts one Warning
  event of that reason (message bounded and cleaned), then waits ``retry`` seconds;
- names the object in every log record made inside (``skyfleet.logs.about``).

A new daemon is then::

    @kopf.daemon(GROUP, VERSION, "things", id="reconcile", cancellation_timeout=2.0)
    async def thing_loop(*, namespace, name, body, memo, logger, stopped, **_):
        ctx = ctx_of(memo)
        await run_loop(ctx, LoopSpec("thing", namespace, name, period=60.0), body=body,
                       stopped=stopped, logger=logger, once=lambda: thing_once(ctx, body))
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skyfleet.handlers.context import Context, wait_or_wake
from skyfleet.handlers.kube import Conflict
from skyfleet.logs import about
from skyfleet.reconcile.messages import error_message

__all__ = ["CONFLICT_DELAY", "LoopSpec", "run_loop"]

# After a Conflict the object is fresh in the watch a moment later: compute again from it.
CONFLICT_DELAY = 1.0


@dataclass(frozen=True)
class LoopSpec:
    # Metrics label and wake-up key, e.g. "deployment" (ctx.wake("deployment", ns, name)).
    kind: str
    namespace: str
    name: str
    # Seconds to the next pass when ``once`` returns None.
    period: float
    # Seconds to the next pass after a failed one (default: ``period``).
    retry: float | None = None
    # Reason of the Warning event posted on the object for a failed pass (None: no event).
    error_event: str | None = None
    # Errors that only skip a pass: logged at INFO, not counted as failures.
    quiet: tuple[type[BaseException], ...] = ()


async def run_loop(
    ctx: Context,
    spec: LoopSpec,
    *,
    body: Mapping[str, Any],
    stopped: Any,
    logger: Any,
    once: Callable[[], Awaitable[float | None]],
) -> None:
    """Run ``once`` until kopf stops the daemon (see the module doc)."""
    key = (spec.kind, spec.namespace, spec.name)
    # Its own event, not one a loop for an earlier object of the same name may still hold.
    wake = ctx.wakeups[key] = asyncio.Event()
    try:
        with about(body):
            while not stopped:
                wake.clear()
                delay = await _pass(ctx, spec, body, logger, once)
                await wait_or_wake(wake, spec.period if delay is None else delay, stopped)
    finally:
        # The object is gone (or the operator stopping): its wake-up goes too, or every deleted
        # object would leave one behind. Only its own: a new loop for a re-created object of the
        # same name may already have registered another.
        if ctx.wakeups.get(key) is wake:
            del ctx.wakeups[key]
            # Its last announced Ready reason (handlers/status.py keys it by the same kind).
            ctx.announced.pop(key, None)


async def _pass(
    ctx: Context, spec: LoopSpec, body: Mapping[str, Any], logger: Any, once: Callable[[], Awaitable[float | None]]
) -> float | None:
    started = time.monotonic()
    what = f"{spec.kind} {spec.namespace}/{spec.name}"
    try:
        delay = await once()
    except Conflict:
        ctx.metrics.reconciled(spec.kind, started)
        return CONFLICT_DELAY
    except spec.quiet as exc:
        logger.info("%s skipped: %s", what, error_message(exc))
        return None
    except Exception as exc:
        # One broken object must not stop the others: report, and try again later.
        ctx.metrics.reconciled(spec.kind, started, error=True)
        logger.exception("%s failed", what)
        if spec.error_event:
            ctx.event(body, "Warning", spec.error_event, f"{type(exc).__name__}: {error_message(exc)}")
        return spec.retry
    ctx.metrics.reconciled(spec.kind, started)
    return delay
