"""Benchmark: what one EC2 call costs the emulator itself, moto against fastec2, at fleet size.

Both emulators run in a process of their own (``EmulatorProcess``, ``FastEC2Process``) and are
filled to each ``--sizes`` count of running instances (seeded straight into their state, one
reservation each, every instance tagged with the benchmark's cluster and its own instance-uid,
as the operator tags them). At each size the benchmark times, from a plain HTTP client on
loopback (no libcloud, no proxy, so the client's own cost is small), the calls Skyfleet makes:

* lookup: DescribeInstances filtered by one instance's cluster-id and instance-uid tags and the
  live states, MaxResults 1000: what the connector sends before every create (find_by_tags);
* listing: the whole cluster (tag:cluster-id and the live states) in pages of 1000 until no
  NextToken: what each observe period sends per credential and region;
* launch: RunInstances of one instance with the operator's six tags, user data and a ClientToken;
* terminate100: TerminateInstances of 100 running ids in one call.

Wall time is the median over repetitions (up to ``--reps``, fewer once an operation has used
``--rep-budget`` seconds at a size, at least one). CPU is the emulator process's user+system time
(/proc/<pid>/stat) over all repetitions divided by their number: other jobs on a shared machine
stretch wall time but not that. An operation whose one call (for listing: all its pages) took
longer than ``--budget`` seconds is not run at larger sizes for that emulator; a listing stops
after the page that crosses the budget.

Run:  .venv/bin/python bench/emulators.py [--sizes 1000,5000,10000] [--reps 30] [--budget 300]
      [--only moto|fastec2]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import random
import re
import statistics
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.fastec2 import FastEC2Process

CLUSTER = "bench"
CLUSTER_TAG, UID_TAG = "skyfleet.io/cluster-id", "skyfleet.io/instance-uid"
REGION = "us-east-1"
AMI = "ami-785db401"
LIVE = ("pending", "running", "stopping", "stopped", "shutting-down")
AUTH = f"AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/{REGION}/ec2/aws4_request, SignedHeaders=host, Signature=0"
USER_DATA = base64.b64encode(b"#cloud-config\npackages: [nginx]\n").decode()
OPERATIONS = ("lookup", "listing", "launch", "terminate100")
TICKS = os.sysconf("SC_CLK_TCK")


class CallFailed(RuntimeError):
    """The emulator answered an error where the benchmark expected success."""


@dataclass
class Result:
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    note: str = ""  # what did not run, or ran partly

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        # The kernel accounts CPU in ticks (10 ms): the mean over calls, not the median.
        return statistics.fmean(self.cpus)


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    note: str = ""


@dataclass
class Target:
    """One emulator in its process, the instances the benchmark may use, and its measurements."""

    name: str
    process: EmulatorProcess
    running: list[str] = field(default_factory=list)
    seeding: dict[int, float] = field(default_factory=dict)
    rss_kib: dict[int, int] = field(default_factory=dict)
    results: dict[tuple[str, int], Result] = field(default_factory=dict)
    over_budget: dict[str, str] = field(default_factory=dict)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def rss(self) -> int:
        status = Path(f"/proc/{self.process.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) if match else 0

    def timed(self, params: dict[str, str], timeout: float) -> tuple[str, Timing]:
        cpu, started = self.cpu_seconds(), time.perf_counter()
        body = self.call(params, timeout)
        return body, Timing(time.perf_counter() - started, self.cpu_seconds() - cpu)

    def call(self, params: dict[str, str], timeout: float) -> str:
        query = urllib.parse.urlencode({**params, "Version": "2016-11-15"})
        conn = http.client.HTTPConnection("127.0.0.1", self.process.port, timeout=timeout)
        try:
            conn.request("GET", f"/?{query}", headers={"Authorization": AUTH, "Host": f"127.0.0.1:{self.process.port}"})
            response = conn.getresponse()
            body = response.read().decode()
        finally:
            conn.close()
        if response.status != 200:
            code = re.search(r"<Code>([^<]+)</Code>", body)
            raise CallFailed(f"{self.name} answered {response.status} {code.group(1) if code else body[:200]}")
        return body


def filters(tags: dict[str, str]) -> dict[str, str]:
    params = {"Action": "DescribeInstances", "MaxResults": "1000"}
    for i, (key, value) in enumerate(tags.items(), start=1):
        params[f"Filter.{i}.Name"], params[f"Filter.{i}.Value.1"] = f"tag:{key}", value
    n = len(tags) + 1
    params[f"Filter.{n}.Name"] = "instance-state-name"
    for j, state in enumerate(LIVE, start=1):
        params[f"Filter.{n}.Value.{j}"] = state
    return params


def instance_ids(body: str) -> list[str]:
    return re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", body)


# -- the operations: each makes one measured call and returns its wall time --------------------


def lookup(target: Target, rng: random.Random, size: int, budget: float) -> Timing:
    uid = rng.choice(target.running)
    body, timing = target.timed(filters({CLUSTER_TAG: CLUSTER, UID_TAG: uid}), budget * 10)
    if instance_ids(body) != [uid]:
        raise CallFailed(f"{target.name}: the lookup of {uid} answered {instance_ids(body)[:3]}")
    return timing


def listing(target: Target, rng: random.Random, size: int, budget: float) -> Timing:
    params = filters({CLUSTER_TAG: CLUSTER})
    seen = pages = 0
    wall = cpu = 0.0
    while True:
        body, timing = target.timed(params, budget * 10)
        wall, cpu, pages = wall + timing.wall, cpu + timing.cpu, pages + 1
        seen += len(instance_ids(body))
        token = re.search(r"<nextToken>([^<]+)</nextToken>", body)
        if not token:
            break
        if wall > budget:
            return Timing(wall, cpu, f"stopped after {pages} pages ({seen} instances)")
        params = {**params, "NextToken": token.group(1)}
    if seen != len(target.running):
        raise CallFailed(f"{target.name}: the listing found {seen} of {len(target.running)} instances")
    return Timing(wall, cpu)


def launch(target: Target, rng: random.Random, size: int, budget: float) -> Timing:
    uid = str(uuid.UUID(int=rng.getrandbits(128)))
    tags = {
        "Name": f"bench-{uid[:8]}",
        CLUSTER_TAG: CLUSTER,
        "skyfleet.io/namespace": "bench",
        "skyfleet.io/deployment": "shop",
        "skyfleet.io/instance": f"shop-web-{uid[:8]}",
        UID_TAG: uid,
    }
    params = {
        "Action": "RunInstances",
        "ImageId": AMI,
        "MinCount": "1",
        "MaxCount": "1",
        "InstanceType": "t3.micro",
        "UserData": USER_DATA,
        "ClientToken": uid,
        "TagSpecification.1.ResourceType": "instance",
    }
    for i, (key, value) in enumerate(tags.items(), start=1):
        params[f"TagSpecification.1.Tag.{i}.Key"], params[f"TagSpecification.1.Tag.{i}.Value"] = key, value
    body, timing = target.timed(params, budget * 10)
    made = instance_ids(body)
    if len(made) != 1:
        raise CallFailed(f"{target.name}: RunInstances answered {made}")
    # Tag the new instance like the seeded ones, so lookups and listings stay comparable.
    target.call({"Action": "CreateTags", "ResourceId.1": made[0], "Tag.1.Key": UID_TAG, "Tag.1.Value": made[0]}, 600)
    target.running.append(made[0])
    return timing


def terminate100(target: Target, rng: random.Random, size: int, budget: float) -> Timing:
    top_up(target, size)  # every call terminates 100 of a fleet of the full size
    chosen = rng.sample(target.running, 100)
    params = {"Action": "TerminateInstances", **{f"InstanceId.{n}": i for n, i in enumerate(chosen, start=1)}}
    body, timing = target.timed(params, budget * 10)
    if len(instance_ids(body)) != 100:
        raise CallFailed(f"{target.name}: TerminateInstances answered {len(instance_ids(body))} instances")
    gone = set(chosen)
    target.running[:] = [i for i in target.running if i not in gone]
    return timing


def top_up(target: Target, size: int) -> float:
    """Seed running instances until ``size`` run; the seconds it took."""
    missing = size - len(target.running)
    if missing <= 0:
        return 0.0
    started = time.monotonic()
    target.running += target.process.seed(missing, {CLUSTER_TAG: CLUSTER}, unique_tag=UID_TAG, image_id=AMI)
    return time.monotonic() - started


MEASURES: dict[str, Callable[[Target, random.Random, int, float], Timing]] = {
    "lookup": lookup,
    "listing": listing,
    "launch": launch,
    "terminate100": terminate100,
}


def measure(target: Target, size: int, args: argparse.Namespace, rng: random.Random) -> None:
    target.seeding[size] = top_up(target, size)
    target.rss_kib[size] = target.rss()
    print(f"{target.name}: {len(target.running)} running (seeded in {target.seeding.get(size, 0):.1f} s)", flush=True)
    for operation in OPERATIONS:
        if operation in target.over_budget:
            target.results[operation, size] = Result(note=target.over_budget[operation])
            continue
        result = Result()
        while len(result.walls) < args.reps and sum(result.walls) < args.rep_budget:
            timing = MEASURES[operation](target, rng, size, args.budget)
            result.walls.append(timing.wall)
            result.cpus.append(timing.cpu)
            if timing.note:
                result.note = timing.note
                break
        target.results[operation, size] = result
        if result.note or max(result.walls) > args.budget:
            target.over_budget[operation] = f"not run: over {args.budget:g} s at {size:,}"
        print(
            f"  {operation:>12} at {size:>6,}: {1000 * result.wall:10.1f} ms wall (median of {len(result.walls)}), "
            f"{1000 * result.cpu:10.1f} ms CPU/call {result.note}",
            flush=True,
        )


def cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if not result.walls:
        return result.note
    # Where all the calls together did not use one tick of CPU, say how little that is.
    cpu = _ms(result.cpu) if sum(result.cpus) > 0 else f"< {_ms(1 / TICKS / len(result.cpus))}"
    text = f"{_ms(result.wall)} ({cpu} CPU)"
    return f"> {text}, {result.note}" if result.note else text


def _ms(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.1f} s"
    return f"{1000 * seconds:.1f} ms" if seconds >= 0.01 else f"{1000 * seconds:.2f} ms"


def report(targets: list[Target], sizes: list[int]) -> None:
    names = [t.name for t in targets]
    print("\n| call | instances | " + " | ".join(f"{n}: wall (CPU) per call" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for operation in OPERATIONS:
        for size in sizes:
            cells = [cell(t.results.get((operation, size))) for t in targets]
            print(f"| {operation} | {size:,} | " + " | ".join(cells) + " |")
    for size in sizes:
        seeded = ", ".join(f"{t.name} {t.seeding.get(size, 0):.1f} s" for t in targets)
        rss = ", ".join(f"{t.name} {t.rss_kib.get(size, 0) / 1024:.0f} MiB" for t in targets)
        print(f"- at {size:,}: seeding to this size took {seeded}; emulator RSS {rss}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="comma-separated instance counts, ascending")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rep-budget", type=float, default=20.0, help="seconds per operation and size")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds one call may take before larger sizes")
    parser.add_argument("--only", choices=["moto", "fastec2"], action="append")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    runners: dict[str, Callable[[], EmulatorProcess]] = {"moto": EmulatorProcess, "fastec2": FastEC2Process}
    targets: list[Target] = []
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    for name, runner in runners.items():
        if args.only and name not in args.only:
            continue
        target = Target(name, runner())
        targets.append(target)
        try:
            rng = random.Random(args.seed)  # noqa: S311 - which instances to pick, not a secret
            for size in sizes:
                measure(target, size, args, rng)
        finally:
            target.process.stop()
    report(targets, sizes)


if __name__ == "__main__":
    main()
