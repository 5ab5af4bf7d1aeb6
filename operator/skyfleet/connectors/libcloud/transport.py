"""libcloud's HTTP layer, hardened: where it may connect, what it trusts, how long it may take.

libcloud plugs its HTTP connection class in through ``Connection.conn_class`` (its own debug
mode swaps it the same way). ``GuardedConnection`` takes that place for every driver, the
login and catalogue connections of Azure, Google and Keystone included, and:

* refuses destinations the operator's ``EndpointPolicy`` does not allow, by URL when the
  connection is made and by every resolved address when a socket is opened (so DNS cannot
  turn a harmless name into the metadata service between check and use);
* never follows redirects: a 3xx answer is an ``EndpointNotAllowed`` error, and nothing of
  its body or ``Location`` is kept;
* trusts what the credential says (a CA bundle, or no verification for test clouds) and
  never the process environment: no proxies, no ``.netrc``, no ``REQUESTS_CA_BUNDLE``;
* gives every call a total deadline: socket timeouts are capped by what is left of it, and
  the sockets a call opened are registered in its ``CallScope`` so that the connector can
  shut them down when the deadline passes or the caller is cancelled -- a thread blocked on a
  dripping endpoint then returns at once instead of holding a worker forever.

The call-level settings travel in a context variable that the connector sets around each call
in its worker thread, so drivers need not know about any of this.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

from libcloud.common import azure, azure_arm
from libcloud.common import base as libcloud_base
from libcloud.http import LibcloudConnection
from libcloud.utils.loggingconnection import LoggingConnection
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from skyfleet.contract.endpoints import EndpointPolicy
from skyfleet.contract.errors import EndpointNotAllowed, Transient

__all__ = ["CallScope", "GuardedConnection", "call_scope", "current_scope", "install"]

# libcloud's connection classes that ours replaces (the second is LIBCLOUD_DEBUG's, which logs
# whole requests, user data included).
STOCK_CONNECTIONS: tuple[type[Any], ...] = (LibcloudConnection, LoggingConnection)


class CallScope:
    """One call to the cloud: its deadline, its endpoint rules and TLS trust, and the sockets it
    has open (so that they can be shut down from outside the thread that blocks on them)."""

    def __init__(
        self,
        *,
        policy: EndpointPolicy | None = None,
        deadline: float | None = None,
        verify: bool | str = True,
        track: bool = True,
    ) -> None:
        self.policy = policy or EndpointPolicy()
        self.deadline = deadline
        self.verify = verify
        self._track = track
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = False
        self.aborted = False

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        left = self.remaining()
        if self.aborted or (left is not None and left <= 0):
            raise Transient("the call ran out of its total time", code="DeadlineExceeded")

    def timeout(self, per_read: float | None) -> tuple[float | None, float | None]:
        """(connect, read) timeouts for one request: the per-read timeout, capped by the deadline."""
        left = self.remaining()
        if left is None:
            return per_read, per_read
        capped = max(0.001, left if per_read is None else min(per_read, left))
        return capped, capped

    def register(self, sock: socket.socket | None) -> None:
        if sock is None or not self._track:
            return
        with self._lock:
            if self._done:
                return
            self._sockets.append(sock)
            aborted = self.aborted
        if aborted:
            _shut(sock)

    def abort(self) -> None:
        """Shut down every socket the call has open: whatever blocks on them returns at once."""
        with self._lock:
            if self._done:
                return
            self.aborted = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def finish(self) -> None:
        """The call is over; its sockets go back to the pool untouched."""
        with self._lock:
            self._done = True
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    # socket.socket.shutdown, not SSLSocket.shutdown: the latter drops the SSL object under the
    # feet of the thread reading from it; shutting the descriptor down makes that read fail cleanly.
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_DEFAULT_SCOPE = CallScope(track=False)
_SCOPE: contextvars.ContextVar[CallScope] = contextvars.ContextVar("skyfleet_cloud_call", default=_DEFAULT_SCOPE)


def current_scope() -> CallScope:
    return _SCOPE.get()


@contextlib.contextmanager
def call_scope(scope: CallScope) -> Iterator[CallScope]:
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        scope.finish()


# -- urllib3 underneath requests -----------------------------------------------------------------


def _guarded_socket(conn: HTTPConnection) -> socket.socket:
    """Resolve, check every address against the policy, connect to the first that answers."""
    scope = current_scope()
    host = conn._dns_host
    try:
        infos = socket.getaddrinfo(host, conn.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        # One forbidden answer refuses the name: which address a client picks is not ours to steer.
        scope.policy.check_address(conn.host, address)
    last: OSError | None = None
    for address in addresses:
        try:
            sock = create_connection(
                (address, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except OSError as exc:
            last = exc
            continue
        scope.register(sock)
        return sock
    if isinstance(last, TimeoutError):
        raise ConnectTimeoutError(conn, f"connection to {conn.host} timed out")
    raise NewConnectionError(conn, f"failed to establish a new connection: {type(last).__name__}: {last}")


class _GuardedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        current_scope().register(self.sock)  # a kept-alive socket from an earlier call
        super().request(*args, **kwargs)


class _ScopedSSLContext(ssl.SSLContext):
    """Registers the TLS socket before its handshake, which can be dripped as slowly as a body."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        current_scope().register(wrapped)
        try:
            wrapped.do_handshake()
        except BaseException:
            wrapped.close()  # as the stock handshake-on-connect does on failure
            raise
        return wrapped


class _GuardedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        return _guarded_socket(self)

    def connect(self) -> None:
        context = _ScopedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_reqs in ("CERT_NONE", ssl.CERT_NONE):
            context.check_hostname = False
        self.ssl_context = context
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        current_scope().register(self.sock)
        super().request(*args, **kwargs)


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise EndpointNotAllowed("cloud calls do not go through proxies")


# -- libcloud on top -----------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


class GuardedConnection(LibcloudConnection):
    """libcloud's requests-based connection with the rules of this module."""

    def __init__(self, host: str, port: int, secure: bool | None = None, **kwargs: Any) -> None:
        kwargs.pop("proxy_url", None)
        kwargs.pop("cert_file", None)
        kwargs.pop("key_file", None)
        super().__init__(host, port, secure=secure, **kwargs)  # type: ignore[no-untyped-call]
        scope = current_scope()
        self.origin = str(self.host)
        scope.policy.check_url(self.origin)
        session: Any = self.session
        session.trust_env = False
        adapter = _GuardedAdapter()
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.ca_cert = None

    def _send(self, method: str, url: str, **kwargs: Any) -> None:
        scope = current_scope()
        target = urljoin(self.origin, url)
        if _origin(target) != _origin(self.origin):
            raise EndpointNotAllowed("a request tried to leave the endpoint it was made for")
        scope.check_deadline()
        session: Any = self.session
        self.response = session.request(
            method=method.lower(),
            url=target,
            allow_redirects=False,
            verify=scope.verify,
            timeout=scope.timeout(session.timeout),
            **kwargs,
        )
        status = self.response.status_code
        if 300 <= status < 400:
            self.response.close()
            raise EndpointNotAllowed(
                f"the endpoint answered with a redirect (HTTP {status}), which Skyfleet does not follow; "
                "point the URL at the address that serves the API",
                code="Redirect",
            )

    def request(  # noqa: PLR0917 - libcloud's signature
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Any = None,
        raw: bool = False,
        stream: bool = False,
        hooks: Any = None,
    ) -> None:
        headers = self._normalize_headers(headers=headers)  # type: ignore[no-untyped-call]
        self._send(method, url, data=body, headers=headers, stream=stream, hooks=hooks)

    def prepared_request(  # noqa: PLR0917 - libcloud's signature
        self, method: str, url: str, body: Any = None, headers: Any = None, raw: bool = False, stream: bool = False
    ) -> None:
        headers = self._normalize_headers(headers=headers)  # type: ignore[no-untyped-call]
        self._send(method, url, data=body, headers=headers, stream=stream)


def install() -> None:
    """Make ``GuardedConnection`` the connection of every libcloud connection class that uses
    the stock one (libcloud's base class and the Azure classes that name it themselves)."""
    for cls in (
        libcloud_base.Connection,
        azure.AzureActiveDirectoryConnection,
        azure_arm.AzureResourceManagementConnection,
    ):
        if cls.__dict__.get("conn_class") in STOCK_CONNECTIONS:
            cls.conn_class = GuardedConnection


install()
