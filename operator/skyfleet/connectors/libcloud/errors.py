"""Mapping of libcloud, requests and socket exceptions onto the connector taxonomy.

Provider adapters refine this with their own error codes first; whatever they do not
recognise falls through to the HTTP-status based mapping here.
"""

from __future__ import annotations

import http.client
import socket
import ssl

import requests
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError, LibcloudError, MalformedResponseError

from skyfleet.connectors.errors import (
    ConnectorError,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    Permanent,
    Throttled,
    Transient,
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


def describe(exc: BaseException) -> str:
    """A short description of a foreign exception; scrubbing happens in the connector."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def map_generic(exc: BaseException, provider: str) -> ConnectorError:  # noqa: PLR0911 - a decision table
    if isinstance(exc, ConnectorError):
        return exc
    text = describe(exc)
    if isinstance(exc, InvalidCredsError):
        return InvalidCredentials(f"credentials rejected: {text}", provider=provider)
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
