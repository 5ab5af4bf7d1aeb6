"""Benchmark: the operator at fleet size, measured side by side in one run.

One local control plane (etcd, kube-apiserver, kube-controller-manager), the moto EC2 emulator
in its own process, and ``skyfleet run`` as a subprocess, started as users start it. Two
CloudCredentials reach the emulator through fault proxies:

* ``fleet`` (eu-central-1): the proxy enforces AWS's RunInstances request bucket (burst 5,
  2/s, about 120 launches/min) and the credential's ``limits`` match it;
* ``probe`` (us-east-1): no throttling, default limits.

Measured:

1. provisioning: a Deployment of ``--count`` replicas on ``fleet`` from apply to Ready, against
   the cloud's bound (count - burst) / rate, with the proxy's request counts and the API server's
   write counters (``apiserver_request_total``) per Instance;
2. memory: the operator's VmRSS before the big Deployment exists and once it is Ready;
3. reaction: ``kubectl patch`` of replicas +1 until the new Instance exists (and until it runs),
   for a one-replica ``probe`` Deployment before the fleet exists (at rest), and for both
   Deployments with the fleet present; then ``--quiet`` seconds of a converged fleet, counting
   objects whose resourceVersion changed;
4. clean-up: both Deployments deleted, every VM gone (skipped with ``--keep``, which instead
   leaves everything running until Ctrl-C). Nothing keeps running after the benchmark ends.

Run:  .venv/bin/python bench/fleet.py [--count 300] [--samples 3] [--quiet 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import boto3  # type: ignore[import-untyped]

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
GROUP_PATH = f"/apis/skyfleet.io/v1alpha1/namespaces/{NAMESPACE}"
AMI = "ami-785db401"
BURST, RATE = 5, 2.0  # AWS RunInstances request bucket
FLEET, PROBE = "fleet", "probe"
REGIONS = {FLEET: "eu-central-1", PROBE: "us-east-1"}
OBSERVE_PERIOD, RESYNC_PERIOD = 5, 20
WRITE_VERBS = ("POST", "PUT", "PATCH")


class BenchError(RuntimeError):
    """Something the benchmark waited for did not happen."""


def _stop(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


# -- the API server, read directly (kubectl would cost a process per poll) -------------------------


class Api:
    """Admin GETs and watches against the control plane, with the certificates it wrote."""

    def __init__(self, plane: ControlPlane) -> None:
        pki = plane.state_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(pki / "admin.crt", pki / "admin.key")
        self.server = plane.server
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )

    def open(self, path: str, timeout: float = 30.0) -> Any:
        return self.opener.open(self.server + path, timeout=timeout)

    def get(self, path: str) -> Any:
        with self.open(path) as response:
            return json.load(response)

    def writes(self) -> Counter[tuple[str, str, str]]:
        """apiserver_request_total for skyfleet.io writes, by (resource, verb, code)."""
        with self.open("/metrics") as response:
            text = response.read().decode()
        counts: Counter[tuple[str, str, str]] = Counter()
        for match in re.finditer(r"^apiserver_request_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("group") == "skyfleet.io" and labels.get("verb") in WRITE_VERBS:
                key = (labels["resource"], labels["verb"], labels["code"])
                counts[key] += int(float(match.group(2)))
        return counts


@dataclass(frozen=True)
class Event:
    at: float
    type: str
    name: str
    deployment: str
    phase: str | None
    resource_version: str
    generation: int


@dataclass
class Watch:
    """Every watch event of one skyfleet.io kind in the namespace, timestamped as it arrives."""

    api: Api
    plural: str
    events: list[Event] = field(default_factory=list)
    error: BaseException | None = None
    stopping: bool = False
    reconnects: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        listing = self.api.get(f"{GROUP_PATH}/{self.plural}")
        version: str = listing["metadata"]["resourceVersion"]
        threading.Thread(target=self._run, args=(version,), name=f"watch-{self.plural}", daemon=True).start()

    def _run(self, version: str) -> None:
        """Follow the watch, resuming from the last resourceVersion seen when the server ends it
        (it closes watchers it finds slow, which happens while a fleet is being created)."""
        failures = 0
        while not self.stopping and self.error is None:
            path = f"{GROUP_PATH}/{self.plural}?watch=1&resourceVersion={version}&timeoutSeconds=3600"
            try:
                with self.api.open(path, timeout=3600) as response:
                    for line in response:
                        version = self._record(json.loads(line)) or version
                        failures = 0
            except (OSError, ValueError) as exc:
                failures += 1
                if failures >= 5 and not self.stopping:
                    self.error = exc
            self.reconnects += 1
        with self._cond:
            self._cond.notify_all()

    def _record(self, event: dict[str, Any]) -> str | None:
        obj = event["object"]
        if event["type"] == "ERROR":  # 410 Gone: too far behind to resume
            self.error = BenchError(f"the {self.plural} watch failed: {obj.get('message')}")
            return None
        if event["type"] == "BOOKMARK":
            return str(obj["metadata"]["resourceVersion"])
        meta = obj.get("metadata", {})
        item = Event(
            at=time.monotonic(),
            type=event["type"],
            name=meta.get("name", ""),
            deployment=(meta.get("labels") or {}).get("skyfleet.io/deployment", ""),
            phase=(obj.get("status") or {}).get("phase"),
            resource_version=meta.get("resourceVersion", ""),
            generation=int(meta.get("generation", 0)),
        )
        with self._cond:
            self.events.append(item)
            self._cond.notify_all()
        return item.resource_version

    def mark(self) -> int:
        with self._cond:
            return len(self.events)

    def since(self, mark: int) -> list[Event]:
        with self._cond:
            return self.events[mark:]

    def wait(self, match: Callable[[Event], bool], since: int, timeout: float, what: str) -> Event:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[since:]:
                    if match(event):
                        return event
                if self.error is not None:
                    raise BenchError(f"waiting for {what}: {self.error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
                self._cond.wait(remaining)


# -- the cloud ----------------------------------------------------------------------------------


class Emulator(EmulatorProcess):
    """The EC2 emulator in its own process, so it does not share the benchmark's GIL."""

    def running_vms(self, region: str, cluster_id: str) -> int:
        client = boto3.client(
            "ec2",
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key="not-a-secret",  # noqa: S106 - the emulator accepts any key
        )
        pages = client.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:skyfleet.io/cluster-id", "Values": [cluster_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])


# -- the operator --------------------------------------------------------------------------------


class Operator:
    """``skyfleet run`` as users start it, against the benchmark's control plane."""

    def __init__(self, plane: ControlPlane, cluster_id: str, log_path: Path) -> None:
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "skyfleet.cli",
            "run",
            "--namespace",
            NAMESPACE,
            "--cluster-id",
            cluster_id,
            "--metrics-port",
            "0",
            "--liveness",
            "",
            "--observe-period",
            str(OBSERVE_PERIOD),
            "--resync-period",
            str(RESYNC_PERIOD),
            "--lease-namespace",
            "default",
            "--allow-endpoint",
            "127.0.0.1",  # the emulator listens on loopback
        ]
        env = {**os.environ, **plane.env, "PYTHONWARNINGS": "ignore::Warning"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
            )

    @property
    def pid(self) -> int:
        if self.process.poll() is not None:
            raise BenchError(f"the operator exited with {self.process.returncode}\n{self.tail()}")
        return self.process.pid

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        _stop(self.process)


# -- manifests -------------------------------------------------------------------------------------


def credential(name: str, endpoint: str, limits: dict[str, Any] | None) -> list[dict[str, Any]]:
    spec: dict[str, Any] = {
        "provider": "ec2",
        "region": REGIONS[name],
        "secretRef": {"name": f"{name}-keys"},
        "endpoint": {"url": endpoint},
    }
    if limits:
        spec["limits"] = limits
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-keys"},
            "stringData": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "bench-secret-value"},
        },
        {"apiVersion": "skyfleet.io/v1alpha1", "kind": "CloudCredential", "metadata": {"name": name}, "spec": spec},
    ]


def deployment(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "nodeGroups": [
                {
                    "name": "n",
                    "replicas": replicas,
                    "imageRef": "bench",
                    "size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}},
                    "placement": {"targets": [{"credential": name}]},
                }
            ]
        },
    }


IMAGE = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Image",
    "metadata": {"name": "bench"},
    "spec": {"clouds": [{"provider": "ec2", "id": AMI}]},
}


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    kubectl: float  # kubectl patch, start to exit
    created: float  # patch accepted -> new Instance exists
    running: float  # patch accepted -> new Instance Running


class Bench:
    def __init__(self, plane: ControlPlane, emulator: Emulator, operator: Operator, cluster_id: str) -> None:
        self.plane = plane
        self.api = Api(plane)
        self.emulator = emulator
        self.operator = operator
        self.cluster_id = cluster_id
        self.watch = Watch(self.api, "instances")
        self.deployments = Watch(self.api, "deployments")
        self.replicas = {FLEET: 0, PROBE: 0}

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.plane.kubectl("-n", NAMESPACE, *args, input=input, timeout=180).stdout

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))

    def deployment(self, name: str) -> dict[str, Any] | None:
        items: list[dict[str, Any]] = self.api.get(f"{GROUP_PATH}/deployments?fieldSelector=metadata.name%3D{name}")[
            "items"
        ]
        return items[0] if items else None

    def ready(self, name: str) -> bool:
        obj = self.deployment(name)
        status = (obj or {}).get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return conditions.get("Ready") == "True" and status.get("readyReplicas") == self.replicas[name]

    def wait_ready(self, name: str, timeout: float, progress: bool = False) -> float:
        """Seconds until Deployment ``name`` is Ready with all its replicas (polled every 0.25 s)."""
        started = time.monotonic()
        reported = started
        while not self.ready(name):
            now = time.monotonic()
            for watch in (self.watch, self.deployments):
                if watch.error is not None:
                    raise BenchError(f"the {watch.plural} watch failed: {watch.error}")
            _ = self.operator.pid  # fails when the operator died
            if now - started > timeout:
                raise BenchError(f"{name} not Ready after {timeout:.0f} s: {self.deployment(name)!r}")
            if progress and now - reported >= 15:
                status = (self.deployment(name) or {}).get("status") or {}
                print(
                    f"  ... {now - started:5.0f} s: {status.get('replicas')} Instances, "
                    f"{status.get('readyReplicas')} ready",
                    flush=True,
                )
                reported = now
            time.sleep(0.25)
        return time.monotonic() - started

    def scale(self, name: str, replicas: int) -> Sample:
        """Patch replicas to ``replicas`` (one more than now); time the new Instance and its VM.

        Both ends are watch events as they reach the benchmark (the patched Deployment, the new
        Instance), so the API server's delivery delay cancels and kubectl's start-up is left out.
        """
        generation = int((self.deployment(name) or {})["metadata"]["generation"])
        mark, deployments_mark = self.watch.mark(), self.deployments.mark()
        started = time.monotonic()
        patch = [{"op": "replace", "path": "/spec/nodeGroups/0/replicas", "value": replicas}]
        self.kubectl("patch", "deployments.skyfleet.io", name, "--type=json", "-p", json.dumps(patch))
        finished = time.monotonic()
        self.replicas[name] = replicas
        patched = self.deployments.wait(
            lambda e: e.name == name and e.generation > generation, deployments_mark, 30, f"the patch of {name}"
        )
        accepted = patched.at
        added = self.watch.wait(
            lambda e: e.type == "ADDED" and e.deployment == name, mark, 120, f"a new Instance of {name}"
        )
        running = self.watch.wait(
            lambda e: e.name == added.name and e.phase == "Running", mark, 120, f"{added.name} Running"
        )
        self.wait_ready(name, 120)
        return Sample(kubectl=finished - started, created=added.at - accepted, running=running.at - accepted)

    def resource_versions(self) -> dict[str, str]:
        versions: dict[str, str] = {}
        for plural in ("instances", "deployments"):
            for obj in self.api.get(f"{GROUP_PATH}/{plural}")["items"]:
                versions[f"{plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        return versions

    def vms(self) -> int:
        return sum(self.emulator.running_vms(region, self.cluster_id) for region in REGIONS.values())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def writes_delta(after: Counter[tuple[str, str, str]], before: Counter[tuple[str, str, str]]) -> dict[str, int]:
    """Successful writes by resource (``instances``, ``deployments``, ...), failed ones by resource, verb and code."""
    out: Counter[str] = Counter()
    for key, value in (after - before).items():
        resource, verb, code = key
        out[resource if code.startswith("2") else f"{resource} {verb} {code}"] += value
    return dict(out)


def run(args: argparse.Namespace, plane: ControlPlane, emulator: Emulator, workdir: Path) -> None:  # noqa: PLR0915
    count = args.count
    cluster_id = f"bench-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as stack:
        fleet_proxy = stack.enter_context(FaultProxy(emulator.url))
        probe_proxy = stack.enter_context(FaultProxy(emulator.url))
        fleet_proxy.faults.latency = probe_proxy.faults.latency = args.latency
        fleet_proxy.throttle("RunInstances", burst=BURST, rate=RATE)

        plane.kubectl("create", "namespace", NAMESPACE)
        operator = Operator(plane, cluster_id, workdir / "operator.log")
        stack.callback(operator.stop)
        bench = Bench(plane, emulator, operator, cluster_id)
        try:
            limits = {"requestsPerSecond": RATE, "burst": BURST, "maxConcurrency": args.concurrency}
            bench.apply(
                *credential(FLEET, fleet_proxy.endpoint, limits), *credential(PROBE, probe_proxy.endpoint, None), IMAGE
            )
            bench.kubectl("wait", "--for=condition=Ready", "cloudcredentials.skyfleet.io", "--all", "--timeout=120s")
            for watch in (bench.watch, bench.deployments):
                watch.start()
                stack.callback(setattr, watch, "stopping", True)

            # At rest: the probe alone.
            bench.replicas[PROBE] = 1
            bench.apply(deployment(PROBE, 1))
            bench.wait_ready(PROBE, 120)
            rest = [bench.scale(PROBE, bench.replicas[PROBE] + 1) for _ in range(args.samples)]
            time.sleep(OBSERVE_PERIOD)
            rss_before = rss_kib(operator.pid)
            print(f"probe at rest: created {[round(s.created, 2) for s in rest]} s; operator RSS {rss_before} KiB")

            # Provisioning the fleet.
            writes_before = bench.api.writes()
            proxy_before = Counter(fleet_proxy.stats)
            mark = bench.watch.mark()
            bench.replicas[FLEET] = count
            print(f"applying {FLEET} with {count} replicas", flush=True)
            started = time.monotonic()
            bench.apply(deployment(FLEET, count))
            bound = max(0.0, (count - BURST) / RATE)
            elapsed = bench.wait_ready(FLEET, max(300.0, 3 * bound + 120), progress=True)
            writes = writes_delta(bench.api.writes(), writes_before)
            proxy = Counter(fleet_proxy.stats) - proxy_before
            events = [e for e in bench.watch.since(mark) if e.deployment == FLEET]
            running_at: dict[str, float] = {}
            for e in events:
                if e.phase == "Running":
                    running_at.setdefault(e.name, e.at - started)
            to_running = sorted(running_at.values())
            rss_ready = rss_kib(operator.pid)
            vms = bench.emulator.running_vms(REGIONS[FLEET], cluster_id)
            print(
                f"{FLEET} Ready in {elapsed:.1f} s ({vms} VMs); operator RSS {rss_ready} KiB; "
                f"watch reconnects {bench.watch.reconnects}",
                flush=True,
            )

            # Reaction with the fleet present, alternating.
            at_size: list[Sample] = []
            probe_at_size: list[Sample] = []
            for _ in range(args.samples):
                at_size.append(bench.scale(FLEET, bench.replicas[FLEET] + 1))
                probe_at_size.append(bench.scale(PROBE, bench.replicas[PROBE] + 1))
            print(
                f"reaction: {FLEET} {[round(s.created, 2) for s in at_size]} s, "
                f"{PROBE} {[round(s.created, 2) for s in probe_at_size]} s",
                flush=True,
            )

            # A converged fleet: nothing written.
            time.sleep(OBSERVE_PERIOD)
            quiet_writes_before = bench.api.writes()
            quiet_mark = bench.watch.mark()
            versions = bench.resource_versions()
            time.sleep(args.quiet)
            after = bench.resource_versions()
            quiet_writes = writes_delta(bench.api.writes(), quiet_writes_before)
            changed = sorted(k for k, v in versions.items() if after.get(k) != v)
            changed_fleet = [k for k in changed if k == f"deployments/{FLEET}" or k.startswith(f"instances/{FLEET}-")]
            quiet_events = len(bench.watch.since(quiet_mark))
            rss_quiet = rss_kib(operator.pid)

            cleanup = float("nan")
            if not args.keep:
                print("deleting both Deployments", flush=True)
                delete_mark = bench.watch.mark()
                delete_before = Counter(fleet_proxy.stats)
                started = time.monotonic()
                bench.kubectl("delete", "deployments.skyfleet.io", "--all", "--wait=false")
                total = bench.replicas[FLEET] + bench.replicas[PROBE]
                deadline = started + max(300.0, 3 * total / RATE + 120)
                while bench.api.get(f"{GROUP_PATH}/instances")["items"] or bench.vms():
                    _ = operator.pid
                    if time.monotonic() > deadline:
                        raise BenchError(f"Instances or VMs left {deadline - started:.0f} s after deleting")
                    time.sleep(1)
                cleanup = time.monotonic() - started
                gone = sorted(e.at - started for e in bench.watch.since(delete_mark) if e.type == "DELETED")
                delete_proxy = Counter(fleet_proxy.stats) - delete_before
                print(
                    f"clean-up: {len(gone)} Instances deleted, first after {gone[0]:.1f} s, half after "
                    f"{gone[len(gone) // 2]:.1f} s, last after {gone[-1]:.1f} s; {FLEET} cloud requests: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(delete_proxy.items()) if k.startswith("requests:")),
                    flush=True,
                )
        except BaseException:
            print(f"--- operator log (tail) ---\n{operator.tail()}", file=sys.stderr)
            raise

        report(
            args,
            elapsed=elapsed,
            bound=bound,
            proxy=proxy,
            writes=writes,
            events=len(events),
            to_running=to_running,
            rss=(rss_before, rss_ready, rss_quiet),
            rest=rest,
            at_size=at_size,
            probe_at_size=probe_at_size,
            changed=changed,
            changed_fleet=len(changed_fleet),
            watched=len(versions),
            quiet_writes=quiet_writes,
            quiet_events=quiet_events,
            cleanup=cleanup,
        )
        if args.keep:
            print(f"\n--keep: running until Ctrl-C; export KUBECONFIG={plane.kubeconfig}", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()


def report(
    args: argparse.Namespace,
    *,
    elapsed: float,
    bound: float,
    proxy: Counter[str],
    writes: dict[str, int],
    events: int,
    to_running: list[float],
    rss: tuple[int, int, int],
    rest: list[Sample],
    at_size: list[Sample],
    probe_at_size: list[Sample],
    changed: list[str],
    changed_fleet: int,
    watched: int,
    quiet_writes: dict[str, int],
    quiet_events: int,
    cleanup: float,
) -> None:
    n = args.count
    per_min = n / elapsed * 60
    bound_per_min = n / bound * 60 if bound else float("inf")
    requests = proxy["requests"]
    actions = ", ".join(
        f"{k.split(':', 1)[1]} {v}"
        for k, v in sorted(proxy.items(), key=lambda kv: -kv[1])
        if k.startswith("requests:")
    )
    rss_before, rss_ready, rss_quiet = rss
    rest_c, size_c, probe_c = (median([s.created for s in xs]) for xs in (rest, at_size, probe_at_size))
    rest_r, size_r, probe_r = (median([s.running for s in xs]) for xs in (rest, at_size, probe_at_size))
    kubectl = median([s.kubectl for s in rest + at_size + probe_at_size])
    rows = [
        ("provisioning: apply -> Ready", f"{elapsed:.1f} s", f"{per_min:.0f} VMs/min"),
        (f"bound: ({n} - {BURST}) / {RATE:g}", f"{bound:.1f} s", f"{bound_per_min:.0f} VMs/min"),
        (
            "apply -> each fleet Instance Running",
            f"{to_running[len(to_running) // 2]:.1f} s",
            f"median; first {to_running[0]:.1f} s, last {to_running[-1]:.1f} s; "
            f"{sum(t <= elapsed / 2 for t in to_running)} Running at half time",
        ),
        ("throttled answers (RunInstances bucket)", str(proxy["throttled"]), ""),
        ("cloud requests", str(requests), f"{requests / n:.2f} per VM ({actions})"),
        (
            "API writes to Instances (POST/PUT/PATCH, 2xx)",
            str(writes.get("instances", 0)),
            f"{writes.get('instances', 0) / n:.2f} per Instance; {events / n:.2f} watch events per Instance",
        ),
        ("API writes to Deployments (2xx)", str(writes.get("deployments", 0)), ""),
        (
            "failed API writes (4xx/5xx)",
            str(sum(v for k, v in writes.items() if " " in k)),
            ", ".join(f"{k}: {v}" for k, v in writes.items() if " " in k),
        ),
        ("operator RSS before the fleet", f"{rss_before / 1024:.1f} MiB", ""),
        (
            f"operator RSS with {n} Instances Ready",
            f"{rss_ready / 1024:.1f} MiB",
            f"{(rss_ready - rss_before) / n:.1f} KiB per Instance",
        ),
        ("operator RSS after the quiet window", f"{rss_quiet / 1024:.1f} MiB", ""),
        (f"reaction at rest: {PROBE} +1, no fleet", f"{rest_c:.2f} s", f"Running after {rest_r:.2f} s"),
        (f"reaction at size: {PROBE} +1, fleet present", f"{probe_c:.2f} s", f"Running after {probe_r:.2f} s"),
        (f"reaction at size: {FLEET} +1 ({n} -> {n + 1}, ...)", f"{size_c:.2f} s", f"Running after {size_r:.2f} s"),
        ("kubectl patch itself", f"{kubectl:.2f} s", "(not included above)"),
        (
            f"converged, {args.quiet:g} s: objects changed",
            f"{len(changed)} of {watched}",
            f"{changed_fleet} of the fleet; {quiet_events} Instance watch events; writes {quiet_writes or 0}",
        ),
        ("clean-up: delete -> every VM gone", "skipped (--keep)" if args.keep else f"{cleanup:.1f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nFleet of {n} on a 2/s burst-5 RunInstances bucket; reaction medians of {args.samples} samples\n")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {note}")
    print()
    print(f"bound / achieved time        = {bound / elapsed:.2f}")
    print(f"achieved / bound rate        = {per_min / bound_per_min:.2f}")
    print(f"reaction fleet / probe       = {size_c / probe_c:.2f}  (both with the fleet present)")
    print(f"reaction probe size / rest   = {probe_c / rest_c:.2f}")
    if changed:
        print(f"changed in the quiet window: {', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=300, help="replicas of the big Deployment")
    parser.add_argument("--concurrency", type=int, default=10, help="the fleet credential's maxConcurrency")
    parser.add_argument("--samples", type=int, default=3, help="scale-ups per reaction measurement")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds of the converged-fleet window")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the proxies add to every request")
    parser.add_argument("--keep", action="store_true", help="skip clean-up; keep everything up until Ctrl-C")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a terminated benchmark stops what it started

    workdir = Path(tempfile.mkdtemp(prefix="skyfleet-bench-fleet-"))
    emulator: Emulator | None = None
    try:
        with ControlPlane(crds=[ROOT / "crds"]) as plane:
            emulator = Emulator()
            run(args, plane, emulator, workdir)
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
