"""Retry policy and circuit breaker: the only place that decides when to try again.

libcloud's own retries stay off; doing it here keeps one policy across providers and lets it
honour the provider's retry-after and the credential's rate budget.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from tenacity import RetryCallState

from skyfleet.contract.errors import CircuitOpen, ConnectorError, Throttled, Transient

__all__ = ["CircuitBreaker", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """Full-jitter exponential backoff (AWS's recommendation), bounded in attempts and time."""

    max_attempts: int = 12
    max_elapsed: float = 180.0
    base_delay: float = 0.2
    max_delay: float = 10.0

    def should_retry(self, exc: BaseException) -> bool:
        # A tripped breaker means the cloud is down: waiting inside this call would only
        # hold the caller's slot; let the caller requeue instead. Errors with a fallback
        # (capacity) go straight back so the caller can try the next placement now.
        return (
            isinstance(exc, ConnectorError) and exc.retryable and not exc.fallback and not isinstance(exc, CircuitOpen)
        )

    def wait(self, state: RetryCallState) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not cryptography
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(exc, Throttled | Transient) and retry_after:
            delay = max(delay, float(retry_after))
        return delay


class CircuitBreaker:
    """Opens after ``threshold`` consecutive transient failures, probes again after ``cooldown``.

    Throttling does not count: a throttling cloud is alive and the backoff already handles it.
    """

    def __init__(self, threshold: int = 10, cooldown: float = 15.0, name: str = "") -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.name = name
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def before_call(self) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            remaining = self._opened_at + self.cooldown - time.monotonic()
            if remaining > 0 or self._probing:
                raise CircuitOpen(
                    f"circuit open for {self.name}: {self._failures} consecutive transient failures",
                    retry_after=max(remaining, 1.0),
                )
            self._probing = True  # half-open: exactly one call probes the cloud

    def record(self, exc: BaseException | None) -> None:
        with self._lock:
            self._probing = False
            if isinstance(exc, Transient) and not isinstance(exc, CircuitOpen):
                self._failures += 1
                if self._failures >= self.threshold or self._opened_at is not None:
                    self._opened_at = time.monotonic()
            elif exc is None or not isinstance(exc, Throttled):
                self._failures = 0
                self._opened_at = None
