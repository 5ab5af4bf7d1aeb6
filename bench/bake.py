"""Benchmark: time to Ready of a group booting a baked image vs. the same group running the recipe at boot.

One local control plane, the moto EC2 emulator in its own process behind a fault proxy, and
``skyfleet run`` as a subprocess, as ``bench/fleet.py`` starts them. The proxy sets the costs
the emulator does not have:

* boot delay: every new VM reports ``pending`` for ``--boot`` seconds (``pending_delay``);
* recipe cost: a VM whose user data carries the recipe (its marker) stays ``pending``
  ``--recipe`` seconds longer (``recipe_delay``): an install at boot is not ready before it ends.

In one run, with the same recipe and a group of ``--count`` VMs on one credential:

1. unbaked: an Image without ``build``; the group's VMs run the recipe at boot. Apply -> Ready.
2. the bake (once): an Image with ``build``; moto cannot run cloud-init, so the benchmark plays
   the builder: it waits ``--recipe`` seconds once the builder runs the recipe, then stops it
   as the recipe's power-off would. Apply -> Image Ready.
3. baked: the same group on the baked Image, once the bake exists. Apply -> Ready.

The ratio baked / unbaked is the figure (goal: <= 0.5). Nothing keeps running afterwards.

Run:  .venv/bin/python bench/bake.py [--count 20] [--boot 20] [--recipe 60]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet import (
    AMI,
    FLEET,
    NAMESPACE,
    REGIONS,
    Bench,
    BenchError,
    Emulator,
    Operator,
    _raise_interrupt,
    credential,
)

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[1]
MARKER = "bench-recipe-runs-here"
RECIPE = {"packages": ["nginx"], "scripts": [f"echo {MARKER} > /etc/motd"]}


def image(name: str, baked: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"clouds": [{"provider": "ec2", "id": AMI}], "recipe": RECIPE}
    if baked:
        spec["build"] = {"builder": {"size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.micro"}}}}
    return {"apiVersion": "skyfleet.io/v1alpha1", "kind": "Image", "metadata": {"name": name}, "spec": spec}


def group(name: str, image_name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "nodeGroups": [
                {
                    "name": "app",
                    "replicas": replicas,
                    "imageRef": image_name,
                    "size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}},
                    "placement": {"targets": [{"credential": FLEET}]},
                }
            ]
        },
    }


def play_builder(ec2: Any, cluster_id: str, recipe_cost: float, timeout: float) -> None:
    """Wait for the builder running the recipe, let the recipe cost pass, power it off."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ec2.describe_instances(
            Filters=[
                {"Name": "tag:skyfleet.io/cluster-id", "Values": [cluster_id]},
                {"Name": "tag:skyfleet.io/role", "Values": ["builder"]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )["Reservations"]
        for vm in (i for r in found for i in r["Instances"]):
            attr = ec2.describe_instance_attribute(InstanceId=vm["InstanceId"], Attribute="userData")
            user_data = base64.b64decode(attr.get("UserData", {}).get("Value", "")).decode()
            if MARKER in user_data:
                time.sleep(recipe_cost)
                ec2.stop_instances(InstanceIds=[vm["InstanceId"]])
                return
        time.sleep(0.5)
    raise BenchError(f"no builder ran the recipe within {timeout:.0f} s")


def image_ready(bench: Bench, name: str) -> bool:
    out = bench.kubectl(
        "get", "images.skyfleet.io", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
    )
    return out.strip() == "True"


def run(args: argparse.Namespace, plane: ControlPlane, emulator: Emulator, workdir: Path) -> dict[str, float]:
    cluster_id = f"bench-{uuid.uuid4().hex[:6]}"
    region = REGIONS[FLEET]
    ec2 = boto3.client(
        "ec2",
        endpoint_url=emulator.url,
        region_name=region,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="not-a-secret",  # noqa: S106 - the emulator accepts any key
    )
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(FaultProxy(emulator.url))
        proxy.faults.pending_delay = args.boot
        proxy.faults.recipe_marker = MARKER
        proxy.faults.recipe_delay = args.recipe
        proxy.faults.image_pending_delay = args.image
        plane.kubectl("create", "namespace", NAMESPACE)
        operator = Operator(plane, cluster_id, workdir / "operator.log")
        stack.callback(operator.stop)
        bench = Bench(plane, emulator, operator, cluster_id)
        bench.replicas = {"unbaked": args.count, "baked": args.count}
        results: dict[str, float] = {}
        try:
            bench.apply(*credential(FLEET, proxy.endpoint, None), image("plain", False), image("baked", True))
            bench.kubectl("wait", "--for=condition=Ready", "cloudcredentials.skyfleet.io", "--all", "--timeout=120s")

            print(f"unbaked: {args.count} VMs running the recipe at boot", flush=True)
            bench.apply(group("unbaked", "plain", args.count))
            results["unbaked"] = bench.wait_ready("unbaked", 600, progress=True)
            print(f"  Ready after {results['unbaked']:.1f} s", flush=True)

            print("bake: one builder, played by the benchmark", flush=True)
            started = time.monotonic()
            bench.apply(group("baked", "baked", 0))  # a target for the bake, no VM yet
            play_builder(ec2, cluster_id, args.recipe, 180)
            while not image_ready(bench, "baked"):
                if time.monotonic() - started > 600:
                    raise BenchError("the bake did not finish within 600 s")
                _ = operator.pid
                time.sleep(0.25)
            results["bake"] = time.monotonic() - started
            print(f"  baked after {results['bake']:.1f} s", flush=True)

            print(f"baked: {args.count} VMs from the baked image", flush=True)
            bench.apply(group("baked", "baked", args.count))
            results["baked"] = bench.wait_ready("baked", 600, progress=True)
            print(f"  Ready after {results['baked']:.1f} s", flush=True)
            launched = proxy.queries("RunInstances")
            results["vms_with_recipe"] = sum(
                1 for q in launched if MARKER in base64.b64decode(q.get("UserData", "")).decode(errors="replace")
            )
        except BaseException:
            print(operator.tail(), file=sys.stderr)
            raise
        finally:
            with contextlib.suppress(Exception):
                bench.kubectl("delete", "deployments.skyfleet.io", "--all", "--timeout=300s")
                bench.kubectl("delete", "images.skyfleet.io", "--all", "--timeout=300s")
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=20, help="VMs in the group")
    parser.add_argument("--boot", type=float, default=20.0, help="seconds every VM stays pending (boot delay)")
    parser.add_argument("--recipe", type=float, default=60.0, help="seconds the recipe takes on a VM (recipe cost)")
    parser.add_argument("--image", type=float, default=10.0, help="seconds a new AMI stays pending")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _raise_interrupt)

    workdir = Path(tempfile.mkdtemp(prefix="skyfleet-bench-bake-"))
    emulator: Emulator | None = None
    try:
        with ControlPlane(crds=[ROOT / "crds"]) as plane:
            emulator = Emulator()
            results = run(args, plane, emulator, workdir)
    finally:
        if emulator is not None:
            emulator.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = results["baked"] / results["unbaked"]
    print()
    print(f"group of {args.count} VMs, boot delay {args.boot:g} s, recipe cost {args.recipe:g} s")
    print("| variant | apply -> Ready |\n|---|---|")
    print(f"| unbaked (recipe at boot) | {results['unbaked']:.1f} s |")
    print(f"| baked (once the bake exists) | {results['baked']:.1f} s |")
    print(f"| the bake itself (once per recipe and region) | {results['bake']:.1f} s |")
    print(f"ratio baked / unbaked = {ratio:.2f} (goal <= 0.5)")
    print(f"RunInstances carrying the recipe: {int(results['vms_with_recipe'])} (unbaked VMs and the builder)")


if __name__ == "__main__":
    main()
