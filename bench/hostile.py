"""Benchmark: hostile manifests of every kind against the real control plane and operator.

One local control plane, the moto EC2 emulator in its own process, and ``skyfleet run`` as a
subprocess (``--allow-endpoint 127.0.0.1``, no ``--prometheus-url``). A healthy Deployment ``shop``
runs one VM, and ``h-target`` (no VM until a ScalingPolicy governs its group) is there for the
policies to govern; then
``--count`` manifests drawn by hypothesis from ``--seed`` (skyfleet.testing.hostile: every kind,
up to three mutations each) are created in batches beside it. Each one is refused at admission
naming the field, or admitted and reported on its Ready condition (or removed by the operator),
and deleted again; the run also fails on any traceback in the operator's log, the operator
exiting, or the shop losing Ready or its VM. Prints the counts per kind and every defect.

Run:  .venv/bin/python bench/hostile.py [--count 500] [--seed 13] [--batch 50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from common import Kubectl, bench_run, keep_log, operator

from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.hostile import Context, Runner, generate, target_deployment
from skyfleet.testing.manifests import deployment, ec2_credential, image, node_group

NAMESPACE = "hostile"
ELSEWHERE = "hostile-elsewhere"
IMAGE = image("xenial")
SHOP = deployment("shop", node_group("app", replicas=1, image="xenial", credential="cloud"))
ELSEWHERE_DEPLOYMENT = deployment("elsewhere", node_group("app", replicas=0, image="elsewhere", credential="elsewhere"))


def credential(name: str, endpoint: str) -> list[dict[str, Any]]:
    return ec2_credential(name, "eu-central-1", endpoint, canary="bench-secret-value-123")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=500, help="hostile manifests")
    parser.add_argument("--seed", type=int, default=13, help="hypothesis seed: the same manifests every run")
    parser.add_argument("--batch", type=int, default=50, help="manifests created before each check")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds an admitted object may take to report")
    args = parser.parse_args()

    failed = True
    with bench_run("hostile") as (plane, workdir), contextlib.ExitStack() as stack:
        emulator = EmulatorProcess()
        stack.callback(emulator.stop)
        for ns in (NAMESPACE, ELSEWHERE):
            plane.kubectl("create", "namespace", ns)
        process = operator(plane, NAMESPACE, f"hostile-{uuid.uuid4().hex[:6]}", workdir / "operator.log")
        try:
            with process:
                ctx = Context(endpoint=emulator.url)
                Kubectl(plane, NAMESPACE).apply(*credential("cloud", emulator.url), IMAGE, SHOP, target_deployment(ctx))
                # Decoys named like references a manifest may take: only in the other namespace.
                Kubectl(plane, ELSEWHERE).apply(
                    *credential("elsewhere", emulator.url), image("elsewhere"), ELSEWHERE_DEPLOYMENT
                )
                plane.kubectl(
                    "-n", NAMESPACE, "wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=180s"
                )
                runner = Runner(
                    kubectl=Path(plane.tools_bin) / "kubectl",
                    env={**os.environ, **plane.env, "KUBECONFIG": str(plane.kubeconfig)},
                    namespace=NAMESPACE,
                    operator_log=process.log,
                    operator_alive=lambda: process.running,
                    report_timeout=args.timeout,
                )
                started = time.monotonic()
                manifests = generate(args.count, args.seed, ctx)
                print(f"generated {len(manifests)} manifests (seed {args.seed}) in {time.monotonic() - started:.1f} s")
                report = runner.run(manifests, batch=args.batch, log=lambda line: print(line, flush=True))
                print(report.summary())
                failed = bool(report.defects or report.defect_outcomes())
        finally:
            if failed:
                keep_log(process.log_path, "hostile")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
