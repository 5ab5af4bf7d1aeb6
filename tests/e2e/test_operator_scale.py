"""A hundred VMs: time to Ready, API writes per Instance, cloud calls per VM (printed for the notes),
and a restart at that size that writes nothing and creates nothing."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from skyfleet.testing.manifests import deployment, image, node_group
from tests.e2e.operator_fixtures import World, tags, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

REPLICAS = 100


def test_a_hundred_vms_reach_ready_with_bounded_writes(world: World) -> None:
    w = world
    # A listing of a hundred VMs costs the emulator far more than EC2; observe every 5 s.
    w.operator.stop()
    w.operator.start("--observe-period", "5")
    proxy = w.cloud.proxy()
    docs: list[dict[str, Any]] = w.credential(
        "bulk", "eu-central-1", proxy.endpoint, limits={"requestsPerSecond": 20, "burst": 20, "maxConcurrency": 8}
    )
    size = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}}
    docs += [
        image("xenial"),
        deployment("bulk", node_group("n", replicas=REPLICAS, image="xenial", size=size, credential="bulk")),
    ]
    w.kube.apply(*docs[:3])
    w.kube("wait", "--for=condition=Ready", "cloudcredentials.skyfleet.io/bulk", "--timeout=60s")
    # Every write to any Instance shows up as one watch event.
    watch = subprocess.Popen(
        [str(w.kube.tools_bin / "kubectl"), "-n", w.kube.namespace, "get", "instances.skyfleet.io", "-w", "-o", "name"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=w.kube.env,
    )
    try:
        requests_before = proxy.count("requests")
        started = time.monotonic()
        w.kube.apply(docs[3])
        w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/bulk", "--timeout=300s")
        elapsed = time.monotonic() - started
        requests = proxy.count("requests") - requests_before
        time.sleep(5)  # let the last status writes arrive on the watch
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    events = len([line for line in out.splitlines() if line.strip()])
    vms = [vm for vm in w.vms("eu-central-1") if tags(vm)["skyfleet.io/deployment"] == "bulk"]
    print(
        f"\n{REPLICAS} VMs Ready in {elapsed:.1f} s; {requests} cloud API requests "
        f"({requests / REPLICAS:.2f} per VM); {events} Instance watch events ({events / REPLICAS:.1f} per Instance)"
    )
    assert len(vms) == REPLICAS
    assert len({tags(vm)["skyfleet.io/instance-uid"] for vm in vms}) == REPLICAS
    # Created, intent recorded, provider id recorded, running observed: four writes per
    # Instance, and none from kopf (no diff-base annotation; created with its marker). A few
    # more where a create was retried, never a write per observation period.
    assert events <= 5 * REPLICAS
    instances = w.kube.items("instances.skyfleet.io")
    assert len(instances) == REPLICAS
    assert not [
        i["metadata"]["name"]
        for i in instances
        if "skyfleet.io/last-handled-configuration" in (i["metadata"].get("annotations") or {})
    ]

    # A restart: every Instance is seen again without an annotation to compare with, and its
    # status says its VM exists: no create runs again, nothing is written.
    versions = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in instances}
    launches = len(proxy.queries("RunInstances"))
    w.operator.stop()
    w.operator.start("--observe-period", "5")
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/bulk", "--timeout=60s")
    time.sleep(15)  # three observation periods: every VM listed again
    after = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in w.kube.items("instances.skyfleet.io")}
    assert after == versions
    assert len(proxy.queries("RunInstances")) == launches
