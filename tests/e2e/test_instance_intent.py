"""What an Instance records before its VM is made, on a live shop: the image its target
resolved to, and the driftPolicy that decides its VM's fate (changed in place, no VM replaced)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.argocd import health
from tests.e2e.operator_fixtures import World, condition, eventually, example_docs, tags, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

SHOP = "deployments.skyfleet.io/shop"
DEP = "deployments.skyfleet.io"
WEB = "/spec/nodeGroups/1"  # the web tier, second in examples/04-deployment-shop.yaml


def web(w: World) -> list[dict[str, Any]]:
    return w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=shop,skyfleet.io/group=web")


def web_vms(w: World) -> dict[str, str]:
    """Instance name -> VM id of the running web VMs."""
    return {
        tags(vm)["skyfleet.io/instance"]: vm["InstanceId"]
        for vm in w.vms()
        if tags(vm)["skyfleet.io/instance"].startswith("shop-web-")
    }


def converged(w: World, replicas: int) -> bool:
    dep = w.kube.get(DEP, "shop")
    status = dep.get("status") or {}
    return (
        condition(dep) == ("True", "AllReplicasReady")
        and status.get("observedGeneration") == dep["metadata"]["generation"]
        and len(web_vms(w)) == replicas
    )


@pytest.fixture(scope="module")
def shop(world: World) -> World:
    world.kube.apply(*example_docs(world.cloud.endpoint))
    world.kube("wait", "--for=condition=Ready", SHOP, "--timeout=150s")
    return world


def test_a_new_instance_records_the_image_its_target_resolved(shop: World) -> None:
    w = shop
    w.kube.json_patch(DEP, "shop", ("replace", WEB + "/replicas", 4))
    eventually(lambda: converged(w, 4), timeout=120, what="4 web VMs")
    image = w.kube.get("images.skyfleet.io", "ubuntu-server")
    resolved = {(r["credential"], r["region"]): r["id"] for r in image["status"]["resolved"]}
    booted = {tags(vm)["skyfleet.io/instance"]: vm["ImageId"] for vm in w.vms()}
    newest = max(web(w), key=lambda i: int(i["metadata"]["name"].rsplit("-", 1)[1]))
    spec = newest["spec"]
    # Planned after the Image resolved: the id is in the spec, written before any cloud call.
    assert spec["imageId"] == resolved[(spec["credential"], spec["region"])]
    assert booted[newest["metadata"]["name"]] == spec["imageId"]


def test_a_drift_policy_change_reaches_the_instances_in_place(shop: World) -> None:
    w = shop
    eventually(lambda: converged(w, 4), timeout=120, what="4 web VMs")
    before = web_vms(w)
    w.kube.json_patch(DEP, "shop", ("add", WEB + "/driftPolicy", "Report"))

    def updated() -> bool:
        return all(
            i["spec"].get("driftPolicy") == "Report"
            and i["status"].get("observedGeneration") == i["metadata"]["generation"]
            for i in web(w)
        )

    eventually(updated, timeout=60, what="web Instances say Report")
    assert web_vms(w) == before  # no VM replaced for a policy change
    assert {health("Instance", i)[0] for i in web(w)} == {"Healthy"}
    assert w.kube.events("DriftPolicyUpdated")

    # Report: a VM stopped outside Skyfleet is reported, not replaced.
    victim = "shop-web-0"
    vm = next(v for v in w.vms() if tags(v)["skyfleet.io/instance"] == victim)
    region = vm["Placement"]["AvailabilityZone"][:-1]
    w.cloud.client(region).stop_instances(InstanceIds=[vm["InstanceId"]])
    stopped = lambda: next(i for i in web(w) if i["metadata"]["name"] == victim)["status"].get("phase") == "Stopped"  # noqa: E731
    eventually(stopped, timeout=90, what=f"{victim} Stopped")
    time.sleep(5)
    assert sorted(i["metadata"]["name"] for i in web(w)) == sorted(before)
    assert not any(i["metadata"].get("deletionTimestamp") for i in web(w))

    # Back to Recreate: set in place, then the stopped VM is replaced.
    w.kube.json_patch(DEP, "shop", ("replace", WEB + "/driftPolicy", "Recreate"))
    eventually(
        lambda: converged(w, 4) and victim not in web_vms(w), timeout=150, what=f"{victim} replaced after Recreate"
    )
    assert {i["spec"].get("driftPolicy") for i in web(w)} == {"Recreate"}
    assert w.kube.events("ReplacingLostVM")
