"""Benchmark: SIGKILL the operator at random moments while a user keeps changing the shop.

One local control plane, the fastec2 emulator in its own process (``--no-dedup``: a cloud with
no idempotency token, which the credential declares with ``clientToken: "false"`` unless
``--undeclared``), and a fault proxy in front of it that lags listings (``--lag`` s: new VMs
stay out of DescribeInstances), loses answers (``--drop``: forwarded, answer lost), fails calls
(``--fail``: 503) and throttles RunInstances (burst 5, 2/s, as EC2). ``skyfleet run`` starts,
runs a random 0-``--max-life`` s after it has logged its start (plus the user's action), and is
SIGKILLed; between runs the user scales the web tier,
changes its size, pauses and unpauses, or deletes the shop and applies it again. All choices come
from ``--seed``.

Checked against the emulator directly (not through the proxy) after every kill: never two live
(pending or running) VMs carry one Instance's uid. At the end, with an operator left running:
the shop converges (Ready, the desired count per group), one live VM per Instance, no live VM
of ours without an Instance; after the shop is deleted, no live VM is left.

Run:  .venv/bin/python bench/chaos.py [--kills 100] [--seed 1] [--no-dedup [--undeclared]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from common import UID_TAG, Kubectl, bench_run, ec2_client, keep_log, live_vms, operator, tags

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.fastec2 import FastEC2Process
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.manifests import deployment, ec2_credential, image, node_group

NAMESPACE = "chaos"
REGION = "eu-central-1"
SIZES = ("t3.micro", "t3.small")


def shop(web: int, size: str, paused: bool) -> dict[str, Any]:
    return deployment(
        "shop",
        node_group("db", replicas=1, image="xenial", instance_type="t3.micro", credential="cloud"),
        node_group("web", replicas=web, image="xenial", instance_type=size, credential="cloud", dependsOn=["db"]),
        paused=paused,
    )


class Chaos:
    def __init__(self, plane: ControlPlane, emulator: FastEC2Process, log_path: Path) -> None:
        self.cluster_id = f"chaos-{uuid.uuid4().hex[:6]}"
        self.kubectl = Kubectl(plane, NAMESPACE)
        # No Lease: a killed holder's Lease would keep the next operator waiting its whole duration
        # (15 s), and every kill would hit a standby. Only one operator runs at a time here anyway.
        self.operator = operator(
            plane,
            NAMESPACE,
            self.cluster_id,
            log_path,
            observe_period=2,
            leader_election=False,
            extra_env={"SKYFLEET_LOST_GRACE": "10"},
        )
        self.ec2 = ec2_client(emulator.url, REGION)
        self.actions: Counter[str] = Counter()
        self.duplicates: list[str] = []

    def apply(self, *docs: dict[str, Any]) -> bool:
        """kubectl apply as a user retries it: an object vanishing mid-apply (its deletion just
        finished) fails one attempt, not the run."""
        return self.kubectl.apply(*docs, tries=5)

    def shop_live(self) -> bool:
        """The shop exists and is not being deleted."""
        out = self.kubectl("get", "deployments.skyfleet.io", "shop", "-o", "json", "--ignore-not-found")
        return bool(out.strip()) and not json.loads(out)["metadata"].get("deletionTimestamp")

    def live_vms(self) -> list[dict[str, str]]:
        return [
            {"id": vm["InstanceId"], "uid": tags(vm).get(UID_TAG, "")} for vm in live_vms(self.ec2, self.cluster_id)
        ]

    def check_no_duplicates(self, when: str) -> None:
        per_uid = Counter(vm["uid"] for vm in self.live_vms())
        for uid, n in per_uid.items():
            if n > 1:
                self.duplicates.append(f"{when}: {n} live VMs for Instance uid {uid}")

    def instances(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(self.kubectl("get", "instances.skyfleet.io", "-o", "json"))["items"]
        return items


def main() -> None:  # noqa: PLR0912, PLR0915 - one scripted run, top to bottom
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-dedup", action="store_true", help="a cloud without ClientToken deduplication")
    parser.add_argument(
        "--undeclared",
        dest="declare",
        action="store_false",
        help="with --no-dedup: the credential does not say clientToken false (as before that parameter existed)",
    )
    parser.add_argument("--lag", type=float, default=2.0, help="seconds new VMs stay out of listings")
    parser.add_argument("--drop", type=float, default=0.02, help="share of answers lost after forwarding")
    parser.add_argument("--fail", type=float, default=0.03, help="share of calls failed with 503")
    parser.add_argument("--max-life", type=float, default=6.0, help="most seconds an operator lives")
    parser.add_argument("--converge", type=float, default=300.0, help="seconds allowed to converge at the end")
    args = parser.parse_args()
    rng = random.Random(args.seed)  # noqa: S311 - a repeatable schedule, not a secret
    dedup = not args.no_dedup

    chaos: Chaos | None = None
    failed = True
    with bench_run("chaos") as (plane, workdir), contextlib.ExitStack() as stack:
        emulator = FastEC2Process(client_token_dedup=dedup, pending_delay=1.0)
        stack.callback(emulator.stop)
        proxy = stack.enter_context(FaultProxy(emulator.url, seed=args.seed))
        proxy.faults.dedup_client_token = dedup
        proxy.throttle("RunInstances", burst=5, rate=2.0)
        try:
            plane.kubectl("create", "namespace", NAMESPACE)
            chaos = Chaos(plane, emulator, workdir / "operator.log")
            chaos.apply(
                *ec2_credential(
                    "cloud",
                    REGION,
                    proxy.endpoint,
                    canary="chaos-secret-value-123",
                    # A cloud without deduplication says so, as a user of such a cloud would.
                    **({} if dedup or not args.declare else {"parameters": {"clientToken": "false"}}),
                ),
                image("xenial"),
            )
            web, size, paused = 2, SIZES[0], False
            chaos.apply(shop(web, size, paused))
            # Faults from the first kill on; the credential's first verification runs clean.
            proxy.faults.describe_lag = args.lag
            proxy.faults.drop_response_rate = args.drop
            proxy.faults.error_rate = args.fail
            started = time.monotonic()
            for kill in range(1, args.kills + 1):
                chaos.operator.start_and_wait()
                time.sleep(rng.uniform(0.0, args.max_life))
                action = rng.choice(["scale", "scale", "size", "pause", "recreate", "none"])
                if action == "scale":
                    web = rng.randint(0, 4)
                elif action == "size":
                    size = SIZES[1 - SIZES.index(size)]
                elif action == "pause":
                    paused = not paused
                if action == "recreate":
                    chaos.kubectl("delete", "deployments.skyfleet.io", "shop", "--wait=false", "--ignore-not-found")
                    time.sleep(rng.uniform(0, 2))
                if action != "none":
                    chaos.apply(shop(web, size, paused))
                chaos.actions[action] += 1
                time.sleep(rng.uniform(0, 1.0))
                chaos.operator.kill()
                chaos.check_no_duplicates(f"after kill {kill}")
                if kill % 10 == 0:
                    print(
                        f"kill {kill}/{args.kills} at {time.monotonic() - started:.0f} s: "
                        f"{len(chaos.live_vms())} live VMs, duplicates so far {len(chaos.duplicates)}",
                        flush=True,
                    )
            chaos_seconds = time.monotonic() - started
            # The end: one operator keeps running; the user's last wish, unpaused, must be reached.
            paused = False
            chaos.operator.start()
            t0 = time.monotonic()
            # A re-creation the last kill interrupted must finish before the last wish is applied.
            while not (chaos.apply(shop(web, size, paused)) and chaos.shop_live()):
                time.sleep(1.0)
            converged = False
            while time.monotonic() - t0 < args.converge:
                insts = chaos.instances()
                vms = chaos.live_vms()
                uids = {i["metadata"]["uid"] for i in insts}
                per_uid = Counter(vm["uid"] for vm in vms)
                groups = Counter(i["spec"]["group"] for i in insts)
                dep = json.loads(chaos.kubectl("get", "deployments.skyfleet.io", "shop", "-o", "json"))
                ready = any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (dep.get("status") or {}).get("conditions", [])
                )
                if (
                    ready
                    and groups == Counter({"db": 1, "web": web}) - Counter()
                    and set(per_uid) == uids
                    and all(n == 1 for n in per_uid.values())
                    and all(i["spec"]["instanceType"] == size for i in insts if i["spec"]["group"] == "web")
                ):
                    converged = True
                    break
                chaos.check_no_duplicates("converging")
                time.sleep(1.0)
            converge_seconds = time.monotonic() - t0
            final_vms = chaos.live_vms()
            insts = chaos.instances()
            uids = {i["metadata"]["uid"] for i in insts}
            leaks = [vm["id"] for vm in final_vms if vm["uid"] not in uids]
            missing = [
                i["metadata"]["name"] for i in insts if i["metadata"]["uid"] not in {vm["uid"] for vm in final_vms}
            ]
            # Deletion: every VM goes.
            chaos.kubectl("delete", "deployments.skyfleet.io", "shop", "--timeout=300s")
            t1 = time.monotonic()
            while chaos.live_vms() and time.monotonic() - t1 < 120:
                time.sleep(1.0)
            left_after_delete = chaos.live_vms()
            chaos.operator.kill()
            tracebacks = chaos.operator.log().count("Traceback (most recent call last)")
            print(
                json.dumps(
                    {
                        "seed": args.seed,
                        "dedup": dedup,
                        "client_token_false_declared": not dedup and args.declare,
                        "kills": args.kills,
                        "chaos_seconds": round(chaos_seconds),
                        "actions": dict(chaos.actions),
                        "duplicates": len(chaos.duplicates),
                        "duplicate_details": chaos.duplicates[:10],
                        "converged": converged,
                        "converge_seconds": round(converge_seconds, 1),
                        "final": {"db": 1, "web": web, "size": size},
                        "live_vms_at_end": len(final_vms),
                        "leaked_vms": leaks,
                        "instances_without_vm": missing,
                        "vms_left_after_delete": len(left_after_delete),
                        "tracebacks_in_log": tracebacks,
                        "proxy": {
                            k: proxy.count(k)
                            for k in (
                                "requests:RunInstances",
                                "requests:DescribeInstances",
                                "requests:TerminateInstances",
                                "throttled",
                                "dropped",
                                "errors",
                                "dedup_hits",
                            )
                        },
                    },
                    indent=1,
                ),
                flush=True,
            )
            failed = bool(chaos.duplicates or leaks or missing or left_after_delete or not converged)
        finally:
            if chaos is not None:
                chaos.operator.kill()
                if failed:
                    keep_log(chaos.operator.log_path, "chaos")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
