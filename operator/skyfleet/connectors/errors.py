"""One error taxonomy for every connector.

Callers decide what to do from the class and two flags, never from provider wording:
``retryable`` (the same call may succeed later) and ``fallback`` (another placement may
succeed now). Messages are meant for humans and never carry secret values.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "CapacityUnavailable",
    "CircuitOpen",
    "ConnectorError",
    "InvalidCredentials",
    "InvalidRequest",
    "NotFound",
    "OwnershipMismatch",
    "Permanent",
    "QuotaExceeded",
    "Throttled",
    "Transient",
    "UnknownConnector",
    "Unsupported",
]


class ConnectorError(Exception):
    """Base of every error a connector raises."""

    retryable: bool = False
    fallback: bool = False

    def __init__(self, message: str, *, provider: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.code = code

    @property
    def outcome(self) -> str:
        """Bounded label for metrics: the taxonomy name in snake case, e.g. ``quota_exceeded``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def redact(self, scrub: Callable[[str], str]) -> None:
        """Rewrite the message (and ``args``, which tracebacks print) through ``scrub``."""
        self.message = scrub(self.message)
        self.args = (self.message,)

    def __str__(self) -> str:
        prefix = f"[{self.provider}] " if self.provider else ""
        suffix = f" (code {self.code})" if self.code else ""
        return f"{prefix}{self.message}{suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidCredentials(ConnectorError):
    """The cloud rejected who we are; a human must fix the credential."""


class Throttled(ConnectorError):
    """The cloud asked us to slow down."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, code=code)
        self.retry_after = retry_after


class Transient(ConnectorError):
    """A fault that usually goes away: 5xx, timeouts, connection resets."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        provider: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, code=code)
        self.retry_after = retry_after


class CircuitOpen(Transient):
    """Calls are short-circuited because the cloud kept failing; retry after ``retry_after``."""


class QuotaExceeded(ConnectorError):
    """The account hit a quota; another credential or region may still have room."""

    fallback = True


class CapacityUnavailable(ConnectorError):
    """The provider has no capacity for this size/zone right now; another placement may."""

    retryable = True
    fallback = True


class NotFound(ConnectorError):
    """The referenced cloud object does not exist (or no longer does)."""


class InvalidRequest(ConnectorError):
    """The request itself is wrong (bad image, size, parameter); retrying cannot help."""


class Permanent(ConnectorError):
    """A failure that needs a human; retrying cannot help."""


class Unsupported(ConnectorError):
    """The provider cannot do this operation (e.g. resize in place)."""


class OwnershipMismatch(ConnectorError):
    """Refused: the cloud object does not carry our owner tags, so it is not ours to touch."""


class UnknownConnector(ConnectorError):
    """No connector is installed under the requested name."""
