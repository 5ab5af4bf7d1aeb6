"""The real Prometheus the elasticity tests use: it scrapes the load exporter every second, comes back
after a stop on the same port with its data, and never outlives whoever started it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest

from skyfleet.testing.prometheus import LoadExporter, Prometheus, PrometheusError
from skyfleet.testing.tools import repo_root

pytestmark = pytest.mark.connector


def eventually(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_prometheus_scrapes_what_the_test_sets_within_seconds() -> None:
    with LoadExporter() as load, Prometheus(targets=[load.target]) as prom:
        assert prom.url.startswith("http://127.0.0.1:")
        load.set("shop_load", 3.0)
        started = time.monotonic()
        assert prom.wait_for("shop_load", lambda v: v == 3.0, timeout=10) == 3.0
        load.set("shop_load", 7.5)
        assert prom.wait_for("shop_load", lambda v: v == 7.5, timeout=10) == 7.5
        # Scraped every second: two changes seen in well under the default 15 s interval.
        assert time.monotonic() - started < 8
        assert prom.values('up{job="load"}') == [1.0]


def test_labelled_series_are_separate_and_can_be_removed() -> None:
    with LoadExporter() as load, Prometheus(targets=[load.target]) as prom:
        load.set("requests", 1.0, pod="a")
        load.set("requests", 2.0, pod="b")
        prom.wait_for("count(requests)", lambda v: v == 2)
        assert sorted(prom.values("requests")) == [1.0, 2.0]
        load.remove("requests", pod="b")
        # A series that disappears from a scrape is marked stale at once, not after 5 minutes.
        prom.wait_for("count(requests)", lambda v: v == 1)
        with pytest.raises(ValueError, match="labels"):
            load.set("requests", 3.0)


def test_targets_can_change_while_running() -> None:
    with LoadExporter() as first, LoadExporter() as second, Prometheus(targets=[first.target]) as prom:
        second.set("late_load", 4.0)
        prom.set_targets([first.target, second.target])
        assert prom.wait_for("late_load", lambda v: v == 4.0, timeout=10) == 4.0


def test_stop_and_start_keep_port_and_data_and_close_removes_them() -> None:
    with LoadExporter() as load:
        prom = Prometheus(targets=[load.target]).start()
        try:
            load.set("shop_load", 2.0)
            prom.wait_for("shop_load", lambda v: v == 2.0)
            url, state = prom.url, prom.state_dir
            prom.stop()
            with pytest.raises(urllib.error.URLError, match="Connection refused"):
                prom.values("shop_load")
            prom.start()
            assert prom.url == url
            assert prom.values("shop_load") == [2.0]  # the samples from before the stop are still there
        finally:
            prom.close()
        assert not state.exists()
        prom.close()  # idempotent


def test_https_with_a_throwaway_certificate() -> None:
    with Prometheus(tls=True) as prom:
        assert prom.url.startswith("https://127.0.0.1:")
        assert "BEGIN CERTIFICATE" in prom.ca_pem
        assert prom.values("vector(1)") == [1.0]


def test_a_start_that_fails_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "prometheus"
    broken.write_text("#!/bin/sh\necho 'no such flag' >&2\nexit 3\n")
    broken.chmod(0o755)
    prom = Prometheus(binary=broken)
    with pytest.raises(PrometheusError, match="exited with 3") as err:
        prom.start()
    assert "no such flag" in str(err.value)
    prom.close()


def test_prometheus_dies_with_a_killed_parent() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from skyfleet.testing.prometheus import Prometheus
        prom = Prometheus().start()
        print(prom._process.pid, prom.state_dir, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo_root(),
        env={**os.environ, "PYTHONPATH": str(repo_root() / "operator")},
    )
    state = ""
    try:
        assert parent.stdout is not None
        pid, state = parent.stdout.readline().split()
        child = int(pid)
        assert Path(f"/proc/{child}").exists()
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs: only the kernel can stop the child
        parent.wait()
        eventually(lambda: not Path(f"/proc/{child}").exists(), "prometheus gone")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
        if state:
            shutil.rmtree(state, ignore_errors=True)  # the killed parent could not remove its data
