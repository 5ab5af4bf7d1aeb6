"""``skyfleet run`` as a subprocess, started the way users start it: one launcher for the
end-to-end tests, the benchmarks and the demo.

An :class:`OperatorConfig` says what differs between callers (flags, environment, Lease, log
file); an :class:`OperatorProcess` starts the operator from it, tells when it has logged its
start, keeps its output in the log file, and ends it: politely (SIGTERM, then SIGKILL after a
timeout) or as a crash (SIGKILL at once). Test-only, like the rest of ``skyfleet.testing``; it
needs nothing beyond the standard library.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skyfleet.testing.processes import die_with_parent

__all__ = ["IMAGE_ENV", "START_LINE", "OperatorConfig", "OperatorExited", "OperatorNotStopped", "OperatorProcess"]

# What the operator logs once its settings are read and kopf is about to run (operator.py).
START_LINE = "skyfleet operator starting"
# The environment the operator's image sets that changes how the process runs (Dockerfile
# ``ENV``; a unit test keeps the two equal), so that what the benchmarks and end-to-end tests
# measure is what ships: glibc with two malloc arenas, not one per thread up to 8 per core.
IMAGE_ENV: Mapping[str, str] = {"MALLOC_ARENA_MAX": "2"}
_SNAPSHOT = re.compile(r"tracemalloc snapshot written to (\S+)")


class OperatorExited(RuntimeError):
    """The operator was expected to run but has exited."""


class OperatorNotStopped(AssertionError):
    """The operator ignored SIGTERM for longer than it may (then it was SIGKILLed)."""


@dataclass(frozen=True)
class OperatorConfig:
    """How to start one operator. Flags are only passed when set, so an unset one takes the
    operator's own default (or the environment's ``SKYFLEET_*``)."""

    log_path: Path
    # The environment the operator inherits (a kubeconfig in KUBECONFIG, at least); None: ours.
    env: Mapping[str, str] | None = None
    # IMAGE_ENV under the inherited environment (a variable set there wins, e.g.
    # MALLOC_ARENA_MAX=16 for glibc's default on two cores); False: the inherited one alone.
    image_env: bool = True
    namespace: str | None = None
    # None: started without one, as an installation that relies on the derived default.
    cluster_id: str | None = None
    metrics_port: int | None = 0
    liveness: str | None = ""
    observe_period: float | None = None
    resync_period: float | None = None
    # Not the served namespace: deleting that namespace must not take the Lease with it.
    lease_namespace: str | None = "default"
    lease_name: str | None = None
    leader_election: bool = True
    # The emulators and fault proxies listen on loopback, which credentials may not reach unlisted.
    allow_endpoint: str | None = "127.0.0.1"
    extra_args: Sequence[str] = ()
    # SKYFLEET_* (or any) variables on top of ``env``.
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Frames PYTHONTRACEMALLOC keeps (0: tracing off); SIGUSR2 then writes a snapshot.
    tracemalloc: int = 0
    # SIGKILL the operator when the starting thread dies (benchmarks), so none outlives a run.
    die_with_parent: bool = False
    # Its own process group (the demo), so a terminal's Ctrl-C reaches only the demo.
    new_session: bool = False
    cwd: Path | None = None

    def command(self, *extra: str) -> list[str]:
        """The command line, ``extra`` last (argparse keeps the last of a repeated flag)."""

        def flag(name: str, value: object) -> list[str]:
            return [] if value is None else [name, f"{value:g}" if isinstance(value, float) else str(value)]

        return [
            sys.executable,
            "-m",
            "skyfleet.cli",
            "run",
            *flag("--namespace", self.namespace),
            *flag("--cluster-id", self.cluster_id),
            *flag("--metrics-port", self.metrics_port),
            *flag("--liveness", self.liveness),
            *flag("--observe-period", self.observe_period),
            *flag("--resync-period", self.resync_period),
            *flag("--lease-namespace", self.lease_namespace),
            *([] if self.leader_election else ["--no-leader-election"]),
            *flag("--allow-endpoint", self.allow_endpoint),
            *self.extra_args,
            *extra,
        ]

    def environment(self) -> dict[str, str]:
        inherited = os.environ if self.env is None else self.env
        env = {**(IMAGE_ENV if self.image_env else {}), **inherited, "PYTHONWARNINGS": "ignore::Warning"}
        if self.lease_name is not None:
            env["SKYFLEET_LEASE_NAME"] = self.lease_name
        if self.tracemalloc:
            env["PYTHONTRACEMALLOC"] = str(self.tracemalloc)  # see skyfleet/handlers/memtrace.py
        env.update(self.extra_env)
        return env


class OperatorProcess:
    """One operator at a time, started (and restarted) from one config; its output appended to
    ``config.log_path``."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0  # time.monotonic() of the last start

    @property
    def log_path(self) -> Path:
        return self.config.log_path

    def start(self, *extra: str) -> None:
        """Start the operator; ``extra`` flags follow (and so override) the config's."""
        config = self.config
        self.started = time.monotonic()
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                config.command(*extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=config.environment(),
                cwd=config.cwd,
                start_new_session=config.new_session,
                # Only prctl and getppid run between fork and exec.
                preexec_fn=die_with_parent() if config.die_with_parent else None,  # noqa: PLW1509
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited; None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    @property
    def pid(self) -> int:
        """The running operator's pid; :class:`OperatorExited` (with the log's tail) otherwise."""
        if self.process is None:
            raise OperatorExited("the operator was never started")
        if self.process.poll() is not None:
            raise OperatorExited(f"the operator exited with {self.process.returncode}\n{self.tail()}")
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def starts(self) -> int:
        """How many operators have logged their start into this log so far."""
        return self.log().count(START_LINE)

    def wait_started(self, starts_before: int, timeout: float = 60.0) -> bool:
        """Until the log holds more than ``starts_before`` start lines (False on timeout): a kill
        after it lands in the operator's work, not in its imports."""
        deadline = time.monotonic() + timeout
        while self.starts() <= starts_before:
            if time.monotonic() >= deadline or not self.running:
                return False
            time.sleep(0.1)
        return True

    def start_and_wait(self, *extra: str, timeout: float = 60.0) -> bool:
        before = self.starts()
        self.start(*extra)
        return self.wait_started(before, timeout)

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(sig)

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL: no cleanup, no Lease release, exactly a crash."""
        if self.process is not None and self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 20.0, *, strict: bool = False) -> int | None:
        """SIGTERM, and SIGKILL if it has not exited after ``timeout`` seconds (then, when
        ``strict``, :class:`OperatorNotStopped`). The exit code; None if never started."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                if strict:
                    raise OperatorNotStopped(f"operator did not stop within {timeout:g}s on SIGTERM") from None
        return self.process.returncode

    def _signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        if self.config.new_session:
            os.killpg(self.process.pid, sig)  # whatever it started goes with it
        else:
            self.process.send_signal(sig)

    def snapshot(self, timeout: float = 300.0) -> Path:
        """Ask for a tracemalloc snapshot (SIGUSR2; needs ``tracemalloc``) and wait until it is written."""
        before = len(_SNAPSHOT.findall(self.log()))
        self.send(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _SNAPSHOT.findall(self.log())
            if len(found) > before:
                return Path(found[-1])
            time.sleep(0.5)
        raise OperatorExited(f"no tracemalloc snapshot within {timeout:g} s")

    def __enter__(self) -> OperatorProcess:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
