"""Mapping of libcloud, requests and socket exceptions onto the connector taxonomy.

Provider adapters refine this with their own error codes first; whatever they do not
recognise falls through to the HTTP-status based mapping here.

What a foreign exception says is not trusted: a libcloud HTTP error often carries the whole
response body (an HTML error page, or whatever an endpoint chose to answer), and network
errors of requests and urllib3 carry the full request URL. ``describe`` keeps a short summary:
the provider's own error message when it is plain text, never markup or JSON, and for network
errors only the operating system's reason (``Connection refused``, ``timed out``).
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl

import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError

from skyfleet.contract.errors import (
    ConnectorError,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    Permanent,
    Throttled,
    Transient,
    clean_message,
)

__all__ = ["http_status", "map_generic", "retry_after_from"]

_NETWORK_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    http.client.HTTPException,
    ConnectionError,
    socket.timeout,
    ssl.SSLError,
    TimeoutError,
)


def http_status(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def retry_after_from(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    headers = getattr(exc, "headers", None) or {}
    if value is None and hasattr(headers, "get"):
        value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# Markup or a raw JSON document: a response body, not a message someone wrote for humans.
_BODY = re.compile(r"<\s*[!?A-Za-z/]|^\s*[{\[]\s*[\"{\[]")
PROVIDER_TEXT = 200


def summary(text: str) -> str:
    """Provider-written error text as it may appear in a status: short, plain, no body."""
    text = clean_message(text)
    if _BODY.search(text):
        return "(the response body is not shown)"
    return text if len(text) <= PROVIDER_TEXT else text[: PROVIDER_TEXT - 1].rstrip() + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: causes, contexts and urllib3's ``reason``."""
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and all(node is not s for s in seen):
        seen.append(node)
        reason = getattr(node, "reason", None)
        wrapped = node.args[0] if node.args and isinstance(node.args[0], BaseException) else None
        node = (reason if isinstance(reason, BaseException) else None) or wrapped or node.__cause__ or node.__context__
    return seen


def network_reason(exc: BaseException) -> str:
    """Why a connection failed, in the operating system's words, without host or URL."""
    for node in reversed(_chain(exc)):
        if isinstance(node, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed: {node.verify_message or node.reason}"
        if isinstance(node, ssl.SSLError):
            return f"TLS error: {node.reason or type(node).__name__}"
        if isinstance(node, TimeoutError | socket.timeout):
            return "timed out"
        if isinstance(node, OSError) and node.strerror:
            return node.strerror
    names = [type(n).__name__ for n in _chain(exc)]
    if any("Timeout" in n for n in names):
        return "timed out"
    return names[-1]


def describe(exc: BaseException) -> str:
    """A short description of a foreign exception; scrubbing happens in the connector."""
    if isinstance(exc, _NETWORK_ERRORS):
        return f"{type(exc).__name__}: {network_reason(exc)}"
    if isinstance(exc, MalformedResponseError):
        return f"{type(exc).__name__}: the answer could not be parsed"
    # libcloud's errors keep the provider's parsed text in ``message`` or ``value``; their str()
    # wraps it in a repr of the driver.
    value = getattr(exc, "value", None)
    message = getattr(exc, "message", None) or (value if isinstance(value, str) else None) or str(exc)
    return f"{type(exc).__name__}: {summary(str(message) or type(exc).__name__)}"


def map_generic(exc: BaseException, provider: str) -> ConnectorError:  # noqa: PLR0911 - a decision table
    if isinstance(exc, ConnectorError):
        return exc
    text = describe(exc)
    if isinstance(exc, InvalidCredsError):
        return InvalidCredentials(f"credentials rejected: {text}", provider=provider)
    untrusted = next((n for n in _chain(exc) if isinstance(n, ssl.SSLCertVerificationError)), None)
    if untrusted is not None:
        # Not weather: the endpoint's certificate will not become trusted by waiting.
        return Permanent(
            f"the endpoint's TLS certificate is not trusted ({untrusted.verify_message or untrusted.reason}); "
            "a private CA belongs in spec.endpoint.caBundle",
            provider=provider,
            code="TLSVerificationFailed",
        )
    if isinstance(exc, _NETWORK_ERRORS):
        return Transient(f"network error: {text}", provider=provider)
    if isinstance(exc, MalformedResponseError):
        return Transient(f"malformed response: {text}", provider=provider)
    status = http_status(exc)
    if isinstance(exc, BaseHTTPError) or status is not None:
        if status == 429:
            return Throttled(f"throttled: {text}", retry_after=retry_after_from(exc), provider=provider)
        if status is not None and status >= 500:
            return Transient(f"server error {status}: {text}", retry_after=retry_after_from(exc), provider=provider)
        if status == 401:
            return InvalidCredentials(f"credentials rejected: {text}", provider=provider)
        if status == 404:
            return NotFound(text, provider=provider)
        if status in (400, 409, 422):
            return InvalidRequest(text, provider=provider)
        return Permanent(f"HTTP {status}: {text}", provider=provider)
    if isinstance(exc, LibcloudError | ValueError):
        return InvalidRequest(text, provider=provider)
    return Permanent(f"unexpected error: {text}", provider=provider)
