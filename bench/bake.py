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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import BenchError, bench_run, ec2_client, live_vms
from fleet import FLEET, NAMESPACE, REGIONS, SIZE, Bench, credential, start_operator

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.manifests import deployment, image, node_group

MARKER = "bench-recipe-runs-here"
RECIPE = {"packages": ["nginx"], "scripts": [f"echo {MARKER} > /etc/motd"]}
BUILDER_SIZE = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.micro"}}


def recipe_image(name: str, baked: bool) -> dict[str, Any]:
    return image(name, recipe=RECIPE, build={"builder": {"size": BUILDER_SIZE}} if baked else None)


def group(name: str, image_name: str, replicas: int) -> dict[str, Any]:
    return deployment(name, node_group("app", replicas=replicas, image=image_name, size=SIZE, credential=FLEET))


def play_builder(ec2: Any, cluster_id: str, recipe_cost: float, timeout: float) -> None:
    """Wait for the builder running the recipe, let the recipe cost pass, power it off."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for vm in live_vms(ec2, cluster_id, {"Name": "tag:skyfleet.io/role", "Values": ["builder"]}):
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


def run(args: argparse.Namespace, plane: ControlPlane, emulator: EmulatorProcess, workdir: Path) -> dict[str, float]:
    cluster_id = f"bench-{uuid.uuid4().hex[:6]}"
    ec2 = ec2_client(emulator.url, REGIONS[FLEET])
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(FaultProxy(emulator.url))
        proxy.faults.pending_delay = args.boot
        proxy.faults.recipe_marker = MARKER
        proxy.faults.recipe_delay = args.recipe
        proxy.faults.image_pending_delay = args.image
        plane.kubectl("create", "namespace", NAMESPACE)
        operator = start_operator(plane, cluster_id, workdir / "operator.log")
        stack.callback(operator.stop)
        bench = Bench(plane, emulator.url, operator, cluster_id)
        bench.replicas = {"unbaked": args.count, "baked": args.count}
        results: dict[str, float] = {}
        try:
            bench.apply(
                *credential(FLEET, proxy.endpoint, None), recipe_image("plain", False), recipe_image("baked", True)
            )
            bench.kubectl.wait_credentials()

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
    with bench_run("bake") as (plane, workdir), contextlib.ExitStack() as stack:
        emulator = EmulatorProcess()
        stack.callback(emulator.stop)
        results = run(args, plane, emulator, workdir)
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
