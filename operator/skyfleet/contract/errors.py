"""One error taxonomy for every connector.

Callers decide what to do from the class and two flags, never from provider wording:
``retryable`` (the same call may succeed later) and ``fallback`` (another placement may
succeed now). ``fallback`` is said here only: the connector's retries read it, and the reasons
a failed Instance falls back on are made from it (reconcile/instances.py ``CREATE_FAILURES``).
Messages are meant for humans and never carry secret values.

Messages end up in status conditions, Events and logs, which are bounded and read by people
who may not see the request: every message is cleaned at construction (URLs cut down to
scheme and host, query strings and control characters dropped) and bounded to
``MAX_MESSAGE`` characters. Network errors of HTTP libraries carry the full request URL, and
an EC2 RunInstances URL carries the user data.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "MAX_MESSAGE",
    "CapacityUnavailable",
    "CircuitOpen",
    "ConnectorError",
    "EndpointNotAllowed",
    "InvalidCredentials",
    "InvalidRequest",
    "NotFound",
    "OwnershipMismatch",
    "Permanent",
    "QuotaExceeded",
    "Throttled",
    "Transient",
    "UnknownConnector",
    "UnknownParameter",
    "Unsupported",
    "clean_message",
]

MAX_MESSAGE = 512
# What a message may hold before secrets are scrubbed: scrubbing first, then bounding, so that a
# secret can never be cut in half (and survive) at the bound.
_MAX_RAW = 4096
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*)://(?:[^\s/@'\"<>]*@)?([^\s/?#'\"<>]+)[^\s'\"<>]*")
_QUERY = re.compile(r"\?[A-Za-z0-9_.~%+\-]+=[^\s'\"<>)]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACES = re.compile(r"\s{2,}")


def clean_message(text: str) -> str:
    """``text`` fit for a status condition: URLs as scheme://host only, no query strings, no
    control characters, runs of whitespace collapsed (not yet bounded)."""
    text = _URL.sub(lambda m: f"{m.group(1)}://{m.group(2)}", text)
    text = _QUERY.sub("?…", text)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def _bounded(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class ConnectorError(Exception):
    """Base of every error a connector raises."""

    retryable: bool = False
    fallback: bool = False

    def __init__(self, message: str, *, provider: str | None = None, code: str | None = None) -> None:
        self._full = clean_message(str(message))[:_MAX_RAW]
        self.message = _bounded(self._full)
        super().__init__(self.message)
        self.provider = provider
        # Codes come from providers too: one short token, never free text.
        self.code = _bounded(clean_message(code), 64) if code else None

    @property
    def outcome(self) -> str:
        """Bounded label for metrics: the taxonomy name in snake case, e.g. ``quota_exceeded``."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def redact(self, scrub: Callable[[str], str]) -> None:
        """Rewrite the message (and ``args``, which tracebacks print) through ``scrub``."""
        self._full = scrub(self._full)
        self.message = _bounded(self._full)
        self.args = (self.message,)

    def __str__(self) -> str:
        prefix = f"[{self.provider}] " if self.provider else ""
        suffix = f" (code {self.code})" if self.code else ""
        return f"{prefix}{self.message}{suffix}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidCredentials(ConnectorError):
    """The cloud rejected who we are; a human must fix the credential."""


class _RetryLater(ConnectorError):
    """An error the same call may outlive; ``retry_after`` is the cloud's hint in seconds."""

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


class Throttled(_RetryLater):
    """The cloud asked us to slow down."""


class Transient(_RetryLater):
    """A fault that usually goes away: 5xx, timeouts, connection resets."""


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


class UnknownParameter(InvalidRequest):
    """A credential's parameters name a key the provider does not read (often a misspelling)."""


class Permanent(ConnectorError):
    """A failure that needs a human; retrying cannot help."""


class Unsupported(ConnectorError):
    """The provider cannot do this operation (e.g. resize in place)."""


class OwnershipMismatch(ConnectorError):
    """Refused: the cloud object does not carry our owner tags, so it is not ours to touch."""


class EndpointNotAllowed(ConnectorError):
    """The cloud endpoint (or an address it resolves to, or a redirect it answered) is not one
    the operator lets tenants reach: link-local, loopback, private and cluster-internal
    destinations and plain http need the operator's allow-list."""


class UnknownConnector(ConnectorError):
    """No connector is installed under the requested name."""
