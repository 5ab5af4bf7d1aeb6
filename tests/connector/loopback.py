"""Small loopback HTTP servers that behave badly on purpose: slow, dripping, redirecting; and a
throwaway certificate authority for the ones that speak TLS.

They speak just enough EC2 for ``verify`` (DescribeAvailabilityZones) and record what they saw:
how many requests were in flight at once, and when each client went away.
"""

from __future__ import annotations

import datetime
import ipaddress
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ZONES = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<DescribeAvailabilityZonesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    b"<requestId>r-1</requestId><availabilityZoneInfo><item><zoneName>us-east-1a</zoneName>"
    b"<zoneState>available</zoneState><regionName>us-east-1</regionName></item></availabilityZoneInfo>"
    b"</DescribeAvailabilityZonesResponse>"
)


@dataclass
class Visit:
    path: str
    opened: float
    closed: float | None = None


@dataclass
class LoopbackServer:
    """``mode``: ``slow`` answers ZONES after ``delay`` seconds; ``drip`` announces a long body
    and sends one byte every ``delay`` seconds until the client goes away; ``redirect`` answers
    302 to ``/latest/meta-data/`` (and serves ``canary`` there), with the canary in its body;
    ``error`` answers 500 with a 100 KB HTML page holding the canary."""

    mode: str = "slow"
    delay: float = 0.3
    canary: str = "CANARY"
    host: str = "127.0.0.1"
    tls: ssl.SSLContext | None = None
    visits: list[Visit] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sock: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/"

    def __enter__(self) -> Self:
        self._sock = socket.create_server((self.host, 0))
        self._sock.settimeout(0.1)
        thread = threading.Thread(target=self._accept, daemon=True, name="loopback-server")
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(0.2)
            while not self._stop.is_set():
                request = b""
                while b"\r\n\r\n" not in request:
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        if self._stop.is_set():
                            return
                        continue
                    if not chunk:
                        return
                    request += chunk
                    if not request[:8].split(b" ", 1)[0].isalpha():
                        return  # not HTTP (a TLS hello, say): hang up, as HTTP servers do
                path = request.split(b" ", 2)[1].decode()
                visit = Visit(path, time.monotonic())
                with self._lock:
                    self.visits.append(visit)
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    keep = self._answer(conn, path, visit)
                finally:
                    with self._lock:
                        self.in_flight -= 1
                if not keep:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn: socket.socket, path: str, visit: Visit) -> bool:
        if self.mode == "slow":
            time.sleep(self.delay)
            conn.sendall(_response(200, ZONES, "text/xml"))
            return True
        if self.mode == "error":
            page = f"<html><body><h1>Internal error</h1><pre>{self.canary}</pre>{'x' * 100_000}</body></html>"
            conn.sendall(_response(500, page.encode(), "text/html"))
            return True
        if self.mode == "redirect":
            if path.startswith("/latest/meta-data"):
                conn.sendall(_response(200, self.canary.encode(), "text/plain"))
                return True
            location = f"http://{self.host}:{self.port}/latest/meta-data/{self.canary}"
            body = f"<html>moved to <a href='{location}'>{self.canary}</a></html>".encode()
            conn.sendall(_response(302, body, "text/html", {"Location": location}))
            return True
        # drip: a body that never ends, one byte at a time, until the client hangs up
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 1000000\r\n\r\n")
        while not self._stop.is_set():
            readable, _, _ = select.select([conn], [], [], self.delay)
            if readable and not conn.recv(1):
                break
            try:
                conn.sendall(b" ")
            except OSError:
                break
        visit.closed = time.monotonic()
        return False


def _response(status: int, body: bytes, kind: str, headers: dict[str, str] | None = None) -> bytes:
    reason = {200: "OK", 302: "Found", 500: "Internal Server Error"}[status]
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {kind}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Authority:
    pem: str
    server: ssl.SSLContext


def make_authority(tmp: Path, name: str) -> Authority:
    """A throwaway CA and a certificate from it for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return Authority(ca.public_bytes(serialization.Encoding.PEM).decode(), server)
