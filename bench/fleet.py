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
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    Api,
    BenchError,
    Kubectl,
    Watch,
    bench_run,
    changed_between,
    ec2_client,
    live_vms,
    median,
    operator,
    rss_kib,
    wait_ready,
)

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.launcher import OperatorProcess
from skyfleet.testing.manifests import deployment as deployment_of
from skyfleet.testing.manifests import ec2_credential, image, node_group

NAMESPACE = "bench"
BURST, RATE = 5, 2.0  # AWS RunInstances request bucket
FLEET, PROBE = "fleet", "probe"
REGIONS = {FLEET: "eu-central-1", PROBE: "us-east-1"}
OBSERVE_PERIOD, RESYNC_PERIOD = 5, 20
WRITE_VERBS = ("POST", "PUT", "PATCH")
SIZE = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}}


def start_operator(plane: ControlPlane, cluster_id: str, log_path: Path) -> OperatorProcess:
    """``skyfleet run`` as users start it, against the benchmark's control plane."""
    process = operator(
        plane, NAMESPACE, cluster_id, log_path, observe_period=OBSERVE_PERIOD, resync_period=RESYNC_PERIOD
    )
    process.start()
    return process


# -- manifests -------------------------------------------------------------------------------------


def credential(name: str, endpoint: str, limits: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ec2_credential(name, REGIONS[name], endpoint, canary="bench-secret-value", limits=limits)


def deployment(name: str, replicas: int, image_name: str = "bench", credential: str | None = None) -> dict[str, Any]:
    group = node_group("n", replicas=replicas, image=image_name, size=SIZE, credential=credential or name)
    return deployment_of(name, group)


IMAGE = image("bench")


# -- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    kubectl: float  # kubectl patch, start to exit
    created: float  # patch accepted -> new Instance exists
    running: float  # patch accepted -> new Instance Running


class Bench:
    def __init__(self, plane: ControlPlane, ec2_url: str, operator: OperatorProcess, cluster_id: str) -> None:
        self.plane = plane
        self.api = Api(plane, NAMESPACE)
        self.kubectl = Kubectl(plane, NAMESPACE)
        self.ec2 = {name: ec2_client(ec2_url, region) for name, region in REGIONS.items()}
        self.operator = operator
        self.cluster_id = cluster_id
        self.watch = Watch(self.api, "instances")
        self.deployments = Watch(self.api, "deployments")
        self.replicas = {FLEET: 0, PROBE: 0}

    def apply(self, *docs: dict[str, Any]) -> None:
        self.kubectl.apply(*docs)

    def deployment(self, name: str) -> dict[str, Any] | None:
        items = self.api.items("deployments", f"?fieldSelector=metadata.name%3D{name}")
        return items[0] if items else None

    def alive(self) -> None:
        """Fails when a watch or the operator has died."""
        self.watch.check()
        self.deployments.check()
        _ = self.operator.pid

    def wait_ready(self, name: str, timeout: float, progress: bool = False) -> float:
        """Seconds until Deployment ``name`` is Ready with all its replicas (polled every 0.25 s)."""

        def report(elapsed: float, missing: set[str], objects: dict[str, dict[str, Any]]) -> None:
            status = objects.get(name, {}).get("status") or {}
            print(
                f"  ... {elapsed:5.0f} s: {status.get('replicas')} Instances, {status.get('readyReplicas')} ready",
                flush=True,
            )

        return wait_ready(
            self.api,
            self.replicas,
            [name],
            timeout,
            alive=self.alive,
            poll=0.25,
            progress=report if progress else None,
            progress_every=15,
        )

    def scale(self, name: str, replicas: int) -> Sample:
        """Patch replicas to ``replicas`` (one more than now); time the new Instance and its VM.

        Both ends are watch events as they reach the benchmark (the patched Deployment, the new
        Instance), so the API server's delivery delay cancels and kubectl's start-up is left out.
        """
        generation = int((self.deployment(name) or {})["metadata"]["generation"])
        mark, deployments_mark = self.watch.mark(), self.deployments.mark()
        started = time.monotonic()
        self.kubectl.patch_replicas(name, replicas)
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
        return self.api.resource_versions("instances", "deployments")

    def vms(self, *names: str) -> int:
        return sum(len(live_vms(self.ec2[name], self.cluster_id)) for name in names or REGIONS)

    def writes(self) -> Counter[tuple[str, str, str]]:
        """apiserver_request_total for skyfleet.io writes, by (resource, verb, code)."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for labels, value in self.api.requests_total():
            if labels.get("group") == "skyfleet.io" and labels.get("verb") in WRITE_VERBS:
                counts[labels["resource"], labels["verb"], labels["code"]] += value
        return counts


def writes_delta(after: Counter[tuple[str, str, str]], before: Counter[tuple[str, str, str]]) -> dict[str, int]:
    """Successful writes by resource (``instances``, ``deployments``, ...), failed ones by resource, verb and code."""
    out: Counter[str] = Counter()
    for key, value in (after - before).items():
        resource, verb, code = key
        out[resource if code.startswith("2") else f"{resource} {verb} {code}"] += value
    return dict(out)


def run(args: argparse.Namespace, plane: ControlPlane, emulator: EmulatorProcess, workdir: Path) -> None:  # noqa: PLR0915
    count = args.count
    cluster_id = f"bench-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as stack:
        fleet_proxy = stack.enter_context(FaultProxy(emulator.url))
        probe_proxy = stack.enter_context(FaultProxy(emulator.url))
        fleet_proxy.faults.latency = probe_proxy.faults.latency = args.latency
        fleet_proxy.throttle("RunInstances", burst=BURST, rate=RATE)

        plane.kubectl("create", "namespace", NAMESPACE)
        operator = start_operator(plane, cluster_id, workdir / "operator.log")
        stack.callback(operator.stop)
        bench = Bench(plane, emulator.url, operator, cluster_id)
        try:
            limits = {"requestsPerSecond": RATE, "burst": BURST, "maxConcurrency": args.concurrency}
            bench.apply(
                *credential(FLEET, fleet_proxy.endpoint, limits), *credential(PROBE, probe_proxy.endpoint, None), IMAGE
            )
            bench.kubectl.wait_credentials()
            for watch in (bench.watch, bench.deployments):
                watch.start()
                stack.callback(watch.stop)

            # At rest: the probe alone.
            bench.replicas[PROBE] = 1
            bench.apply(deployment(PROBE, 1))
            bench.wait_ready(PROBE, 120)
            rest = [bench.scale(PROBE, bench.replicas[PROBE] + 1) for _ in range(args.samples)]
            time.sleep(OBSERVE_PERIOD)
            rss_before = rss_kib(operator.pid)
            print(f"probe at rest: created {[round(s.created, 2) for s in rest]} s; operator RSS {rss_before} KiB")

            # Provisioning the fleet.
            writes_before = bench.writes()
            proxy_before = Counter(fleet_proxy.stats)
            mark = bench.watch.mark()
            bench.replicas[FLEET] = count
            print(f"applying {FLEET} with {count} replicas", flush=True)
            started = time.monotonic()
            bench.apply(deployment(FLEET, count))
            bound = max(0.0, (count - BURST) / RATE)
            elapsed = bench.wait_ready(FLEET, max(300.0, 3 * bound + 120), progress=True)
            writes = writes_delta(bench.writes(), writes_before)
            proxy = Counter(fleet_proxy.stats) - proxy_before
            events = [e for e in bench.watch.since(mark) if e.deployment == FLEET]
            running_at: dict[str, float] = {}
            for e in events:
                if e.phase == "Running":
                    running_at.setdefault(e.name, e.at - started)
            to_running = sorted(running_at.values())
            rss_ready = rss_kib(operator.pid)
            vms = bench.vms(FLEET)
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
            quiet_writes_before = bench.writes()
            quiet_mark = bench.watch.mark()
            versions = bench.resource_versions()
            time.sleep(args.quiet)
            after = bench.resource_versions()
            quiet_writes = writes_delta(bench.writes(), quiet_writes_before)
            changed = changed_between(versions, after)
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
                while bench.api.items("instances") or bench.vms():
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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=300, help="replicas of the big Deployment")
    parser.add_argument("--concurrency", type=int, default=10, help="the fleet credential's maxConcurrency")
    parser.add_argument("--samples", type=int, default=3, help="scale-ups per reaction measurement")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds of the converged-fleet window")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the proxies add to every request")
    parser.add_argument("--keep", action="store_true", help="skip clean-up; keep everything up until Ctrl-C")
    args = parser.parse_args()
    with bench_run("fleet") as (plane, workdir), contextlib.ExitStack() as stack:
        emulator = EmulatorProcess()
        stack.callback(emulator.stop)
        run(args, plane, emulator, workdir)


if __name__ == "__main__":
    main()
