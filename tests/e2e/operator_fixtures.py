"""Helpers for the operator's end-to-end tests: the operator as a subprocess, clouds, kubectl.

Imported by ``test_operator_*.py``; the control plane itself comes from the session fixtures
(``control_plane``, ``installed_crds``). Each test module gets its own namespace, cluster id
and Lease, so modules never see each other's VMs or operators.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3  # type: ignore[import-untyped]
import pytest
import yaml

from skyfleet.testing.ec2emulator import EC2Emulator
from skyfleet.testing.faultproxy import FaultProxy
from skyfleet.testing.launcher import OperatorConfig, OperatorProcess
from skyfleet.testing.manifests import deployment, ec2_credential, node_group

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 90.0, interval: float = 0.5, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what or check}: last {last!r}")


@dataclass
class Kube:
    """kubectl as a user runs it, against the test control plane."""

    tools_bin: Path
    env: dict[str, str]
    namespace: str

    def __call__(self, *args: str, input: str | None = None, check: bool = True, ns: bool = True) -> str:
        cmd = [str(self.tools_bin / "kubectl"), *(["-n", self.namespace] if ns else []), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=self.env, timeout=180, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, *docs: dict[str, Any]) -> None:
        # JSON, not YAML: a YAML round trip can turn quoted numbers (AWS account ids) into ints.
        self("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}))

    def get(self, kind: str, name: str | None = None, selector: str | None = None) -> Any:
        """The object (None when it does not exist), or a List when no name is given."""
        args = ["get", kind, *([name] if name else []), *(["-l", selector] if selector else []), "-o", "json"]
        if name is not None:
            args.append("--ignore-not-found")
        out = self(*args)
        return json.loads(out) if out.strip() else None

    def items(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(kind, selector=selector)["items"]
        return result

    def patch(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        self("patch", kind, name, "--type=merge", "-p", json.dumps(patch))

    def json_patch(self, kind: str, name: str, *ops: tuple[str, str, Any]) -> None:
        """RFC 6902 patch: how to change one node group, since a merge patch replaces whole lists."""
        body = [{"op": op, "path": path, "value": value} for op, path, value in ops]
        self("patch", kind, name, "--type=json", "-p", json.dumps(body))

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        events = self.items("events")
        return [e for e in events if reason is None or e.get("reason") == reason]


def condition(obj: dict[str, Any] | None, type_: str = "Ready") -> tuple[str | None, str | None]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"], c["reason"]
    return None, None


@dataclass
class Cloud:
    """The moto EC2 emulator, seen directly (not through any fault proxy) with boto3."""

    endpoint: str
    proxies: list[FaultProxy] = field(default_factory=list)

    def client(self, region: str) -> Any:
        return boto3.client(
            "ec2",
            endpoint_url=self.endpoint,
            region_name=region,
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key="not-a-secret",
        )

    def proxy(self) -> FaultProxy:
        proxy = FaultProxy(self.endpoint)
        proxy.start()
        self.proxies.append(proxy)
        return proxy

    def vms(
        self, cluster_id: str, region: str, states: tuple[str, ...] = ("pending", "running")
    ) -> list[dict[str, Any]]:
        pages = (
            self.client(region)
            .get_paginator("describe_instances")
            .paginate(
                Filters=[
                    {"Name": "tag:skyfleet.io/cluster-id", "Values": [cluster_id]},
                    {"Name": "instance-state-name", "Values": list(states)},
                ]
            )
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def user_data(self, region: str, instance_id: str) -> str:
        import base64

        attr = self.client(region).describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = attr.get("UserData", {}).get("Value", "")
        return base64.b64decode(value).decode() if value else ""


def tags(vm: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in vm.get("Tags", [])}


class Operator(OperatorProcess):
    """``skyfleet run`` as a subprocess, exactly as users start it, serving the test's namespace
    (``skyfleet.testing.launcher``); ``start(*extra)`` adds flags, which win over these."""

    def __init__(self, kube: Kube, cluster_id: str | None, log_path: Path, lease: str) -> None:
        super().__init__(
            OperatorConfig(
                log_path=log_path,
                env=kube.env,
                namespace=kube.namespace,
                cluster_id=cluster_id,
                observe_period=1,
                resync_period=20,
                lease_name=lease,
                # Declare a vanished VM lost after 5 s instead of a minute, so drift tests stay short.
                extra_env={"SKYFLEET_LOST_GRACE": "5"},
                cwd=ROOT,
            )
        )
        self.kube = kube
        self.cluster_id = cluster_id
        self.lease = lease

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.process

    def stop(self, timeout: float = 20, *, strict: bool = True) -> int | None:
        """SIGTERM; a test fails when the operator needs SIGKILL to go."""
        return super().stop(timeout, strict=strict)


def kube_env(control_plane: Any) -> dict[str, str]:
    env = {**os.environ, **dict(getattr(control_plane, "env", {}) or {})}
    env["KUBECONFIG"] = str(control_plane.kubeconfig)
    return env


@dataclass
class World:
    kube: Kube
    cloud: Cloud
    operator: Operator
    cluster_id: str

    def credential(self, name: str, region: str, endpoint: str, **spec: Any) -> list[dict[str, Any]]:
        """A Secret and a CloudCredential pointing at ``endpoint``."""
        return ec2_credential(name, region, endpoint, canary="e2e-secret-value-123", **spec)

    def vms(self, *regions: str) -> list[dict[str, Any]]:
        return [
            vm for region in regions or ("eu-central-1", "us-east-1") for vm in self.cloud.vms(self.cluster_id, region)
        ]


def example_docs(endpoint: str, overrides: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The examples as users apply them, each CloudCredential pointed at the emulator (or at the
    endpoint ``overrides`` names for it, such as a fault proxy), without the ScalingPolicy."""
    docs = []
    for path in sorted(EXAMPLES.glob("0*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if doc["kind"] == "ScalingPolicy":
                # It would govern the web tier, whose spec these tests edit (test_scaling.py covers it).
                continue
            if doc["kind"] == "CloudCredential":
                doc["spec"]["endpoint"] = {"url": (overrides or {}).get(doc["metadata"]["name"], endpoint)}
            docs.append(doc)
    return docs


@pytest.fixture(scope="module")
def world(control_plane: Any, installed_crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A namespace, an EC2 emulator and a running operator serving only that namespace."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"sf-e2e-{suffix}"
    env = kube_env(control_plane)
    kube = Kube(Path(control_plane.tools_bin), env, namespace)
    kube("create", "namespace", namespace, ns=False)
    emulator = EC2Emulator()
    emulator.start()
    cloud = Cloud(emulator.endpoint)
    log_path = tmp_path_factory.mktemp("operator") / f"operator-{suffix}.log"
    cluster_id = f"e2e-{suffix}"
    operator = Operator(kube, cluster_id, log_path, lease=f"skyfleet-{suffix}")
    operator.start()
    world = World(kube, cloud, operator, cluster_id)
    try:
        yield world
    finally:
        try:
            # Leave nothing behind: the namespace goes while the operator still runs, so every
            # finalizer (and every VM behind one) is handled the way a user's deletion would be.
            # Tests may replace the operator (a standby taking over) or leave it killed.
            operator = world.operator
            if operator.proc is None or operator.proc.poll() is not None:
                operator.start()
            kube("delete", "namespace", namespace, "--timeout=120s", ns=False, check=False)
            operator.stop()
        finally:
            operator = world.operator
            if operator.proc is not None and operator.proc.poll() is None:
                operator.kill()
            for proxy in cloud.proxies:
                proxy.stop()
            emulator.stop()
            print(f"operator log: {log_path}")


def small_group(replicas: int, credential: str, image: str = "xenial", **fields: Any) -> dict[str, Any]:
    """Node group ``app``: ``replicas`` VMs of 1 CPU and 512 MiB (the cloud picks the type)."""
    size = {"cpu": 1, "memoryMiB": 512}
    return node_group("app", replicas=replicas, image=image, size=size, credential=credential, **fields)


def ordered_deployment(
    name: str, *targets: str, replicas: int = 1, image: str = "xenial", **fields: Any
) -> dict[str, Any]:
    """Deployment ``name`` of one group ``app`` of t3.micro VMs, filling ``targets`` in order."""
    size = {"cpu": 1, "memoryMiB": 1024, "instanceTypes": {"ec2": "t3.micro"}}
    placement = {"strategy": "Ordered", "targets": [{"credential": t} for t in targets]}
    group = node_group("app", replicas=replicas, image=image, size=size, placement=placement, **fields)
    return deployment(name, group)
