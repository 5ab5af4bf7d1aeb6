"""A local EC2 API: moto's EC2 backend served on loopback, with a small documented adapter.

Usage::

    with EC2Emulator() as emu:          # or emu = EC2Emulator(); url = emu.start()
        url = emu.endpoint              # http://127.0.0.1:<port>/
        ...
        emu.reset()                     # forget every instance, between tests

From a shell (for ``skyfleet demo`` or manual poking)::

    python -m skyfleet.testing.ec2emulator --port 5000

The adapter fixes exactly three measured moto 5.2 quirks, and nothing in libcloud or the product:

1. moto answers ``xmlns="http://ec2.amazonaws.com/doc/2016-11-15"`` where AWS sends the same
   URI with a trailing slash; libcloud looks elements up by the AWS namespace and would find
   nothing. The body is rewritten and Content-Length recomputed.
2. moto's default dispatcher guesses the service from the request; libcloud's SigV2 query
   auth with a bare host makes it answer as S3. We serve the EC2 backend app directly, so
   every request is EC2.
3. moto's error documents (``<Response><Errors>...``) carry the EC2 namespace; AWS's carry
   none, and libcloud reads error codes without a namespace, so every error would arrive as
   an empty message. The namespace is removed from error documents.

Other quirks (no ClientToken deduplication, instant state changes, 100-item pages) are
left as they are here; ``skyfleet.testing.faultproxy`` emulates AWS's behaviour on top.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from skyfleet.testing.net import free_port
from skyfleet.testing.processes import die_with_parent

if TYPE_CHECKING:
    from werkzeug.serving import BaseWSGIServer

__all__ = ["RESET_PATH", "SEED_PATH", "EC2Emulator", "EmulatorProcess", "NamespaceFix"]

_NAMESPACE = re.compile(rb'xmlns="(http://ec2\.amazonaws\.com/doc/\d{4}-\d{2}-\d{2})"')
_ERROR_NAMESPACE = re.compile(rb'<Response xmlns="[^"]*">')
# Control endpoints every emulator in skyfleet.testing answers (moto's and fastec2's), so one
# process runner serves both: forget everything; launch instances without the API's cost.
RESET_PATH = "/moto-api/reset"
SEED_PATH = "/skyfleet-emulator/seed"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class NamespaceFix:
    """WSGI middleware adding AWS's trailing slash to moto's EC2 XML namespace."""

    def __init__(
        self, app: WSGIApp, on_reset: Callable[[], None], on_seed: Callable[..., list[str]] | None = None
    ) -> None:
        self.app = app
        self.on_reset = on_reset
        self.on_seed = on_seed

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == RESET_PATH and method == "POST":
            self.on_reset()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
            return [b"{}"]
        if path == SEED_PATH and method == "POST" and self.on_seed is not None:
            request = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)) or b"{}")
            answer = json.dumps({"ids": self.on_seed(**request)}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
            return [answer]
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, headers
            return lambda _chunk: None

        chunks = self.app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        body = _ERROR_NAMESPACE.sub(b"<Response>", body, count=1)
        body = _NAMESPACE.sub(rb'xmlns="\1/"', body)
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


def _reset_moto() -> None:
    from moto.moto_api._internal.models import moto_api_backend

    moto_api_backend.reset()


class EC2Emulator:
    """moto's EC2 backend in a background thread of this process, on 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return f"http://{self.host}:{self._server.server_port}/"

    def start(self) -> str:
        """Start serving and return the endpoint URL."""
        if self._server is not None:
            return self.endpoint
        from moto.moto_server.werkzeug_app import create_backend_app
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            # Request lines carry query-auth parameters (access key ids); keep them out of test logs.
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

        app = NamespaceFix(create_backend_app("ec2"), _reset_moto, self.seed)
        self._server = make_server(self.host, self.port, app, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ec2-emulator", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def reset(self) -> None:
        """Forget all state (instances, tags, ...) without restarting."""
        _reset_moto()

    def seed(
        self,
        count: int,
        tags: dict[str, str],
        *,
        unique_tag: str | None = None,
        image_id: str = "ami-03cf127a",
        instance_type: str = "t3.micro",
        region: str = "us-east-1",
    ) -> list[str]:
        """Launch ``count`` instances straight into the backend, one reservation each.

        Three times faster than going through the API, for building large accounts. One
        reservation per instance is how real fleets look (and what DescribeInstances pages
        over). With ``unique_tag`` every instance also carries that tag set to its own id.
        Relies on moto's backend signature, so it fails loudly if moto changes it.
        """
        from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
        options: dict[str, Any] = {
            "instance_type": instance_type,
            "is_instance_type_default": False,
            "placement": None,
            "placement_hostid": None,
            "region_name": region,
            "subnet_id": None,
            "key_name": None,
            "security_group_ids": [],
            "nics": [],
            "private_ip": None,
            "associate_public_ip": None,
            "tags": {"instance": dict(tags)},
            "ebs_optimized": False,
            "disable_api_stop": False,
            "instance_market_options": {},
            "instance_initiated_shutdown_behavior": None,
            "launch_template": {},
            "hibernation_options": {},
            "iam_instance_profile_name": None,
            "iam_instance_profile_arn": None,
            "monitoring_state": "disabled",
            "ipv6_address_count": None,
            "metadata_options": {},
            "client_token": "",
        }
        ids: list[str] = []
        for _ in range(count):
            reservation = backend.run_instances(image_id, 1, None, [], **options)
            ids.extend(instance.id for instance in reservation.instances)
        if unique_tag:
            for instance_id in ids:
                backend.create_tags([instance_id], {unique_tag: instance_id})
        return ids

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmulatorProcess:
    """The same emulator in a child process of its own, so it does not share the caller's GIL
    (benchmarks); it dies with its parent. ``url`` answers once the constructor returns.

    Subclasses run another emulator module with the same command line (``--port``) and the
    same control endpoints (``skyfleet.testing.fastec2.FastEC2Process``).
    """

    module: ClassVar[str] = "skyfleet.testing.ec2emulator"

    def __init__(self, timeout: float = 60.0, *, args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "--port", str(self.port), *args],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.reset()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the EC2 emulator did not answer within {timeout:g} s")

    def _post(self, path: str, payload: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        url = f"{self.url}{path.lstrip('/')}"  # http://127.0.0.1:<port>/ only
        data = json.dumps(payload or {}).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)  # noqa: S310
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")

    def reset(self) -> None:
        """Forget all state, as EC2Emulator.reset does in-process."""
        self._post(RESET_PATH)

    def seed(
        self,
        count: int,
        tags: dict[str, str],
        *,
        unique_tag: str | None = None,
        image_id: str = "ami-03cf127a",
        instance_type: str = "t3.micro",
        region: str = "us-east-1",
        timeout: float = 3600.0,
    ) -> list[str]:
        """``EC2Emulator.seed`` in the child process: ``count`` running instances, one reservation each."""
        request = {
            "count": count,
            "tags": tags,
            "unique_tag": unique_tag,
            "image_id": image_id,
            "instance_type": instance_type,
            "region": region,
        }
        ids: list[str] = self._post(SEED_PATH, request, timeout=timeout)["ids"]
        return ids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local EC2 API (moto) on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    emulator = EC2Emulator(args.host, args.port)
    print(emulator.start(), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
