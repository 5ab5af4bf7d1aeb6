"""One way to turn any error text into something safe to write into status, events and logs.

Error text comes from places Skyfleet does not control: cloud responses, HTTP libraries that
put whole request URLs (with base64 user data in EC2's query string) into their exceptions,
the Kubernetes API echoing a rejected object. Written as-is it can be larger than a status
field admits (the write then fails schema validation and the old status, say Ready=True, stays)
or carry a tenant's user data or a response body to everyone who can read events. Every
message a handler writes goes through :func:`safe_message` first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MESSAGE_LIMIT", "error_message", "safe_message"]

# Events are capped at 1024 characters by kopf; conditions admit more, but nobody reads more.
MESSAGE_LIMIT = 512

_REDACTED = "<redacted>"
# A query string can carry anything (EC2's GET API sends UserData there, base64-encoded).
_QUERY = re.compile(r"\?[^\s'\"<>?]*=[^\s'\"<>]*")
# Long runs of base64/hex/percent-encoded data: encoded payloads, never useful to a reader.
_BLOB = re.compile(r"[A-Za-z0-9+/=%_-]{80,}")
# Markup of a response body (HTML error pages, XML documents).
_MARKUP = re.compile(r"<[^<>]{0,200}>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE = re.compile(r"\s+")


def safe_message(text: object, *, limit: int = MESSAGE_LIMIT, redact: Iterable[str | None] = ()) -> str:
    """``text`` on one line, without query strings, encoded blobs, markup, control characters
    or any of the ``redact`` values (user data, secrets), and at most ``limit`` characters."""
    out = str(text)
    for value in sorted((v for v in redact if v and len(v) > 3), key=len, reverse=True):
        out = out.replace(value, _REDACTED)
    out = _QUERY.sub(f"?{_REDACTED}", out)
    out = _MARKUP.sub(" ", out)
    out = _BLOB.sub(_REDACTED, out)
    out = _CONTROL.sub(" ", out)
    out = _SPACE.sub(" ", out).strip()
    if len(out) > limit:
        out = out[: max(0, limit - 1)].rstrip() + "…"
    return out


def error_message(exc: BaseException, *, limit: int = MESSAGE_LIMIT, redact: Iterable[str | None] = ()) -> str:
    """An exception as a safe message; one without text says at least what kind it was."""
    text = str(exc) or type(exc).__name__
    return safe_message(text, limit=limit, redact=redact)
