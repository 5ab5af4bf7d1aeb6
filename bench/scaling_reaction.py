"""Benchmark: how fast a ScalingPolicy reacts, from a metric crossing its threshold to the first Instance.

One local control plane, the moto EC2 emulator (in process), a real Prometheus scraping a load
exporter every second, and ``skyfleet run`` as a subprocess evaluating policies every
``--period`` seconds. A one-VM group is governed by a policy with one constraint, "load above 1
for ``--for``: ScaleOut by 1" (max 2), and "below 1: ScaleIn" with a 0 s scale-down window so
each trial starts from one VM again.

A trial waits a random part of a period (seeded, so crossings fall anywhere in the evaluation
period), raises the load from 0 to 5 and measures from the moment Prometheus first answers 5
for ``max(load)`` (polled every 50 ms) to the moment the second Instance exists (the API server
listed every 50 ms), and to the moment it runs. Then the load drops to 0 and the trial waits for
the group to return to one Instance. The goal is under 2 periods plus ``for``: a crossing is seen
at the next evaluation (at most one period later), which creates the Instance at once.

Run:  .venv/bin/python bench/scaling_reaction.py [--trials 20] [--period 5] [--for 0s] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from common import Kubectl, bench_run, operator, percentile
from kubernetes import client, config

from skyfleet.api.scalingpolicy import parse_duration
from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.manifests import deployment, ec2_credential, image, node_group, scaling_policy
from skyfleet.testing.prometheus import LoadExporter, Prometheus

NAMESPACE = "bench-scaling"
POLL = 0.05


def manifests(endpoint: str, for_: str) -> list[dict[str, Any]]:
    size = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}}
    return [
        *ec2_credential("aws", "eu-central-1", endpoint, canary="bench-secret-value", keys="keys"),
        image("xenial"),
        deployment("app", node_group("web", replicas=1, image="xenial", size=size, credential="aws")),
        scaling_policy(
            "web",
            target={"deployment": "app", "group": "web"},
            minReplicas=1,
            maxReplicas=2,
            metrics=[
                {
                    "name": "hot",
                    "query": "max(load)",
                    "for": for_,
                    "constraint": {"above": 1, "action": "ScaleOut", "step": 1},
                },
                {"name": "cold", "query": "max(load)", "constraint": {"below": 1, "action": "ScaleIn"}},
            ],
            behavior={"scaleDown": {"stabilizationWindowSeconds": 0}},
        ),
    ]


def instances(api: client.CustomObjectsApi) -> list[dict[str, Any]]:
    items = api.list_namespaced_custom_object("skyfleet.io", "v1alpha1", NAMESPACE, "instances")["items"]
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def running(item: dict[str, Any]) -> bool:
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def wait(check: Any, timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(POLL)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def run(args: argparse.Namespace) -> None:
    with (
        bench_run("scaling") as (plane, workdir),
        EC2Emulator() as emulator,
        LoadExporter() as load,
        Prometheus(targets=[load.target]) as prom,
    ):
        measure(args, plane, workdir / "operator.log", emulator.endpoint, load, prom)


def measure(  # noqa: PLR0917 - one call site
    args: argparse.Namespace, plane: ControlPlane, log: Path, endpoint: str, load: LoadExporter, prom: Prometheus
) -> None:
    for_seconds = parse_duration(args.for_)
    load.set("load", 0.0, namespace=NAMESPACE)  # its namespace: what the operator's Prometheus shows a policy
    prom.wait_for("max(load)", lambda v: v == 0.0)
    plane.kubectl("create", "namespace", NAMESPACE)
    process = operator(
        plane,
        NAMESPACE,
        f"bench-{uuid.uuid4().hex[:6]}",
        log,
        observe_period=1,
        lease_namespace=None,
        leader_election=False,
        extra_args=["--prometheus-url", prom.url, "--scaling-period", f"{args.period:g}"],
    )
    with process:
        Kubectl(plane, NAMESPACE).apply(*manifests(endpoint, args.for_))
        api = client.CustomObjectsApi(config.new_client_from_config(str(plane.kubeconfig)))
        wait(lambda: len(instances(api)) == 1 and running(instances(api)[0]), 120, "the first VM")
        created: list[float] = []
        ran: list[float] = []
        rng = random.Random(args.seed)  # noqa: S311 - reproducible pauses, not a secret
        for trial in range(args.trials):
            # A trial starts right after a scale-in evaluation; without a pause every crossing would
            # fall at the same point of the evaluation period.
            time.sleep(rng.uniform(0, args.period))
            load.set("load", 5.0, namespace=NAMESPACE)
            crossed = wait(lambda: prom.values("max(load)") == [5.0], 30, "Prometheus to see the load")
            seen = wait(lambda: len(instances(api)) >= 2, 60, "the second Instance")
            created.append(seen - crossed)
            up = wait(lambda: sum(running(i) for i in instances(api)) >= 2, 120, "the second VM running")
            ran.append(up - crossed)
            print(
                f"trial {trial + 1:2d}: Instance after {created[-1]:5.2f} s, running after {ran[-1]:5.2f} s", flush=True
            )
            load.set("load", 0.0, namespace=NAMESPACE)
            wait(lambda: len(instances(api)) == 1, 120, "the group back at one Instance")
    goal = 2 * args.period + for_seconds
    print()
    print(f"ScalingPolicy reaction over {args.trials} trials, evaluation period {args.period:g} s, for {args.for_}")
    print(
        f"  crossing (as Prometheus sees it) -> Instance created: p50 {statistics.median(created):.2f} s, "
        f"p99 {percentile(created, 0.99):.2f} s, max {max(created):.2f} s (goal < {goal:g} s)"
    )
    print(
        f"  crossing -> VM running:                            p50 {statistics.median(ran):.2f} s, "
        f"p99 {percentile(ran, 0.99):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--period", type=float, default=5.0, help="--scaling-period of the operator")
    parser.add_argument("--for", dest="for_", default="0s", help="the constraint's `for` (e.g. 0s, 10s)")
    parser.add_argument("--seed", type=int, default=7, help="seeds the pause before each trial")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
