"""Instant queries against a Prometheus HTTP API (``/api/v1/query``), answered as one number or a typed error.

A rule needs one number. A scalar, or a vector of exactly one sample, is that number; several series
are an error (never a guess at which one was meant), and an empty vector is ``NoData``. A source that
is down, slow, refuses the token or answers something that is not Prometheus is ``Unavailable``.

Every query has a total deadline, TLS certificates are verified, redirects are not followed (a
redirect could lead the token elsewhere), proxies from the environment are ignored, and an answer is
read up to a size bound. Error messages are built from fixed words, HTTP status codes and
Prometheus's ``errorType`` vocabulary only: nothing of the response body, the URL or the token ever
appears in them, since status, events and logs carry them and the URL may be a tenant's choice.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import aiohttp

from skyfleet import __version__

__all__ = [
    "DEFAULT_TIMEOUT",
    "NoData",
    "PrometheusClient",
    "QueryError",
    "QueryInvalid",
    "QueryResult",
    "Sample",
    "Unavailable",
]

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
# A one-sample answer is well under 1 KiB; anything this big is many series (or not Prometheus).
MAX_ANSWER_BYTES = 256 * 1024
# Prometheus's errorType values (web/api/v1): safe to repeat, since they are a fixed vocabulary.
_ERROR_TYPES = {"bad_data", "execution", "timeout", "canceled", "internal", "unavailable", "not_found"}


@dataclass(frozen=True)
class Sample:
    """The number a query returned, and the evaluation time Prometheus reported for it."""

    value: float
    at: datetime


@dataclass(frozen=True)
class QueryError:
    """Why a query gave no number. ``reason`` is CamelCase for conditions and events."""

    reason: ClassVar[str]
    message: str


@dataclass(frozen=True)
class Unavailable(QueryError):
    """The source is down, slow, refused us, or answered something that is not a Prometheus answer."""

    reason: ClassVar[str] = "MetricUnavailable"


@dataclass(frozen=True)
class QueryInvalid(QueryError):
    """The query is not valid PromQL, fails to execute, or does not return exactly one number."""

    reason: ClassVar[str] = "QueryInvalid"


@dataclass(frozen=True)
class NoData(QueryError):
    """The query is fine but returned no sample (or one that is not a finite number)."""

    reason: ClassVar[str] = "NoData"


QueryResult = Sample | QueryError


class PrometheusClient:
    """Queries any number of Prometheus servers over one connection pool. Use inside the event loop."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        address_check: Callable[[str, str], None] | None = None,
    ) -> None:
        """``address_check(host, address)`` raises to refuse a connection to an address a host name
        resolved to (URLs a tenant chose go through the operator's endpoint rules that way; an
        address written in the URL itself is the caller's to check before querying)."""
        self.address_check = address_check
        self.timeout = timeout
        self.connect_timeout = min(connect_timeout, timeout)
        self.max_answer_bytes = max_answer_bytes
        self._session: aiohttp.ClientSession | None = None
        self._contexts: dict[str, ssl.SSLContext] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def query(
        self, url: str, promql: str, *, bearer_token: str | None = None, ca_pem: str | None = None
    ) -> QueryResult:
        """Evaluate ``promql`` now on the Prometheus whose API lives under ``url``.

        ``bearer_token`` is sent as ``Authorization: Bearer``; ``ca_pem`` adds a CA to trust
        besides the system's. Never raises for anything the source or the network does.
        """
        headers = {"Accept": "application/json", "User-Agent": f"skyfleet/{__version__}"}
        if bearer_token:
            headers["Authorization"] = f"Bearer {bearer_token}"
        form = {"query": promql, "timeout": f"{self.timeout:g}s"}
        try:
            async with asyncio.timeout(self.timeout):
                async with self._get_session().post(
                    url.rstrip("/") + "/api/v1/query",
                    data=form,
                    headers=headers,
                    ssl=self._context(ca_pem),
                    allow_redirects=False,
                ) as response:
                    body = await self._read(response)
                    return _interpret(response.status, body)
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, _TooLarge) as err:
            return self._failure(err)

    def _failure(self, err: BaseException) -> QueryError:  # noqa: PLR0911 - one answer per kind of failure
        """What a failed exchange means, in fixed words."""
        if isinstance(err, TimeoutError):
            return Unavailable(f"no answer within {self.timeout:g}s")
        if isinstance(err, _TooLarge):
            return QueryInvalid(
                f"the answer exceeds {self.max_answer_bytes // 1024} KiB: a rule needs a scalar or one sample"
            )
        if isinstance(err, aiohttp.ClientConnectorError) and isinstance(err.os_error, _AddressRefused):
            return Unavailable("the server's address is not allowed by the operator's endpoint allow-list")
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            return Unavailable("TLS verification of the server's certificate failed")
        if isinstance(err, aiohttp.ClientSSLError):
            return Unavailable("TLS handshake failed")
        if isinstance(err, aiohttp.ClientConnectorError):
            return Unavailable("cannot connect")
        # ValueError: a URL aiohttp cannot use (the CRD admits only http(s) URLs, so rare).
        return Unavailable("the connection failed")

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = None
            if self.address_check is not None:
                connector = aiohttp.TCPConnector(resolver=_CheckedResolver(self.address_check))
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, sock_connect=self.connect_timeout),
                trust_env=False,
                connector=connector,
            )
        return self._session

    def _context(self, ca_pem: str | None) -> ssl.SSLContext:
        key = ca_pem or ""
        if key not in self._contexts:
            context = ssl.create_default_context()
            if ca_pem:
                context.load_verify_locations(cadata=ca_pem)
            self._contexts[key] = context
        return self._contexts[key]

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(16384):
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise _TooLarge
            chunks.append(chunk)
        return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _AddressRefused(OSError):
    """A host name resolved to an address the address check refused (never says which)."""


class _CheckedResolver(aiohttp.abc.AbstractResolver):
    """The system resolver, whose every answer must pass ``check`` before aiohttp may connect to it."""

    def __init__(self, check: Callable[[str, str], None]) -> None:
        self._check = check
        self._resolver = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        answers = await self._resolver.resolve(host, port, family)
        for answer in answers:
            try:
                self._check(host.rstrip("."), answer["host"])
            except Exception:
                raise _AddressRefused("address refused") from None
        return answers

    async def close(self) -> None:
        await self._resolver.close()


def _interpret(status: int, body: bytes) -> QueryResult:
    """One number, or why not, from an HTTP status and a body that is never quoted back."""
    answer = _json(body)
    if status != 200:
        return _http_failure(status, answer)
    if answer.get("status") != "success" or not isinstance(answer.get("data"), dict):
        return Unavailable("the answer is not a Prometheus query result")
    return _one_number(answer["data"])


def _http_failure(status: int, answer: dict[str, Any]) -> QueryError:
    if 300 <= status < 400:
        return Unavailable(f"redirect refused (HTTP {status})")
    if status in (401, 403):
        return Unavailable(f"the server refused the request (HTTP {status}): check the bearer token")
    if status == 404:
        return Unavailable("no Prometheus HTTP API at this URL (HTTP 404)")
    error_type = answer.get("errorType") if answer.get("status") == "error" else None
    kind = f", {error_type}" if error_type in _ERROR_TYPES else ""
    if status in (400, 422) and error_type in ("bad_data", "execution"):
        return QueryInvalid(f"Prometheus rejected the query (HTTP {status}{kind})")
    return Unavailable(f"Prometheus answered HTTP {status}{kind}")


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _one_number(data: dict[str, Any]) -> QueryResult:
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return _sample(result)
    if result_type == "vector" and isinstance(result, list):
        if not result:
            return NoData("the query returned no series")
        if len(result) > 1:
            return QueryInvalid(
                f"the query returned {len(result)} series; a rule needs one (aggregate them, e.g. with sum or max)"
            )
        series = result[0]
        return _sample(series.get("value") if isinstance(series, dict) else None)
    if result_type in ("matrix", "string"):
        return QueryInvalid(f"the query returned a {result_type}; a rule needs a scalar or one sample")
    return Unavailable("the answer is not a Prometheus query result")


def _sample(pair: Any) -> QueryResult:
    """A ``[unix seconds, "value"]`` pair."""
    try:
        timestamp, text = pair
        value = float(text)
        at = datetime.fromtimestamp(float(timestamp), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return Unavailable("the answer is not a Prometheus query result")
    if not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
        return NoData(f"the query returned {shown}, not a finite number")
    return Sample(value=value, at=at)
