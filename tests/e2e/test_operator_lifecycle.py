"""The example application through its life: Ready, scaled, rolled, paused, quiet, deleted.

One operator and one emulator serve the whole module (the machine has two cores); tests run in
file order and each starts by making sure the shop is in the state it needs.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from typing import Any

import pytest

from skyfleet.testing.faultproxy import Faults
from tests.argocd import health
from tests.e2e.operator_fixtures import World, condition, eventually, example_docs, tags, world
from tests.kstatus import compute

pytestmark = pytest.mark.e2e
__all__ = ["world"]

SHOP = "deployments.skyfleet.io/shop"
DEP = "deployments.skyfleet.io"
WEB = "/spec/nodeGroups/1"  # the web tier, second in examples/04-deployment-shop.yaml


def instances(w: World, group: str | None = None) -> list[dict[str, Any]]:
    selector = "skyfleet.io/deployment=shop" + (f",skyfleet.io/group={group}" if group else "")
    return w.kube.items("instances.skyfleet.io", selector)


def wait_ready(w: World, timeout: int = 150) -> None:
    w.kube("wait", "--for=condition=Ready", SHOP, f"--timeout={timeout}s")


def shop_converged(w: World, web: int) -> bool:
    dep = w.kube.get(DEP, "shop")
    status = dep.get("status") or {}
    return (
        condition(dep) == ("True", "AllReplicasReady")
        and status.get("observedGeneration") == dep["metadata"]["generation"]
        and status.get("readyReplicas") == 1 + web
        and len(w.vms()) == 1 + web
    )


@pytest.fixture(scope="module")
def shop(world: World) -> World:
    # Frankfurt is reached through a fault proxy with cloud weather: 5xx answers, lost responses
    # (the VM exists, the answer never comes), listings that lag behind launches, slow boots.
    proxy = world.cloud.proxy()
    proxy.faults = Faults(error_rate=0.05, drop_response_rate=0.05, describe_lag=2.0, pending_delay=2.0)
    world.kube.apply(*example_docs(world.cloud.endpoint, {"aws-frankfurt": proxy.endpoint}))
    wait_ready(world)
    return world


def test_example_shop_reaches_ready_with_matching_vms(shop: World) -> None:
    w = shop
    status, reason = condition(w.kube.get("cloudcredentials.skyfleet.io", "aws-frankfurt"))
    assert (status, reason) == ("True", "Verified")
    image = w.kube.get("images.skyfleet.io", "ubuntu-server")
    assert condition(image) == ("True", "Resolved")
    resolved = {(r["credential"], r["region"]): r["id"] for r in image["status"]["resolved"]}
    # the pinned AMI for Virginia, the newest name match elsewhere
    assert resolved[("aws-virginia", "us-east-1")] == "ami-785db401"
    assert resolved[("aws-frankfurt", "eu-central-1")].startswith("ami-")

    frankfurt, virginia = w.cloud.vms(w.cluster_id, "eu-central-1"), w.cloud.vms(w.cluster_id, "us-east-1")
    by_instance = {tags(vm)["skyfleet.io/instance"]: vm for vm in frankfurt + virginia}
    assert sorted(by_instance) == ["shop-db-0", "shop-web-0", "shop-web-1", "shop-web-2"]
    # Ordered puts the database in Frankfurt; Spread 2:1 puts two web VMs there and one in Virginia.
    assert Counter(tags(vm)["skyfleet.io/instance"].rsplit("-", 1)[0] for vm in frankfurt) == {
        "shop-db": 1,
        "shop-web": 2,
    }
    assert [tags(vm)["skyfleet.io/instance"].rsplit("-", 1)[0] for vm in virginia] == ["shop-web"]
    assert {vm["InstanceType"] for vm in frankfurt + virginia if "web" in tags(vm)["skyfleet.io/instance"]} == {
        "t3.micro"
    }
    for inst in instances(w):
        vm = by_instance[inst["metadata"]["name"]]
        assert inst["status"]["providerId"] == vm["InstanceId"]
        assert tags(vm)["skyfleet.io/instance-uid"] == inst["metadata"]["uid"]
        assert inst["metadata"]["ownerReferences"][0]["name"] == "shop"
        assert condition(inst) == ("True", "VMRunning")
    dep = w.kube.get(DEP, "shop")
    assert dep["status"]["phase"] == "Running"
    assert {g["name"]: g["readyReplicas"] for g in dep["status"]["groups"]} == {"db": 1, "web": 3}


def test_live_objects_read_healthy_in_argocd_and_current_in_kstatus(shop: World) -> None:
    """The shipped Argo CD health checks (charts/skyfleet/argocd), run on the live objects of the
    converged shop, say Healthy for every one; kstatus's rules say Current."""
    w = shop
    eventually(lambda: shop_converged(w, web=3), timeout=120, what="the shop converged")
    kinds = ("cloudcredentials", "images", "deployments", "instances")
    objects = [o for kind in kinds for o in w.kube.items(f"{kind}.skyfleet.io")]
    assert Counter(o["kind"] for o in objects) == {"CloudCredential": 2, "Image": 1, "Deployment": 1, "Instance": 4}
    verdicts = {f"{o['kind']}/{o['metadata']['name']}": (health(o["kind"], o), compute(o)) for o in objects}
    assert {k: (argo[0], kstatus[0]) for k, (argo, kstatus) in verdicts.items()} == dict.fromkeys(
        verdicts, ("Healthy", "Current")
    ), verdicts
    for o in objects:
        assert o["status"]["observedGeneration"] == o["metadata"]["generation"]


def test_events_name_skyfleet_this_pod_and_an_action(shop: World) -> None:
    w = shop
    ours = [e for e in w.kube.events() if e["involvedObject"].get("apiVersion", "").startswith("skyfleet.io/")]
    assert {e["reason"] for e in ours} >= {"VMCreated", "Verified", "AllReplicasReady"}
    assert {(e["reportingComponent"], e["source"]["component"]) for e in ours} == {("skyfleet", "skyfleet")}
    # Started outside a pod, the operator reports its host name (in a pod: POD_NAME).
    assert {e["reportingInstance"] for e in ours} == {socket.gethostname()}
    actions = {e["reason"]: e["action"] for e in ours}
    assert (actions["VMCreated"], actions["Verified"], actions["AllReplicasReady"]) == ("Create", "Verify", "Reconcile")


def test_web_tier_user_data_carries_the_database_address(shop: World) -> None:
    w = shop
    db = instances(w, "db")[0]
    db_ip = db["status"]["addresses"]["private"][0]
    for web in instances(w, "web"):
        region = web["spec"]["region"]
        user_data = w.cloud.user_data(region, web["status"]["providerId"])
        assert f"DATABASE_HOSTS={db_ip}" in user_data
        # the Image's recipe travels in the same user data
        assert "packages:" in user_data
        assert "curl" in user_data


def test_converged_deployment_gets_no_writes_for_60_seconds(shop: World) -> None:
    w = shop
    kinds = "deployments.skyfleet.io,instances.skyfleet.io,cloudcredentials.skyfleet.io,images.skyfleet.io"

    def versions() -> dict[str, str]:
        items = w.kube.items(kinds)
        return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}

    frankfurt = w.cloud.proxies[0]
    before = versions()
    assert len(before) == 8  # 1 Deployment, 4 Instances, 2 CloudCredentials, 1 Image
    lists_before = frankfurt.count("requests:DescribeInstances")
    time.sleep(60)
    assert versions() == before
    # Observation is one listing per credential and region per period (1 s here), whatever the
    # number of VMs: three VMs behind Frankfurt must not mean three describes per period.
    lists = frankfurt.count("requests:DescribeInstances") - lists_before
    print(f"DescribeInstances through the Frankfurt proxy in 60 s: {lists}")
    assert lists <= 80


def test_scale_up_then_down_honours_the_victim_annotation(shop: World) -> None:
    w = shop
    w.kube.json_patch(DEP, "shop", ("replace", WEB + "/replicas", 5))
    eventually(lambda: shop_converged(w, web=5), timeout=120, what="5 web VMs")
    names = sorted(i["metadata"]["name"] for i in instances(w, "web"))
    assert names == [f"shop-web-{n}" for n in range(5)]

    w.kube("annotate", "instances.skyfleet.io/shop-web-1", "skyfleet.io/delete=true")
    w.kube.json_patch(DEP, "shop", ("replace", WEB + "/replicas", 3))
    eventually(lambda: shop_converged(w, web=3), timeout=120, what="back to 3 web VMs")
    remaining = sorted(i["metadata"]["name"] for i in instances(w, "web"))
    # the annotated one first, then the newest
    assert remaining == ["shop-web-0", "shop-web-2", "shop-web-3"]
    running = {tags(vm)["skyfleet.io/instance"] for vm in w.vms()}
    assert running == {"shop-db-0", *remaining}
    assert w.kube.events("ScalingDown")


def test_size_change_rolls_the_group_without_losing_capacity(shop: World) -> None:
    w = shop
    ready_counts: list[int] = []

    def rolled() -> bool:
        web = instances(w, "web")
        ready_counts.append(
            sum(1 for i in web if condition(i)[0] == "True" and not i["metadata"].get("deletionTimestamp"))
        )
        vms = [vm for vm in w.vms() if "web" in tags(vm)["skyfleet.io/instance"]]
        return len(vms) == 3 and all(vm["InstanceType"] == "t3.small" for vm in vms) and shop_converged(w, web=3)

    w.kube.json_patch(DEP, "shop", ("replace", WEB + "/size/instanceTypes/ec2", "t3.small"))
    eventually(rolled, timeout=180, interval=0.3, what="web rolled to t3.small")
    # maxUnavailable 0: never fewer running web VMs than replicas while rolling
    assert min(ready_counts) >= 3
    assert w.kube.events("RollingUpdate")
    dep = w.kube.get(DEP, "shop")
    assert {g["name"]: g["updatedReplicas"] for g in dep["status"]["groups"]}["web"] == 3


def test_paused_deployment_takes_no_action(shop: World) -> None:
    w = shop
    w.kube.json_patch(DEP, "shop", ("add", "/spec/paused", True), ("replace", WEB + "/replicas", 4))
    eventually(lambda: w.kube.get(DEP, "shop")["status"].get("phase") == "Paused", timeout=30, what="Paused")
    time.sleep(8)
    assert len(instances(w, "web")) == 3
    assert len(w.vms()) == 4
    assert condition(w.kube.get(DEP, "shop"), "Progressing") == ("False", "Paused")
    w.kube.patch(DEP, "shop", {"spec": {"paused": False}})
    eventually(lambda: shop_converged(w, web=4), timeout=120, what="4 web VMs after unpausing")


def test_delete_terminates_every_vm_and_releases_finalizers(shop: World) -> None:
    w = shop
    vm_ids = {vm["InstanceId"] for vm in w.vms()}
    assert len(vm_ids) == 5
    w.kube("delete", SHOP, "--timeout=120s")
    assert w.kube.items("instances.skyfleet.io") == []
    assert w.vms() == []
    terminated = {
        vm["InstanceId"]
        for region in ("eu-central-1", "us-east-1")
        for vm in w.cloud.vms(w.cluster_id, region, states=("terminated", "shutting-down"))
    }
    assert vm_ids <= terminated
    assert w.kube.events("VMDestroyed")
    # The example Secrets' values appear nowhere the operator writes to.
    assert "replace-me-with-the-real-secret-access-key" not in w.operator.log()
    assert "replace-me" not in w.kube("get", "events", "-o", "json")
    # Nothing uses the credentials any more: deleting one releases its Secret at once.
    w.kube("delete", "cloudcredentials.skyfleet.io/aws-frankfurt", "--timeout=30s")
    w.kube("delete", "secret/aws-frankfurt-keys", "--timeout=30s")
