"""A real Prometheus on loopback, and a load exporter whose values a test sets.

Usage::

    with LoadExporter() as load, Prometheus(targets=[load.target]) as prom:
        load.set("shop_load", 3.0)
        prom.wait_for("shop_load", lambda v: v == 3.0)   # scraped every second
        url = prom.url                                     # http://127.0.0.1:<port>
        prom.stop(); prom.start()                          # down and back, same port and data

The server is the upstream ``cmd/prometheus`` built by ``tools/prometheus/build.sh`` (see
``skyfleet.testing.tools``). It scrapes its targets every second, keeps its data in a temporary
directory that ``close()`` removes, and dies with the process that started it. ``tls=True``
serves HTTPS with a throwaway self-signed certificate (``ca_pem`` is what a client must trust).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from skyfleet.testing.net import free_port
from skyfleet.testing.processes import die_with_parent
from skyfleet.testing.tools import prometheus_binary

__all__ = ["LoadExporter", "Prometheus", "PrometheusError"]

_STOP_GRACE_SECONDS = 10.0
_PORT_RACE_ATTEMPTS = 3


class PrometheusError(RuntimeError):
    """Prometheus did not start, or did not see what a test waited for."""


class Prometheus:
    """One Prometheus server scraping ``targets`` (``host:port`` on loopback) every ``scrape_interval`` seconds."""

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        job: str = "load",
        scrape_interval: float = 1.0,
        tls: bool = False,
        binary: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.targets = tuple(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.tls = tls
        self.startup_timeout = startup_timeout
        self.ca_pem = ""
        self.port = 0
        self.state_dir = Path()
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """Base URL of the HTTP API (what a client puts before /api/v1/query)."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.state_dir / "prometheus.log"

    def start(self) -> Self:
        """Start (or start again, on the same port with the same data) and wait until it is ready."""
        if self._process is not None:
            raise RuntimeError("already running")
        binary = self._binary or prometheus_binary()
        if self.state_dir == Path():
            self.state_dir = Path(tempfile.mkdtemp(prefix="skyfleet-prometheus-"))
            if self.tls:
                self._write_tls()
        self._write_config()
        restart = self.port != 0
        for attempt in range(1, _PORT_RACE_ATTEMPTS + 1):
            if not restart:
                self.port = free_port()
            try:
                self._spawn(binary)
                self._wait_ready()
                return self
            except PrometheusError as err:
                self.stop()
                # Another process may grab the port between our probe and Prometheus's bind.
                if restart or attempt == _PORT_RACE_ATTEMPTS or "address already in use" not in str(err):
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL), keeping port and data for a later ``start()``."""
        proc, self._process = self._process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=_STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop and remove the data. Idempotent."""
        self.stop()
        if self.state_dir != Path():
            shutil.rmtree(self.state_dir, ignore_errors=True)
            self.state_dir = Path()

    def set_targets(self, targets: Sequence[str]) -> None:
        """Scrape these targets from now on (the configuration is reloaded in place)."""
        self.targets = tuple(targets)
        self._write_config()
        if self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    # -- use ---------------------------------------------------------------------------------------

    def query(self, promql: str, timeout: float = 5.0) -> dict[str, Any]:
        """The ``data`` of an instant query's answer (resultType and result), as Prometheus sends it."""
        body = urllib.parse.urlencode({"query": promql}).encode()
        request = urllib.request.Request(self.url + "/api/v1/query", data=body, method="POST")  # noqa: S310
        with self._opener().open(request, timeout=timeout) as response:
            answer = json.load(response)
        if answer.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {answer}")
        data: dict[str, Any] = answer["data"]
        return data

    def values(self, promql: str) -> list[float]:
        """The sample values of an instant query (one per series; one for a scalar)."""
        data = self.query(promql)
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(series["value"][1]) for series in data["result"]]

    def wait_for(self, promql: str, accept: Callable[[float], bool], timeout: float = 30.0) -> float:
        """Wait until the query returns one sample whose value ``accept`` takes, and return it."""
        deadline = time.monotonic() + timeout
        seen: list[float] | str = "nothing"
        while time.monotonic() < deadline:
            try:
                seen = self.values(promql)
            except (OSError, PrometheusError) as err:
                seen = f"error {err}"
            if isinstance(seen, list) and len(seen) == 1 and not math.isnan(seen[0]) and accept(seen[0]):
                return seen[0]
            time.sleep(0.2)
        raise PrometheusError(f"timed out after {timeout:.0f}s waiting on {promql!r}; last saw {seen}")

    # -- internals ---------------------------------------------------------------------------------

    def _write_config(self) -> None:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": list(self.targets)}]}],
        }
        (self.state_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _write_tls(self) -> None:
        cert_pem, key_pem = _self_signed_loopback_certificate()
        self.ca_pem = cert_pem.decode()
        (self.state_dir / "tls.crt").write_bytes(cert_pem)
        key = self.state_dir / "tls.key"
        key.write_bytes(key_pem)
        key.chmod(0o600)
        web = {"tls_server_config": {"cert_file": str(self.state_dir / "tls.crt"), "key_file": str(key)}}
        (self.state_dir / "web.yml").write_text(yaml.safe_dump(web))

    def _spawn(self, binary: Path) -> None:
        args = [
            str(binary),
            f"--config.file={self.state_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.state_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=info",
            # Targets are static: apply them at once instead of after the default 5 s throttle.
            "--scrape.discovery-reload-interval=100ms",
        ]
        if self.tls:
            args.append(f"--web.config.file={self.state_dir / 'web.yml'}")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._process.returncode}:\n{self._tail()}")
            try:
                with self._opener().open(self.url + "/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"not ready after {self.startup_timeout:.0f}s:\n{self._tail()}")
            time.sleep(0.1)

    def _opener(self) -> urllib.request.OpenerDirector:
        context = ssl.create_default_context(cadata=self.ca_pem) if self.tls else None
        # No proxy: a developer's HTTP_PROXY must not intercept loopback calls.
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _self_signed_loopback_certificate() -> tuple[bytes, bytes]:
    """A P-256 certificate for 127.0.0.1 signed by its own key: the server certificate is its own CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyfleet test prometheus")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


class LoadExporter:
    """A ``/metrics`` endpoint on loopback (prometheus-client) serving gauges whose values a test sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.port = 0
        self._gauges: dict[str, tuple[Gauge, tuple[str, ...]]] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def target(self) -> str:
        """What a Prometheus scrape configuration lists for this exporter."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def set(self, name: str, value: float, **labels: str) -> None:
        """Serve ``name{labels} value`` from now on. A name keeps the label names of its first use."""
        gauge = self._gauge(name, tuple(sorted(labels)))
        (gauge.labels(**labels) if labels else gauge).set(value)

    def remove(self, name: str, **labels: str) -> None:
        """Stop serving one series of ``name`` (all of it for a name without labels)."""
        with self._lock:
            if name not in self._gauges:
                return
            gauge, _ = self._gauges[name]
            if labels:
                with contextlib.suppress(KeyError):
                    gauge.remove(*(labels[k] for k in sorted(labels)))
            else:
                self.registry.unregister(gauge)
                del self._gauges[name]

    def _gauge(self, name: str, label_names: tuple[str, ...]) -> Gauge:
        with self._lock:
            if name not in self._gauges:
                self._gauges[name] = (
                    Gauge(name, f"test load {name}", label_names, registry=self.registry),
                    label_names,
                )
            gauge, known = self._gauges[name]
            if known != label_names:
                raise ValueError(f"{name} has labels {known}, not {label_names}")
            return gauge
