"""Benchmark: hostile manifests of every kind against the real control plane and operator.

One local control plane, the moto EC2 emulator in its own process, and ``skyfleet run`` as a
subprocess (``--allow-endpoint 127.0.0.1``). A healthy Deployment ``shop`` runs one VM; then
``--count`` manifests drawn by hypothesis from ``--seed`` (skyfleet.testing.hostile: every kind,
up to three mutations each) are created in batches beside it. Each one is refused at admission
naming the field, or admitted and reported on its Ready condition (or removed by the operator),
and deleted again; the run also fails on any traceback in the operator's log, the operator
exiting, or the shop losing Ready or its VM. Prints the counts per kind and every defect.

Run:  .venv/bin/python bench/hostile.py [--count 500] [--seed 13] [--batch 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from skyfleet.testing.controlplane import ControlPlane
from skyfleet.testing.ec2emulator import EmulatorProcess
from skyfleet.testing.hostile import Context, Runner, generate
from skyfleet.testing.manifests import ec2_credential
from skyfleet.testing.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "hostile"
ELSEWHERE = "hostile-elsewhere"
IMAGE = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Image",
    "metadata": {"name": "xenial"},
    "spec": {"clouds": [{"provider": "ec2", "id": "ami-785db401"}]},
}
SHOP = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Deployment",
    "metadata": {"name": "shop"},
    "spec": {
        "nodeGroups": [
            {
                "name": "app",
                "replicas": 1,
                "imageRef": "xenial",
                "size": {"instanceTypes": {"ec2": "t3.micro"}},
                "placement": {"targets": [{"credential": "cloud"}]},
            }
        ]
    },
}


def credential(name: str, endpoint: str) -> list[dict[str, Any]]:
    return ec2_credential(name, "eu-central-1", endpoint, canary="bench-secret-value-123")


def apply(plane: ControlPlane, namespace: str, *docs: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)})
    plane.kubectl("-n", namespace, "apply", "-f", "-", input=body)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=500, help="hostile manifests")
    parser.add_argument("--seed", type=int, default=13, help="hypothesis seed: the same manifests every run")
    parser.add_argument("--batch", type=int, default=50, help="manifests created before each check")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds an admitted object may take to report")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="skyfleet-bench-hostile-"))
    log_path = workdir / "operator.log"
    emulator = EmulatorProcess()
    operator: subprocess.Popen[bytes] | None = None
    failed = True
    try:
        with ControlPlane(crds=[ROOT / "crds"]) as plane:
            for ns in (NAMESPACE, ELSEWHERE):
                plane.kubectl("create", "namespace", ns)
            cmd = [
                sys.executable,
                "-m",
                "skyfleet.cli",
                "run",
                "--namespace",
                NAMESPACE,
                "--cluster-id",
                f"hostile-{uuid.uuid4().hex[:6]}",
                "--metrics-port",
                "0",
                "--liveness",
                "",
                "--lease-namespace",
                "default",
                "--allow-endpoint",
                "127.0.0.1",
            ]
            env = {**os.environ, **plane.env, "PYTHONWARNINGS": "ignore::Warning"}
            with log_path.open("ab") as log:
                operator = subprocess.Popen(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=ROOT,
                    preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl and getppid run between fork and exec
                )
            apply(plane, NAMESPACE, *credential("cloud", emulator.url), IMAGE, SHOP)
            apply(
                plane, ELSEWHERE, *credential("elsewhere", emulator.url), {**IMAGE, "metadata": {"name": "elsewhere"}}
            )
            plane.kubectl(
                "-n", NAMESPACE, "wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=180s"
            )
            proc = operator
            runner = Runner(
                kubectl=Path(plane.tools_bin) / "kubectl",
                env={**os.environ, **plane.env, "KUBECONFIG": str(plane.kubeconfig)},
                namespace=NAMESPACE,
                operator_log=lambda: log_path.read_text(errors="replace"),
                operator_alive=lambda: proc.poll() is None,
                report_timeout=args.timeout,
            )
            started = time.monotonic()
            manifests = generate(args.count, args.seed, Context(endpoint=emulator.url))
            print(f"generated {len(manifests)} manifests (seed {args.seed}) in {time.monotonic() - started:.1f} s")
            report = runner.run(manifests, batch=args.batch, log=lambda line: print(line, flush=True))
            print(report.summary())
            failed = bool(report.defects or report.defect_outcomes())
            operator.terminate()
            operator.wait(timeout=30)
    finally:
        if operator is not None and operator.poll() is None:
            operator.kill()
            operator.wait(timeout=10)
        emulator.stop()
        if failed and log_path.exists():
            kept = Path(tempfile.gettempdir()) / f"skyfleet-hostile-operator-{os.getpid()}.log"
            shutil.copy(log_path, kept)
            print(f"operator log kept at {kept}")
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
