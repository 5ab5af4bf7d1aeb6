"""The VM observer's work per period over a converged credential, in process.

One credential's observation period compares every Instance of the index with the cloud's
listing (handlers/observe.py, ``_observe_members``). This runs that function on ``--count``
converged Instances (each status as the observer itself writes it for a running VM, and a
listing of those VMs) for ``--periods`` periods and prints each period's time. The first
period decodes and compares every Instance, as every period did before the loop remembered
settled Instances; the later ones are what a quiet fleet costs now. Nothing is written in
either (the fleet is converged); a period that wrote would fail the run.

    .venv/bin/python bench/observer.py --count 2500 --periods 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import kopf

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.contract import CloudNode, NodeState, OwnerTags
from skyfleet.handlers.context import Context, now
from skyfleet.handlers.indexes import ObservedInstance, instances_by_credential
from skyfleet.handlers.observe import LoopState, _observe_members
from skyfleet.metrics import Metrics
from skyfleet.reconcile.instances import observed_status
from skyfleet.settings import Settings

NS = "team"


class _CountingKube:
    """Stands in for handlers.kube.Kube: counts status writes (a converged fleet needs none)."""

    def __init__(self) -> None:
        self.writes = 0

    async def patch_status(self, *args: Any, **kwargs: Any) -> None:
        self.writes += 1

    async def create_event(self, namespace: str, body: Any) -> None:
        return None


def _fleet(count: int) -> tuple[CloudCredential, list[ObservedInstance], list[CloudNode]]:
    cred = CloudCredential.model_validate(
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "CloudCredential",
            "metadata": {"name": "mem", "namespace": NS},
            "spec": {"provider": "memory", "region": "mem-1", "secretRef": {"name": "keys"}},
        }
    )
    members: list[ObservedInstance] = []
    nodes: list[CloudNode] = []
    for i in range(count):
        uid = f"uid-{i}"
        node = CloudNode(
            provider_id=f"i-{i:08x}",
            name=f"shop-web-{i}",
            state=NodeState.RUNNING,
            private_ips=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",),
            size_id="medium",
            image_id="img-1",
            tags={OwnerTags.INSTANCE_UID: uid},
        )
        status = observed_status(None, node, provider="memory", now=now(), generation=1)
        body = {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "Instance",
            "metadata": {"name": f"shop-web-{i}", "namespace": NS, "uid": uid, "generation": 1},
            "spec": {"deployment": "shop", "group": "web", "credential": "mem", "region": "mem-1"},
            "status": json.loads(json.dumps(status.to_api())),
        }
        members += list(instances_by_credential(namespace=NS, body=kopf.Body(body)).values())
        nodes.append(node)
    return cred, members, nodes


async def _run(count: int, periods: int) -> list[float]:
    cred, members, nodes = _fleet(count)
    kube = _CountingKube()
    settings = Settings(cluster_id="bench")
    ctx = Context(settings=settings, kube=kube, clouds=None, metrics=Metrics(), cluster_id="bench")  # type: ignore[arg-type]
    state = LoopState()
    times = []
    for period in range(periods):
        started = time.perf_counter()
        await _observe_members(
            ctx=ctx, cred=cred, members=members, nodes=nodes, state=state, ts=now(), clock=time.monotonic()
        )
        times.append(time.perf_counter() - started)
        if kube.writes:
            raise SystemExit(f"period {period} wrote {kube.writes} statuses: the fleet was not converged")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2500, help="converged Instances of the credential")
    parser.add_argument("--periods", type=int, default=5)
    args = parser.parse_args()
    times = asyncio.run(_run(args.count, args.periods))
    first, later = times[0], times[1:]
    print(f"{args.count} converged Instances, one credential, {args.periods} periods, 0 writes")
    print(f"  first period (every Instance decoded and compared)  {first * 1000:8.1f} ms")
    if later:
        median = statistics.median(later)
        print(f"  later periods, median (settled Instances skipped)    {median * 1000:8.1f} ms")
        print(f"  ratio                                                {first / median:8.1f}x")


if __name__ == "__main__":
    main()
