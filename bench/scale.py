"""Benchmark: the operator at N Instances, against fastec2 in its own process.

One local control plane, ``skyfleet.testing.fastec2`` in a process of its own (``pending_delay``
1 s), and ``skyfleet run`` as a subprocess (no Lease, so a restarted operator starts at once).
``--credentials`` CloudCredentials, each in its own region, reach the emulator through a fault
proxy of their own that injects nothing and only counts and timestamps every request. Cloud
limits are generous so the operator, not the cloud, is what is measured: each credential has
``requestsPerSecond`` 1000, ``burst`` 1000, ``maxConcurrency`` 64 and no ``maxInstances`` (unless
``--max-instances``: then the connector counts the cluster's VMs before every create); the
proxies throttle nothing.

``--count`` Instances are made as Deployments of ``--replicas`` each, spread round robin over
the credentials, in steps of ``--step`` Instances whose Deployments are all applied at once.

Measured:

1. per step: seconds until all its Deployments are Ready, the operator's VmRSS after it, cloud
   requests per VM by action, API server writes (``apiserver_request_total``) per Instance, and
   for every Deployment the time from its creation (the watch event as it reaches the benchmark)
   to its first RunInstances at the proxy (with ``--breakdown``, split at its first Instance's
   ADDED and first ``Creating`` watch events: planning and POST, the provision handler's start and
   status write, the create call);
2. quiet: ``--quiet`` seconds converged: RSS sampled every 10 s, writes, cloud requests by action,
   objects whose resourceVersion changed;
3. reaction at size: ``--samples`` Deployments patched one at a time to one more replica: from
   the patched Deployment's watch event to the RunInstances carrying its tag;
4. restart at size: SIGKILL, a new operator: time until every credential's first full
   tag-filtered listing after the start (every Instance's VM re-observed), and over the restart
   and ``--settle`` seconds after it: mutating cloud calls, writes, objects changed.

5. deletion (``--delete``): every Deployment deleted at once, with each proxy enforcing EC2's
   TerminateInstances buckets (requests: burst 100, 5/s; instances named: burst 1000, 20/s):
   seconds until no VM of ours is pending or running and until every Instance is gone,
   TerminateInstances requests, ids per request, throttled answers. ``--terminate-batch-size 1``
   turns batching off (the credentials' ``terminateBatchSize`` parameter): one VM per request, as
   before batching, to compare.

Without ``--delete`` nothing is deleted at the end: the control plane and the emulator are torn
down with the run.
A report in JSON goes to ``--json`` (default: printed), a short table to stdout.

Run:  .venv/bin/python bench/scale.py --count 1000 [--replicas 10] [--step 500] [--credentials 2]
      [--quiet 120] [--samples 20] [--settle 30] [--observe-period 10] [--breakdown]
      [--delete [--terminate-batch-size N]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import sys
import threading
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex

from common import (
    Api,
    BenchError,
    Kubectl,
    Watch,
    bench_run,
    changed_between,
    delta,
    ec2_client,
    live_vms,
    operator,
    percentile,
    rss_kib,
    wait_ready,
)

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.fastec2 import FastEC2Process
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.launcher import OperatorProcess
from skyfleet.testing.manifests import deployment as deployment_of
from skyfleet.testing.manifests import ec2_credential, image, node_group

NAMESPACE = "bench"
REGIONS = ("us-east-1", "eu-central-1", "eu-west-1", "ap-southeast-2", "us-west-2", "sa-east-1")
LIMITS = {"requestsPerSecond": 1000, "burst": 1000, "maxConcurrency": 64}
MUTATING = (
    "RunInstances",
    "TerminateInstances",
    "StopInstances",
    "StartInstances",
    "RebootInstances",
    "CreateTags",
    "DeleteTags",
    "ModifyInstanceAttribute",
)
WRITES = ("POST", "PUT", "PATCH", "DELETE")
DEPLOYMENT_TAG = "skyfleet.io/deployment"
# EC2's TerminateInstances buckets: requests (burst, per second) and instances named (burst, per second).
TERMINATE_REQUESTS = (100, 5.0)
TERMINATE_INSTANCES = (1000, 20.0)


# -- the cloud side: a proxy that timestamps what it forwards ---------------------------------------


class _Stamped(list[tuple[str, tuple[tuple[str, str], ...]]]):
    """The proxy's request log, with the monotonic time each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[float] = []

    def append(self, item: tuple[str, tuple[tuple[str, str], ...]]) -> None:
        self.stamps.append(time.monotonic())
        super().append(item)

    def clear(self) -> None:
        self.stamps.clear()
        super().clear()

    def __delitem__(self, key: SupportsIndex | slice) -> None:  # pragma: no cover - the proxy never does
        raise NotImplementedError


@dataclass(frozen=True)
class Request:
    at: float
    action: str
    params: dict[str, str]


class CountingProxy(FaultProxy):
    """A fault proxy with no faults: counts every request and remembers when it came."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._queries = _Stamped()

    def requests(self, since: float = 0.0) -> list[Request]:
        with self._lock:
            stamped = self._queries
            pairs = list(zip(stamped.stamps, list(stamped), strict=True))
        return [Request(at, action, dict(params)) for at, (action, params) in pairs if at >= since]


def tag(params: dict[str, str], key: str) -> str | None:
    for name, value in params.items():
        match = re.fullmatch(r"TagSpecification\.(\d+)\.Tag\.(\d+)\.Key", name)
        if match and value == key:
            return params.get(f"TagSpecification.{match.group(1)}.Tag.{match.group(2)}.Value")
    return None


def is_listing(request: Request) -> bool:
    """A tag-filtered listing of the cluster (what each observe period sends), not a lookup of one
    Instance's VM by its uid tag nor a describe by instance id."""
    if request.action != "DescribeInstances":
        return False
    values = list(request.params.values())
    return (
        "tag:skyfleet.io/cluster-id" in values
        and "tag:skyfleet.io/instance-uid" not in values
        and not any(k.startswith("InstanceId.") for k in request.params)
    )


def by_action(requests: list[Request]) -> Counter[str]:
    return Counter(r.action for r in requests)


# -- the operator -----------------------------------------------------------------------------------


def start_operator(plane: ControlPlane, cluster_id: str, log_path: Path, args: argparse.Namespace) -> OperatorProcess:
    """``skyfleet run`` as users start it, without a Lease (only one runs at a time here)."""
    process = operator(
        plane,
        NAMESPACE,
        cluster_id,
        log_path,
        observe_period=args.observe_period,
        resync_period=args.resync_period,
        lease_namespace=None,
        leader_election=False,
        tracemalloc=args.tracemalloc,
    )
    process.start()
    return process


# -- manifests ----------------------------------------------------------------------------------------


def credential(
    name: str, region: str, endpoint: str, max_instances: int | None, terminate_batch: int | None = None
) -> list[dict[str, Any]]:
    limits: dict[str, int] = {**LIMITS}
    if max_instances is not None:
        limits["maxInstances"] = max_instances
    spec: dict[str, Any] = {"limits": limits}
    if terminate_batch is not None:
        spec["parameters"] = {"terminateBatchSize": str(terminate_batch)}
    return ec2_credential(name, region, endpoint, canary="bench-secret-value", **spec)


def deployment(name: str, replicas: int, cred: str) -> dict[str, Any]:
    size = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}}
    return deployment_of(name, node_group("n", replicas=replicas, image="bench", size=size, credential=cred))


# -- helpers --------------------------------------------------------------------------------------------


def writes(api: Api) -> Counter[str]:
    """Successful API writes by ``group/resource verb``, leases left out (the control plane's own)."""
    counts: Counter[str] = Counter()
    for labels, value in api.requests_total():
        verb, resource = labels.get("verb", ""), labels.get("resource", "")
        if verb not in WRITES or resource == "leases" or not labels.get("code", "").startswith("2"):
            continue
        counts[f"{labels.get('group') or 'core'}/{resource} {verb}"] += value
    return counts


def latency(api: Api) -> dict[str, tuple[float, float]]:
    """``group/resource verb`` -> (seconds, requests) the API server spent answering, so far."""
    out: dict[str, tuple[float, float]] = {}
    sums = ("apiserver_request_duration_seconds_sum", "apiserver_request_duration_seconds_count")
    for labels, value in api.series(*sums):
        if labels.get("verb") in ("WATCH", "CONNECT") or labels.get("resource") == "leases":
            continue
        sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
        key = f"{labels.get('group') or 'core'}/{labels.get('resource', '')}{sub} {labels.get('verb', '')}"
        seconds, count = out.get(key, (0.0, 0.0))
        if labels["__name__"].endswith("_sum"):
            out[key] = (seconds + value, count)
        else:
            out[key] = (seconds, count + value)
    return out


def mean_latency(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean milliseconds per request between two ``latency`` readings, for what had requests."""
    out: dict[str, float] = {}
    for key, (seconds, count) in after.items():
        s0, c0 = before.get(key, (0.0, 0.0))
        if count - c0 >= 10:
            out[key] = round((seconds - s0) / (count - c0) * 1000, 1)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class Scale:
    args: argparse.Namespace
    plane: ControlPlane
    emulator: FastEC2Process
    proxies: dict[str, CountingProxy]
    workdir: Path
    cluster_id: str = field(default_factory=lambda: f"scale-{uuid.uuid4().hex[:6]}")
    operator: OperatorProcess | None = None
    report: dict[str, Any] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # deployment -> replicas
    placed: dict[str, str] = field(default_factory=dict)  # deployment -> credential
    snapshots: list[Path] = field(default_factory=list)  # tracemalloc, at 0 and after each step

    def __post_init__(self) -> None:
        self.api = Api(self.plane, NAMESPACE)
        self.kubectl = Kubectl(self.plane, NAMESPACE, timeout=600)
        self.deployments = Watch(self.api, "deployments", keep=True)
        self.instances = Watch(self.api, "instances")

    @property
    def op(self) -> OperatorProcess:
        if self.operator is None:
            raise BenchError("no operator")
        return self.operator

    def rss(self) -> int:
        return rss_kib(self.op.pid)

    def start_operator(self) -> OperatorProcess:
        self.operator = start_operator(self.plane, self.cluster_id, self.workdir / "operator.log", self.args)
        return self.operator

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.kubectl.apply(*docs)

    def requests(self, since: float = 0.0) -> list[Request]:
        return [r for proxy in self.proxies.values() for r in proxy.requests(since)]

    def alive(self) -> None:
        _ = self.op.pid
        self.deployments.check()

    def wait_ready(self, names: set[str], timeout: float) -> float:
        def report(elapsed: float, missing: set[str], objects: dict[str, dict[str, Any]]) -> None:
            print(f"  ... {elapsed:5.0f} s: {len(names) - len(missing)} of {len(names)} Ready", flush=True)

        # From the Deployments watch, not a LIST per second on the machine the operator is measured on.
        return wait_ready(
            self.api, self.replicas, names, timeout, alive=self.alive, progress=report, watch=self.deployments
        )

    def resource_versions(self) -> dict[str, str]:
        return self.api.resource_versions("instances", "deployments", "cloudcredentials")

    # -- the phases --------------------------------------------------------------------------------------

    def setup(self) -> None:
        self.plane.kubectl("create", "namespace", NAMESPACE)
        self.start_operator()
        docs: list[dict[str, Any]] = []
        for i, proxy in enumerate(self.proxies.values()):
            docs += credential(
                f"c{i}", REGIONS[i], proxy.endpoint, self.args.max_instances, self.args.terminate_batch_size
            )
        self.apply([*docs, image("bench")])
        self.kubectl.wait_credentials(180)
        self.deployments.start()
        if self.args.breakdown:
            self.instances.start()
        time.sleep(self.args.observe_period)
        self.report["rss_kib"] = {"0": self.rss()}
        if self.args.tracemalloc:
            self.snapshots.append(self.op.snapshot())

    def provision(self) -> None:
        args = self.args
        steps: list[dict[str, Any]] = []
        made = 0
        index = 0
        while made < args.count:
            size = min(args.step, args.count - made)
            names: list[str] = []
            docs = []
            for _ in range(max(1, size // args.replicas)):
                name, cred = f"d{index:05d}", f"c{index % args.credentials}"
                index += 1
                self.replicas[name], self.placed[name] = args.replicas, cred
                names.append(name)
                docs.append(deployment(name, args.replicas, cred))
            instances = len(names) * args.replicas
            print(f"step: {len(names)} Deployments ({instances} Instances) at once, {made} exist", flush=True)
            mark = self.deployments.mark()
            instance_mark = self.instances.mark()
            writes_before = writes(self.api)
            latency_before = latency(self.api)
            started = time.monotonic()
            self.apply(docs)
            elapsed = self.wait_ready(set(names), timeout=max(600.0, instances * 2.0))
            wrote = delta(writes(self.api), writes_before)
            answered = mean_latency(latency_before, latency(self.api))
            made += instances
            rss = self.rss()
            self.report["rss_kib"][str(made)] = rss
            if args.tracemalloc:
                self.snapshots.append(self.op.snapshot())
            cloud = self.requests(started)
            created: dict[str, float] = {}
            for e in self.deployments.since(mark):
                if e.type == "ADDED" and e.name in self.replicas:
                    created.setdefault(e.name, e.at)
            first: dict[str, float] = {}
            for r in cloud:
                dep = tag(r.params, DEPLOYMENT_TAG) if r.action == "RunInstances" else None
                if dep is not None:
                    first.setdefault(dep, r.at)
            delays = [first[n] - created[n] for n in names if n in first and n in created]
            stages = self.stages(names, created, first, instance_mark) if args.breakdown else {}
            step = {
                "deployments": len(names),
                "instances": instances,
                "total": made,
                "ready_s": round(elapsed, 1),
                "rss_kib": rss,
                "cloud_requests": dict(sorted(by_action(cloud).items())),
                "cloud_requests_per_vm": round(len(cloud) / instances, 2),
                "writes": wrote,
                "apiserver_mean_ms": answered,
                "instance_writes_per_instance": round(
                    sum(v for k, v in wrote.items() if k.startswith("skyfleet.io/instances")) / instances, 2
                ),
                "create_to_first_runinstances_s": {
                    "n": len(delays),
                    "p50": round(percentile(delays, 0.5), 3),
                    "p99": round(percentile(delays, 0.99), 3),
                    "max": round(max(delays, default=float("nan")), 3),
                },
                **({"create_to_first_runinstances_stages_s": stages} if stages else {}),
            }
            steps.append(step)
            print(
                f"  Ready in {elapsed:.1f} s; RSS {rss / 1024:.1f} MiB; {step['cloud_requests_per_vm']} cloud requests "
                f"per VM; {step['instance_writes_per_instance']} Instance writes per Instance; creation -> first "
                f"create p50 {step['create_to_first_runinstances_s']['p50']} s, p99 "
                f"{step['create_to_first_runinstances_s']['p99']} s",
                flush=True,
            )
            print(f"    API server mean ms per request: {dict(list(answered.items())[:6])}", flush=True)
            for stage, figures in stages.items():
                print(f"    {stage}: p50 {figures['p50']} s, p99 {figures['p99']} s", flush=True)
        self.report["steps"] = steps
        rss0 = self.report["rss_kib"]["0"]
        self.report["rss_slope_kib_per_instance"] = round((steps[-1]["rss_kib"] - rss0) / made, 1)

    def stages(
        self, names: list[str], created: dict[str, float], first: dict[str, float], mark: int
    ) -> dict[str, dict[str, float]]:
        """Each Deployment's creation -> first RunInstances, cut at its first Instance's ADDED
        event and its first Instance status ``Creating`` event (as they reach the benchmark)."""
        added: dict[str, float] = {}
        creating: dict[str, float] = {}
        for e in self.instances.since(mark):
            if e.type == "ADDED":
                added.setdefault(e.deployment, e.at)
            if e.phase == "Creating":
                creating.setdefault(e.deployment, e.at)
        cuts = [
            ("Deployment -> first Instance ADDED", created, added),
            ("Instance ADDED -> status Creating", added, creating),
            ("status Creating -> RunInstances", creating, first),
        ]
        out: dict[str, dict[str, float]] = {}
        for label, start, end in cuts:
            spans = [end[n] - start[n] for n in names if n in start and n in end]
            out[label] = {
                "n": len(spans),
                "p50": round(percentile(spans, 0.5), 3),
                "p99": round(percentile(spans, 0.99), 3),
            }
        return out

    def quiet(self, label: str, seconds: float) -> None:
        print(f"quiet window ({label}): {seconds:.0f} s", flush=True)
        time.sleep(self.args.observe_period)
        versions = self.resource_versions()
        writes_before = writes(self.api)
        started = time.monotonic()
        if self.args.tracemalloc:
            self.snapshots.append(self.op.snapshot())
        samples = [(0.0, self.rss())]
        while (now := time.monotonic()) - started < seconds:
            time.sleep(min(10.0, seconds - (now - started)))
            samples.append((round(time.monotonic() - started, 1), self.rss()))
        if self.args.tracemalloc:
            self.snapshots.append(self.op.snapshot())
        wrote = delta(writes(self.api), writes_before)
        cloud = self.requests(started)
        after = self.resource_versions()
        changed = changed_between(versions, after)
        listings = sum(is_listing(r) for r in cloud)
        periods = seconds / self.args.observe_period
        self.report[f"quiet_{label}"] = {
            "seconds": seconds,
            "rss_kib": samples,
            "rss_growth_kib": samples[-1][1] - samples[0][1],
            "writes": wrote,
            "objects_changed": len(changed),
            "changed_examples": changed[:10],
            "objects": len(versions),
            "cloud_requests": dict(sorted(by_action(cloud).items())),
            "listing_requests_per_credential_per_period": round(listings / len(self.proxies) / periods, 2),
        }
        print(
            f"  RSS {samples[0][1] / 1024:.1f} -> {samples[-1][1] / 1024:.1f} MiB; writes {wrote or 0}; "
            f"{len(changed)} of {len(versions)} objects changed; cloud {dict(by_action(cloud))}",
            flush=True,
        )

    def reaction(self) -> None:
        rng = random.Random(self.args.seed)  # noqa: S311 - which Deployments to patch
        chosen = rng.sample(sorted(self.replicas), min(self.args.samples, len(self.replicas)))
        delays: list[float] = []
        for name in chosen:
            obj = self.api.get(f"{self.api.group_path}/deployments/{name}")
            generation = int(obj["metadata"]["generation"])
            mark = self.deployments.mark()
            self.replicas[name] += 1
            self.kubectl.patch_replicas(name, self.replicas[name])
            patched = self.deployments.wait(
                lambda e, n=name, g=generation: e.name == n and e.generation > g, mark, 60, f"the patch of {name}"
            )
            deadline = time.monotonic() + 60
            while True:
                hit = [
                    r
                    for r in self.proxies[f"p{self.placed[name][1:]}"].requests(patched.at - 1.0)
                    if r.action == "RunInstances" and tag(r.params, DEPLOYMENT_TAG) == name
                ]
                if hit:
                    delays.append(hit[0].at - patched.at)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"no RunInstances for {name} within 60 s of its patch")
                time.sleep(0.05)
        self.wait_ready(set(chosen), timeout=300)
        self.report["patch_to_runinstances_s"] = {
            "n": len(delays),
            "p50": round(percentile(delays, 0.5), 3),
            "p99": round(percentile(delays, 0.99), 3),
            "max": round(max(delays), 3),
            "samples": [round(d, 3) for d in delays],
        }
        print(f"reaction at size: patch -> RunInstances {[round(d, 2) for d in delays]} s", flush=True)

    def delete(self) -> None:
        """Every Deployment deleted at once, the cloud pacing TerminateInstances as EC2 does."""
        print("delete: every Deployment at once", flush=True)
        for proxy in self.proxies.values():
            proxy.throttle("TerminateInstances", burst=TERMINATE_REQUESTS[0], rate=TERMINATE_REQUESTS[1])
            proxy.throttle(
                "TerminateInstances", burst=TERMINATE_INSTANCES[0], rate=TERMINATE_INSTANCES[1], per="InstanceId"
            )
            proxy.stats.clear()
        clients = [ec2_client(self.emulator.url, REGIONS[i]) for i in range(len(self.proxies))]
        vms = sum(len(live_vms(ec2, self.cluster_id)) for ec2 in clients)
        started = time.monotonic()
        self.kubectl("delete", "deployments.skyfleet.io", "--all", "--wait=false")
        terminated_at: float | None = None
        gone_at: float | None = None
        left = {"vms": vms, "instances": -1}
        progress: list[tuple[float, int]] = []  # (seconds, VMs left), every 10 s
        deadline = started + self.args.delete_timeout
        while terminated_at is None or gone_at is None:
            self.alive()
            now = time.monotonic()
            if now > deadline:
                print(f"  deletion not done within {self.args.delete_timeout:.0f} s: {left} left", flush=True)
                break
            if terminated_at is None:
                left["vms"] = sum(len(live_vms(ec2, self.cluster_id)) for ec2 in clients)
                if not progress or now - started >= progress[-1][0] + 10:
                    progress.append((round(now - started, 1), left["vms"]))
                if not left["vms"]:
                    terminated_at = now
                    print(f"  ... {now - started:5.1f} s: every VM terminated", flush=True)
            if gone_at is None:
                # One item at most: listing 1,000 Instances twice a second would load the API
                # server more than the deletion does, and slow the operator's own writes.
                left["instances"] = len(self.api.items("instances", "?limit=1"))
                if not left["instances"]:
                    gone_at = now
                    print(f"  ... {now - started:5.1f} s: every Instance gone", flush=True)
            time.sleep(1.0)
        cloud = self.requests(started)
        terminates = [r for r in cloud if r.action == "TerminateInstances"]
        throttled = sum(p.count("throttled:TerminateInstances") for p in self.proxies.values())
        ids = [sum(1 for k in r.params if k.startswith("InstanceId.")) for r in terminates]
        sent = [n for r, n in zip(terminates, ids, strict=True) if n]
        self.report["delete"] = {
            "vms": vms,
            "terminate_batch_size": self.args.terminate_batch_size or 1000,
            "vms_terminated_s": None if terminated_at is None else round(terminated_at - started, 1),
            "instances_gone_s": None if gone_at is None else round(gone_at - started, 1),
            "left_at_the_end": left,
            "vms_left_every_10_s": progress,
            "terminate_requests": len(terminates),
            "terminate_requests_throttled": throttled,
            "ids_per_terminate": {"mean": round(sum(sent) / max(1, len(sent)), 1), "max": max(sent, default=0)},
            "cloud_requests": dict(sorted(by_action(cloud).items())),
        }
        report = self.report["delete"]
        print(
            f"  {vms} VMs terminated in {report['vms_terminated_s']} s, Instances gone in "
            f"{report['instances_gone_s']} s; {len(terminates)} TerminateInstances ({throttled} throttled), "
            f"{self.report['delete']['ids_per_terminate']} ids per request",
            flush=True,
        )

    def restart(self) -> None:
        args = self.args
        time.sleep(args.observe_period)
        print("restart: SIGKILL the operator, start a new one", flush=True)
        versions = self.resource_versions()
        writes_before = writes(self.api)
        killed = time.monotonic()
        self.op.kill()
        operator = self.start_operator()
        started = operator.started
        # Every credential's first full listing after the start (pages chained by NextToken).
        observed: dict[str, float] = {}
        deadline = started + 600
        while len(observed) < len(self.proxies):
            _ = operator.pid
            if time.monotonic() > deadline:
                raise BenchError(f"only {sorted(observed)} listed within 600 s of the restart")
            for name, proxy in self.proxies.items():
                if name in observed:
                    continue
                pages = [r for r in proxy.requests(started) if is_listing(r)]
                for page in pages:
                    if "NextToken" not in page.params:
                        first = page
                        break
                else:
                    continue
                chain = [p for p in pages if p.at >= first.at]
                # The listing is done at the first later page that is not a continuation.
                end = first.at
                for p in chain[1:]:
                    if "NextToken" not in p.params:
                        break
                    end = p.at
                if len(chain) > 1 or time.monotonic() - first.at > 2.0:
                    observed[name] = end
            time.sleep(0.1)
        reobserved = max(observed.values()) - started
        time.sleep(args.settle)
        cloud = self.requests(killed)
        wrote = delta(writes(self.api), writes_before)
        after = self.resource_versions()
        changed = changed_between(versions, after)
        mutating = {a: n for a, n in by_action(cloud).items() if a in MUTATING}
        self.report["restart"] = {
            "reobserved_s": round(reobserved, 1),
            "window_s": round(time.monotonic() - killed, 1),
            "mutating_cloud_calls": mutating,
            "cloud_requests": dict(sorted(by_action(cloud).items())),
            "writes": wrote,
            "objects_changed": len(changed),
            "changed_examples": changed[:10],
            "rss_kib_after": self.rss(),
        }
        print(
            f"  every VM re-observed {reobserved:.1f} s after the start; mutating calls {mutating or 0}; "
            f"writes {wrote or 0}; {len(changed)} objects changed",
            flush=True,
        )


def memory_diff(before: Path, after: Path, title: str, per: int = 1, top: int = 25) -> list[str]:
    """The allocations that grew between two snapshots, by the line that made them, divided by ``per``."""
    first, last = (tracemalloc.Snapshot.load(str(p)) for p in (before, after))
    unit, each = ("KiB per Instance", "blocks per Instance") if per > 1 else ("KiB", "blocks")
    total = sum(s.size for s in last.statistics("filename")) - sum(s.size for s in first.statistics("filename"))
    lines = [f"tracemalloc, {title}: traced memory {total / 1024 / per:+.1f} {unit}; by line, {unit} ({each})"]
    for stat in last.compare_to(first, "lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(
            f"  {stat.size_diff / 1024 / per:9.2f} ({stat.count_diff / per:7.1f})  "
            f"{frame.filename.split('site-packages/')[-1].split('/operator/')[-1]}:{frame.lineno}"
        )
    return lines


def table(report: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = []
    rss0 = report["rss_kib"]["0"]
    rows.append(("operator RSS at 0", f"{rss0 / 1024:.1f} MiB"))
    previous = (0, rss0)
    for step in report["steps"]:
        slope = (step["rss_kib"] - previous[1]) / (step["total"] - previous[0])
        previous = (step["total"], step["rss_kib"])
        c = step["create_to_first_runinstances_s"]
        rows += [
            (
                f"step to {step['total']}: {step['deployments']} Deployments at once -> Ready",
                f"{step['ready_s']:.1f} s ({step['instances'] / step['ready_s'] * 60:.0f} VMs/min)",
            ),
            ("  cloud requests per VM", f"{step['cloud_requests_per_vm']} {step['cloud_requests']}"),
            ("  Instance writes per Instance", f"{step['instance_writes_per_instance']}"),
            ("  Deployment creation -> first RunInstances", f"p50 {c['p50']} s, p99 {c['p99']} s (n={c['n']})"),
            ("  operator RSS", f"{step['rss_kib'] / 1024:.1f} MiB ({slope:.1f} KiB per Instance in this step)"),
        ]
    rows.append(("RSS slope, 0 -> all", f"{report['rss_slope_kib_per_instance']} KiB per Instance"))
    for key, value in report.items():
        if key.startswith("quiet_"):
            rows += [
                (
                    f"{key}: {value['seconds']:.0f} s converged, RSS",
                    f"{value['rss_kib'][0][1] / 1024:.1f} -> {value['rss_kib'][-1][1] / 1024:.1f} MiB "
                    f"({value['rss_growth_kib']:+d} KiB)",
                ),
                ("  writes / objects changed", f"{value['writes'] or 0} / {value['objects_changed']}"),
                (
                    "  cloud requests",
                    f"{value['cloud_requests']} ({value['listing_requests_per_credential_per_period']} "
                    "listings per credential per observe period)",
                ),
            ]
    if "patch_to_runinstances_s" in report:
        p = report["patch_to_runinstances_s"]
        rows.append(("replicas patch -> RunInstances at size", f"p50 {p['p50']} s, p99 {p['p99']} s (n={p['n']})"))
    if "delete" in report:
        d = report["delete"]
        rows += [
            (
                f"delete all ({d['vms']} VMs, terminateBatchSize {d['terminate_batch_size']}): VMs terminated",
                f"{d['vms_terminated_s']} s; Instances gone {d['instances_gone_s']} s; left {d['left_at_the_end']}",
            ),
            ("  VMs left every 10 s", f"{d['vms_left_every_10_s']}"),
            (
                "  TerminateInstances (throttled), ids per request",
                f"{d['terminate_requests']} ({d['terminate_requests_throttled']}), {d['ids_per_terminate']}",
            ),
            ("  cloud requests", f"{d['cloud_requests']}"),
        ]
    if "restart" in report:
        r = report["restart"]
        rows += [
            ("restart: start -> every VM re-observed", f"{r['reobserved_s']} s"),
            (f"  over {r['window_s']} s: mutating cloud calls", f"{r['mutating_cloud_calls'] or 0}"),
            ("  writes / objects changed", f"{r['writes'] or 0} / {r['objects_changed']}"),
            ("  cloud requests", f"{r['cloud_requests']}"),
        ]
    width = max(len(r[0]) for r in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=1000, help="Instances in all")
    parser.add_argument("--replicas", type=int, default=10, help="replicas per Deployment")
    parser.add_argument("--step", type=int, default=1000, help="Instances whose Deployments are applied at once")
    parser.add_argument("--credentials", type=int, default=2, choices=range(1, len(REGIONS) + 1))
    parser.add_argument("--quiet", type=float, default=120.0, help="seconds of each converged window")
    parser.add_argument("--samples", type=int, default=20, help="replicas patches at size")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds counted after the restart re-observed")
    parser.add_argument("--observe-period", type=int, default=10)
    parser.add_argument("--resync-period", type=int, default=60)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-instances", type=int, help="each credential's limits.maxInstances (default: none)")
    parser.add_argument(
        "--tracemalloc", type=int, default=0, metavar="FRAMES", help="trace the operator's allocations; diff them"
    )
    parser.add_argument("--json", type=Path, help="write the report here instead of printing it")
    parser.add_argument("--skip", action="append", default=[], choices=["reaction", "restart"])
    parser.add_argument(
        "--breakdown", action="store_true", help="also watch Instances and split each creation delay into stages"
    )
    parser.add_argument("--delete", action="store_true", help="at the end, delete every Deployment and time it")
    parser.add_argument("--delete-timeout", type=float, default=600.0, help="seconds the deletion is waited for")
    parser.add_argument(
        "--terminate-batch-size", type=int, choices=range(1, 1001), metavar="1-1000", help="ec2 terminateBatchSize"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    scale: Scale | None = None
    with bench_run("scale") as (plane, workdir), contextlib.ExitStack() as stack:
        emulator = FastEC2Process(pending_delay=1.0)
        stack.callback(emulator.stop)
        proxies = {f"p{i}": stack.enter_context(CountingProxy(emulator.url)) for i in range(args.credentials)}
        scale = Scale(args, plane, emulator, proxies, workdir)
        stack.callback(lambda: scale.operator and scale.operator.stop())
        stack.callback(scale.instances.stop)
        stack.callback(scale.deployments.stop)
        scale.report["command"] = " ".join([Path(sys.executable).name, *sys.argv])
        scale.report["limits"] = {**LIMITS, "maxInstances": args.max_instances}
        try:
            scale.setup()
            scale.provision()
            if args.quiet > 0:
                scale.quiet("after_ready", args.quiet)
            if "reaction" not in args.skip:
                scale.reaction()
            if "restart" not in args.skip:
                scale.restart()
            if args.delete:
                scale.delete()
        except BaseException:
            if scale.operator is not None:
                print(f"--- operator log (tail) ---\n{scale.operator.tail()}", file=sys.stderr)
            raise
        finally:
            text = json.dumps(scale.report, indent=1)
            if args.json:
                args.json.write_text(text + "\n")
            else:
                print(text)
        table(scale.report)
        shots = scale.snapshots
        if len(shots) > 1:
            print("\n".join(memory_diff(shots[0], shots[len(scale.report["steps"])], "0 -> all Ready", args.count)))
        if len(shots) > len(scale.report["steps"]) + 1:
            print("\n".join(memory_diff(shots[0], shots[-1], "0 -> end of the quiet window", args.count)))
            print("\n".join(memory_diff(shots[-2], shots[-1], "over the quiet window")))
        for shot in shots:
            shot.unlink(missing_ok=True)


if __name__ == "__main__":
    threading.current_thread().name = "scale"
    main()
