"""A fault-injecting HTTP reverse proxy that makes a local emulator behave like a real cloud.

Put it between a driver and ``skyfleet.testing.ec2emulator`` (or anything HTTP)::

    with FaultProxy(emulator.endpoint) as proxy:
        proxy.faults.error_rate = 0.2                 # 20% of requests answer 5xx
        proxy.throttle("RunInstances", burst=5, rate=2.0)  # AWS's RunInstances request bucket
        proxy.throttle("TerminateInstances", burst=1000, rate=20, per="InstanceId")  # its resource bucket
        proxy.drop_next_response("RunInstances")      # forward, then lose the answer
        connector_endpoint = proxy.endpoint

Every fault is switchable at runtime from the test thread. What AWS does and moto does not
is emulated here rather than in the emulator, so the same proxy can sit in front of other
backends:

* ClientToken deduplication: RunInstances with a token seen before and the same parameters
  answers the first result without launching again; different parameters answer
  ``IdempotentParameterMismatch``.
* Eventual consistency: new instances stay invisible to DescribeInstances for
  ``describe_lag`` seconds, and report ``pending`` for ``pending_delay`` seconds.
* Recipes take time: an instance whose RunInstances UserData contains ``recipe_marker`` stays
  ``pending`` for ``recipe_delay`` seconds more, as a VM running an install at boot is not ready
  before it finished (benchmarks of baked against unbaked images).
* Images take time: a new AMI (CreateImage, CopyImage) reports ``pending`` for
  ``image_pending_delay`` seconds (``math.inf``: it never becomes available), where moto makes
  it ``available`` at once and EC2 takes minutes.
* Throttling shaped like EC2's: HTTP 503 ``RequestLimitExceeded`` from per-action token buckets,
  counting requests, or (``per="InstanceId"``) the ids a request names, as EC2's resource buckets
  do (TerminateInstances: 100 requests and 5/s, 1000 instances and 20/s); an action may have both.
* Console output: ``set_console(instance_id, text)`` makes GetConsoleOutput answer ``text``
  (base64, as EC2 sends it) for that instance, where moto answers the same fixed log for all.
* Authentication: with ``faults.accepted_keys`` set, requests signed with any other access key
  id answer 401 ``AuthFailure`` (moto accepts every key).

It also remembers the parameters of every request (``queries``), so tests can check what a
client asked for, not only what it got.
"""

from __future__ import annotations

import base64
import collections
import http.client
import random
import re
import socket
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Self
from urllib.parse import parse_qsl, urlsplit

from skyfleet.testing.net import LoopbackHTTPServer

__all__ = ["FaultProxy", "Faults", "TokenBucket"]

_EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_INSTANCE_ID = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")
_IMAGE_ID = re.compile(rb"<imageId>(ami-[0-9a-z]+)</imageId>")
_IMAGE_MAKERS = {"CreateImage", "CopyImage"}
# Parameters that differ between retries of the same logical request.
_VOLATILE = re.compile(r"^(Signature.*|AWSAccessKeyId|Timestamp|Expires|X-Amz-.*|Version)$")
_SIGV4_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


class TokenBucket:
    """The emulated cloud's bucket (server side): ``burst`` tokens refilled at ``rate``/s."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = burst
        self.rate = rate
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def try_take(self, amount: int = 1) -> bool:
        """Take ``amount`` tokens if the bucket holds them; else take none."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= amount:
                self._tokens -= amount
                return True
            return False


@dataclass
class Faults:
    """What goes wrong, and how often. Rates are probabilities per request."""

    latency: float = 0.0
    latency_jitter: float = 0.0
    error_rate: float = 0.0
    error_status: int = 503
    reset_rate: float = 0.0
    drop_response_rate: float = 0.0
    throttle_rate: float = 0.0
    describe_lag: float = 0.0
    pending_delay: float = 0.0
    image_pending_delay: float = 0.0
    recipe_marker: str = ""
    recipe_delay: float = 0.0
    dedup_client_token: bool = True
    # Access key ids the cloud accepts (None: any, as moto does); others get 401 AuthFailure.
    accepted_keys: frozenset[str] | None = None
    # Restrict the random faults above to these actions (empty: every action).
    actions: frozenset[str] = field(default_factory=frozenset)

    def applies(self, action: str) -> bool:
        return not self.actions or action in self.actions


def _b64(text: str) -> str:
    try:
        return base64.b64decode(text).decode("utf-8", errors="replace")
    except ValueError:
        return text


def _ec2_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()


@dataclass(frozen=True)
class _OneShot:
    kind: str | None
    code: str | None = None
    status: int = 503
    message: str | None = None


_NO_FAULT = _OneShot(None)


class FaultProxy:
    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.host = host
        self.port = port
        self.faults = Faults()
        self.buckets: dict[str, TokenBucket] = {}
        # Resource buckets: per action, the numbered parameter counted ("InstanceId") and its bucket.
        self.resource_buckets: dict[str, tuple[str, TokenBucket]] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        # Seeded so a failing fault scenario replays identically; nothing here is cryptographic.
        self._random = random.Random(seed)  # noqa: S311
        self._lock = threading.Lock()
        self._one_shots: dict[str, collections.deque[_OneShot]] = collections.defaultdict(collections.deque)
        self._tokens: dict[str, tuple[tuple[tuple[str, str], ...], int, bytes]] = {}
        self._token_locks: dict[str, threading.Lock] = {}
        self._launched: dict[str, float] = {}
        self._recipe_cost: dict[str, float] = {}
        self._queries: list[tuple[str, tuple[tuple[str, str], ...]]] = []
        self._images_made: dict[str, float] = {}
        self._consoles: dict[str, str] = {}
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- runtime control ----------------------------------------------------------------
    def throttle(self, action: str, burst: int, rate: float, per: str | None = None) -> None:
        """Answer ``RequestLimitExceeded`` once ``action``'s bucket is empty ('*' for every action).

        With ``per`` (a numbered parameter: ``"InstanceId"``) the bucket counts the values a request
        names (``InstanceId.1`` ... ``InstanceId.N``) instead of requests, and a request whose
        values do not all fit is refused whole, taking none; it sits beside the request bucket.
        """
        if per is None:
            self.buckets[action] = TokenBucket(burst, rate)
        else:
            self.resource_buckets[action] = (per, TokenBucket(burst, rate))

    def drop_next_response(self, action: str, count: int = 1) -> None:
        """Forward the next ``count`` ``action`` requests, then close without answering."""
        with self._lock:
            self._one_shots[action].extend([_OneShot("drop")] * count)

    def fail_next(
        self,
        action: str,
        count: int = 1,
        kind: str = "error",
        *,
        code: str | None = None,
        status: int = 503,
        message: str | None = None,
    ) -> None:
        """Answer the next ``count`` ``action`` requests with ``kind``: error, reset or throttle.

        An error carries the EC2 error ``code`` and HTTP ``status`` given (default: 503 Unavailable).
        """
        with self._lock:
            self._one_shots[action].extend([_OneShot(kind, code, status, message)] * count)

    def set_console(self, instance_id: str, text: str) -> None:
        """GetConsoleOutput for ``instance_id`` answers ``text`` from now on."""
        with self._lock:
            self._consoles[instance_id] = text

    def reset(self) -> None:
        """Back to a faultless proxy with empty statistics and memory."""
        with self._lock:
            self.faults = Faults()
            self.buckets.clear()
            self.resource_buckets.clear()
            self.stats.clear()
            self._one_shots.clear()
            self._tokens.clear()
            self._token_locks.clear()
            self._launched.clear()
            self._recipe_cost.clear()
            self._queries.clear()
            self._images_made.clear()
            self._consoles.clear()

    def count(self, key: str) -> int:
        with self._lock:
            return self.stats[key]

    def queries(self, action: str | None = None) -> list[dict[str, str]]:
        """The parameters (query string and form body) of every request of ``action`` so far."""
        with self._lock:
            return [dict(params) for name, params in self._queries if action in (None, name)]

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("proxy is not running")
        return f"http://{self.host}:{self._server.server_port}/"

    def start(self) -> str:
        if self._server is not None:
            return self.endpoint
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = LoopbackHTTPServer((self.host, self.port), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- decisions (called from handler threads) ----------------------------------------
    def _bump(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._random.random() < rate

    def _one_shot(self, action: str) -> _OneShot:
        with self._lock:
            queue = self._one_shots.get(action)
            return queue.popleft() if queue else _NO_FAULT

    def _token_lock(self, token: str) -> threading.Lock:
        with self._lock:
            return self._token_locks.setdefault(token, threading.Lock())

    def _remember_launch(self, body: bytes, params: list[tuple[str, str]]) -> None:
        now = time.monotonic()
        marker, cost = self.faults.recipe_marker, self.faults.recipe_delay
        user_data = dict(params).get("UserData", "")
        runs_recipe = bool(marker and cost > 0 and user_data and marker in _b64(user_data))
        with self._lock:
            for match in _INSTANCE_ID.finditer(body):
                self._launched.setdefault(match.group(1).decode(), now)
                if runs_recipe:
                    self._recipe_cost.setdefault(match.group(1).decode(), cost)

    def _age(self, instance_id: str) -> float | None:
        with self._lock:
            launched = self._launched.get(instance_id)
        return None if launched is None else time.monotonic() - launched

    def _rewrite_describe(self, body: bytes, requested_ids: list[str]) -> tuple[int, bytes]:
        lag, pending = self.faults.describe_lag, self.faults.pending_delay
        with self._lock:
            costs = dict(self._recipe_cost)
        if lag <= 0 and pending <= 0 and not costs:
            return 200, body
        ET.register_namespace("", _EC2_NS)
        # The body comes from the emulator this proxy fronts on loopback, not from strangers.
        root = ET.fromstring(body)  # noqa: S314
        ns = {"e": _EC2_NS}
        reservations = root.find("e:reservationSet", ns)
        hidden: set[str] = set()
        if reservations is not None:
            for reservation in list(reservations):
                items = reservation.findall("e:instancesSet/e:item", ns)
                for item in items:
                    instance_id = item.findtext("e:instanceId", default="", namespaces=ns)
                    age = self._age(instance_id)
                    if age is None:
                        continue
                    if age < lag:
                        hidden.add(instance_id)
                    elif age < lag + pending + costs.get(instance_id, 0.0):
                        state = item.find("e:instanceState", ns)
                        if state is not None and state.findtext("e:name", namespaces=ns) == "running":
                            code = state.find("e:code", ns)
                            name = state.find("e:name", ns)
                            if code is not None and name is not None:
                                code.text, name.text = "0", "pending"
                if items and all(i.findtext("e:instanceId", namespaces=ns) in hidden for i in items):
                    reservations.remove(reservation)
        if requested_ids and set(requested_ids) <= hidden:
            missing = ", ".join(requested_ids)
            return 400, _ec2_error("InvalidInstanceID.NotFound", f"The instance ID '{missing}' does not exist")
        return 200, ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def _rewrite_console(self, body: bytes, instance_id: str | None) -> bytes:
        with self._lock:
            text = self._consoles.get(instance_id or "")
        if text is None:
            return body
        ET.register_namespace("", _EC2_NS)
        root = ET.fromstring(body)  # noqa: S314 - from the emulator this proxy fronts on loopback
        output = root.find(f"{{{_EC2_NS}}}output")
        if output is None:
            output = ET.SubElement(root, f"{{{_EC2_NS}}}output")
        output.text = base64.b64encode(text.encode()).decode()
        rewritten: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return rewritten

    # -- images: pending for a while, as EC2's are ------------------------------------------
    def _remember_image(self, body: bytes) -> None:
        match = _IMAGE_ID.search(body)
        if match is not None:
            with self._lock:
                self._images_made.setdefault(match.group(1).decode(), time.monotonic())

    def _rewrite_describe_images(self, body: bytes) -> bytes:
        delay = self.faults.image_pending_delay
        with self._lock:
            made = dict(self._images_made)
        if delay <= 0 or not made:
            return body
        ET.register_namespace("", _EC2_NS)
        root = ET.fromstring(body)  # noqa: S314 - from the emulator this proxy fronts on loopback
        ns = {"e": _EC2_NS}
        now = time.monotonic()
        for item in root.findall("e:imagesSet/e:item", ns):
            started = made.get(item.findtext("e:imageId", default="", namespaces=ns))
            state = item.find("e:imageState", ns)
            if started is not None and now - started < delay and state is not None and state.text == "available":
                state.text = "pending"
        rewritten: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return rewritten


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        # Request lines can carry query-auth parameters; a test proxy must not print them.
        return

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    # -- helpers ------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "text/xml"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _reset_connection(self) -> None:
        # SO_LINGER 0 turns close() into a TCP RST: the client sees "connection reset by peer".
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _params(self, body: bytes) -> list[tuple[str, str]]:
        params = parse_qsl(urlsplit(self.path).query, keep_blank_values=True)
        if body and "x-www-form-urlencoded" in self.headers.get("Content-Type", ""):
            params += parse_qsl(body.decode(), keep_blank_values=True)
        return params

    def _access_key(self, params: list[tuple[str, str]]) -> str | None:
        """The access key id a request is signed with: SigV2 query parameter or SigV4 header."""
        key = dict(params).get("AWSAccessKeyId")
        if key:
            return key
        match = _SIGV4_CREDENTIAL.search(self.headers.get("Authorization", ""))
        return match.group(1) if match else None

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.owner
        conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, data
        finally:
            conn.close()

    def _handle(self) -> None:
        proxy = self.owner
        faults = proxy.faults
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        params = self._params(body)
        action = dict(params).get("Action", self.command)
        with proxy._lock:
            proxy._queries.append((action, tuple(params)))
        proxy._bump("requests")
        proxy._bump(f"requests:{action}")

        if faults.latency or faults.latency_jitter:
            with proxy._lock:
                jitter = proxy._random.uniform(0, faults.latency_jitter)
            time.sleep(faults.latency + jitter)

        if faults.accepted_keys is not None and self._access_key(params) not in faults.accepted_keys:
            proxy._bump("auth_failures")
            self._reply(401, _ec2_error("AuthFailure", "AWS was not able to validate the provided access credentials"))
            return

        one_shot = proxy._one_shot(action)
        random_faults = faults.applies(action)
        if one_shot.kind == "reset" or (random_faults and proxy._chance(faults.reset_rate)):
            proxy._bump("resets")
            self._reset_connection()
            return
        bucket = proxy.buckets.get(action) or proxy.buckets.get("*")
        if (
            one_shot.kind == "throttle"
            or (bucket is not None and not bucket.try_take())
            or not self._resources_fit(action, params)
            or (random_faults and proxy._chance(faults.throttle_rate))
        ):
            proxy._bump("throttled")
            proxy._bump(f"throttled:{action}")
            self._reply(503, _ec2_error("RequestLimitExceeded", "Request limit exceeded."))
            return
        if one_shot.kind == "error":
            proxy._bump("errors")
            code = one_shot.code or "Unavailable"
            message = one_shot.message or f"{code} (injected by the fault proxy)"
            self._reply(one_shot.status, _ec2_error(code, message))
            return
        if random_faults and proxy._chance(faults.error_rate):
            proxy._bump("errors")
            status = faults.error_status
            code = "InternalError" if status == 500 else "Unavailable"
            self._reply(status, _ec2_error(code, "An internal error has occurred"))
            return

        token = dict(params).get("ClientToken") if action == "RunInstances" else None
        if token and faults.dedup_client_token:
            with proxy._token_lock(token):
                self._run_instances_once(token, params, body, one_shot)
            return
        self._pass_through(action, params, body, one_shot)

    def _resources_fit(self, action: str, params: list[tuple[str, str]]) -> bool:
        resource = self.owner.resource_buckets.get(action)
        if resource is None:
            return True
        per, bucket = resource
        named = sum(1 for k, _ in params if k.startswith(per + ".") and k[len(per) + 1 :].isdigit())
        return bucket.try_take(named)

    def _run_instances_once(self, token: str, params: list[tuple[str, str]], body: bytes, one_shot: _OneShot) -> None:
        proxy = self.owner
        fingerprint = tuple(sorted((k, v) for k, v in params if not _VOLATILE.match(k)))
        with proxy._lock:
            seen = proxy._tokens.get(token)
        if seen is not None:
            proxy._bump("dedup_hits")
            if seen[0] != fingerprint:
                self._reply(
                    400,
                    _ec2_error("IdempotentParameterMismatch", "Token reused with different parameters"),
                )
                return
            self._reply(seen[1], seen[2])
            return
        status, headers, data = self._forward(body)
        if status == 200:
            proxy._bump("launches")
            proxy._remember_launch(data, params)
            with proxy._lock:
                proxy._tokens[token] = (fingerprint, status, data)
        self._deliver(status, headers, data, one_shot)

    def _pass_through(self, action: str, params: list[tuple[str, str]], body: bytes, one_shot: _OneShot) -> None:
        proxy = self.owner
        status, headers, data = self._forward(body)
        if action == "RunInstances" and status == 200:
            proxy._bump("launches")
            proxy._remember_launch(data, params)
        if action == "DescribeInstances" and status == 200:
            ids = [v for k, v in params if k.startswith("InstanceId.")]
            status, data = proxy._rewrite_describe(data, ids)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        if action in _IMAGE_MAKERS and status == 200:
            proxy._remember_image(data)
        if action == "DescribeImages" and status == 200:
            data = proxy._rewrite_describe_images(data)
        if action == "GetConsoleOutput" and status == 200:
            data = proxy._rewrite_console(data, dict(params).get("InstanceId"))
        self._deliver(status, headers, data, one_shot)

    def _deliver(self, status: int, headers: list[tuple[str, str]], data: bytes, one_shot: _OneShot) -> None:
        proxy = self.owner
        faults = proxy.faults
        dropped_at_random = faults.applies(self._action_hint()) and proxy._chance(faults.drop_response_rate)
        if one_shot.kind == "drop" or dropped_at_random:
            proxy._bump("dropped")
            self._reset_connection()
            return
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _action_hint(self) -> str:
        return dict(parse_qsl(urlsplit(self.path).query)).get("Action", self.command)
