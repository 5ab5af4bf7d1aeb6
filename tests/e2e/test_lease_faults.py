"""Leader election under API faults (issue 11, item 8): a pause of the API server shorter than the
renew deadline costs nothing, and a leader cut off from the API stops before a standby starts."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.operator_fixtures import Kube, Operator, eventually, kube_env

pytestmark = pytest.mark.e2e


class BlackHole:
    """A TCP relay on loopback to the API server that can stop relaying without closing anything:
    what a dead network path looks like to a client (no reset, no answer, ever)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.swallow = threading.Event()
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self._socks: list[socket.socket] = [self.server]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._socks.append(client)
            if self.swallow.is_set():
                continue  # accepted, never answered
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._socks.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        while not self.closed.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.2)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    if not self.swallow.is_set():
                        (b if src is a else a).sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.closed.set()
        for s in self._socks:
            with contextlib.suppress(OSError):
                s.close()


def holder_of(kube: Kube, lease: str) -> tuple[str | None, str | None]:
    obj = json.loads(kube("get", "lease", lease, "-n", "default", "-o", "json", ns=False))
    return obj["spec"].get("holderIdentity"), obj["spec"].get("renewTime")


def identity_of(op: Operator) -> str:
    assert op.proc is not None
    return f"{socket.gethostname()}-{op.proc.pid}"


@pytest.fixture
def kube(control_plane: Any, installed_crds: Any) -> Iterator[Kube]:
    kube = Kube(Path(control_plane.tools_bin), kube_env(control_plane), f"sf-lease-{uuid.uuid4().hex[:6]}")
    kube("create", "namespace", kube.namespace, ns=False)
    yield kube
    kube("delete", "namespace", kube.namespace, "--wait=false", ns=False, check=False)


def test_an_api_server_paused_for_8_seconds_costs_the_leader_nothing(
    control_plane: Any, kube: Kube, tmp_path: Path
) -> None:
    lease = f"skyfleet-pause-{uuid.uuid4().hex[:6]}"
    op = Operator(kube, "e2e-pause", tmp_path / "operator.log", lease)
    op.start()
    try:
        eventually(lambda: "acquired the lease" in op.log(), timeout=60, what="leading")
        # Pause right after a renewal, so the pause lies wholly inside one renew deadline (10 s).
        _, first = holder_of(kube, lease)
        eventually(lambda: holder_of(kube, lease)[1] != first, timeout=10, what="a renewal")
        apiserver = control_plane.pids()["kube-apiserver"]
        os.kill(apiserver, signal.SIGSTOP)
        try:
            time.sleep(8)
        finally:
            os.kill(apiserver, signal.SIGCONT)
        _, before = holder_of(kube, lease)
        eventually(lambda: holder_of(kube, lease)[1] != before, timeout=10, what="renewing again")
        time.sleep(5)
        assert op.proc is not None
        assert op.proc.poll() is None, op.log()[-3000:]
        assert holder_of(kube, lease)[0] == identity_of(op)
        assert "lost the lease" not in op.log()
    finally:
        op.stop()


def test_a_leader_cut_off_from_the_api_stops_before_a_standby_may_start(
    control_plane: Any, kube: Kube, tmp_path: Path
) -> None:
    lease = f"skyfleet-cut-{uuid.uuid4().hex[:6]}"
    port = int(control_plane.server.rsplit(":", 1)[1])
    hole = BlackHole(port)
    config = yaml.safe_load(Path(control_plane.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{hole.port}"
    cut_config = tmp_path / "through-the-hole.kubeconfig"
    cut_config.write_text(yaml.safe_dump(config))
    cut_kube = Kube(kube.tools_bin, {**kube.env, "KUBECONFIG": str(cut_config)}, kube.namespace)

    leader = Operator(cut_kube, "e2e-cut", tmp_path / "leader.log", lease)
    standby = Operator(kube, "e2e-cut", tmp_path / "standby.log", lease)
    leader.start()
    try:
        eventually(lambda: "acquired the lease" in leader.log(), timeout=60, what="leader leading")
        standby.start()
        eventually(lambda: "waiting for the lease" in standby.log(), timeout=60, what="standby waiting")
        hole.swallow.set()
        cut = time.monotonic()
        leader_gone = standby_leads = None
        while time.monotonic() - cut < 60 and (leader_gone is None or standby_leads is None):
            assert leader.proc is not None
            if leader_gone is None and leader.proc.poll() is not None:
                leader_gone = time.monotonic() - cut
            if standby_leads is None and "acquired the lease" in standby.log():
                standby_leads = time.monotonic() - cut
            time.sleep(0.1)
        assert leader_gone is not None, leader.log()[-3000:]
        assert standby_leads is not None, standby.log()[-3000:]
        # The leader stopped acting (exited) before the standby took the Lease, not after.
        assert leader_gone < standby_leads, (leader_gone, standby_leads)
        assert "lost the lease" in leader.log()
        assert holder_of(kube, lease)[0] == identity_of(standby)
    finally:
        hole.close()
        leader.kill()
        standby.stop()
