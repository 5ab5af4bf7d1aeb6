"""Baking (issue 10) on the real control plane with moto's EC2 behind the fault proxy.

moto cannot run cloud-init, so the test plays the recipe's last step: once the builder's user
data is the rendered recipe (checked), it stops the instance as the recipe's power-off would.
The fault proxy keeps every new AMI ``pending`` for a while, as EC2 does.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.operator_fixtures import World, condition, eventually, tags, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

REGION = "eu-central-1"
BASE_AMI = "ami-785db401"
IMAGE_UID_TAG = "skyfleet.io/image-uid"
KEY_TAG = "skyfleet.io/bake-key"


def image(marker: str, **build: Any) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Image",
        "metadata": {"name": "web"},
        "spec": {
            "clouds": [{"provider": "ec2", "id": BASE_AMI}],
            "recipe": {"packages": ["nginx"], "scripts": [f"echo {marker} > /etc/motd"]},
            "build": {
                "builder": {"size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.micro"}}},
                "keep": 1,
                **build,
            },
        },
    }


def deployment(replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "shop"},
        "spec": {
            "nodeGroups": [
                {
                    "name": "app",
                    "replicas": replicas,
                    "imageRef": "web",
                    "size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.micro"}},
                    "placement": {"targets": [{"credential": "cloud"}]},
                    "userData": "#!/bin/sh\necho group-own-user-data\n",
                }
            ]
        },
    }


def builders(w: World, states: tuple[str, ...] = ("pending", "running", "stopping", "stopped")) -> list[dict[str, Any]]:
    return [vm for vm in w.cloud.vms(w.cluster_id, REGION, states) if tags(vm).get("skyfleet.io/role") == "builder"]


def app_vms(w: World) -> list[dict[str, Any]]:
    return [vm for vm in w.cloud.vms(w.cluster_id, REGION) if tags(vm).get("skyfleet.io/role") != "builder"]


def amis(w: World, uid: str) -> list[dict[str, Any]]:
    found = w.cloud.client(REGION).describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{IMAGE_UID_TAG}", "Values": [uid]}]
    )["Images"]
    return [i for i in found if i.get("State") != "deregistered"]


def image_status(w: World) -> dict[str, Any]:
    return (w.kube.get("images.skyfleet.io", "web") or {}).get("status") or {}


def bake_of(w: World) -> dict[str, Any]:
    bakes = image_status(w).get("bakes") or [{}]
    return dict(bakes[0])


def play_recipe(w: World, marker: str) -> str:
    """Wait for the one builder running ``marker``'s recipe, check its user data, power it off."""

    def running() -> list[dict[str, Any]]:
        return [
            vm for vm in builders(w, ("pending", "running")) if marker in w.cloud.user_data(REGION, vm["InstanceId"])
        ]

    found = eventually(running, timeout=120, what=f"a builder running the recipe {marker}")
    assert len(found) == 1, f"two builders for one bake: {[v['InstanceId'] for v in found]}"
    vm = found[0]
    user_data = w.cloud.user_data(REGION, vm["InstanceId"])
    assert user_data.startswith("#cloud-config")
    assert "nginx" in user_data
    assert "poweroff" in user_data  # the recipe ends by powering the builder off
    assert "group-own-user-data" not in user_data
    assert vm["ImageId"] == BASE_AMI
    w.cloud.client(REGION).stop_instances(InstanceIds=[vm["InstanceId"]])
    return str(vm["InstanceId"])


@pytest.fixture(scope="module")
def baked(world: World) -> dict[str, Any]:
    """The credential through a fault proxy that keeps new AMIs pending for 6 s, the Image, the shop."""
    w = world
    proxy = w.cloud.proxy()
    proxy.faults.image_pending_delay = 6.0
    w.kube.apply(*w.credential("cloud", REGION, proxy.endpoint), image("recipe-v1"), deployment())
    return {"proxy": proxy}


def test_the_shop_waits_for_the_first_bake_then_boots_the_baked_ami(world: World, baked: dict[str, Any]) -> None:
    w = world
    # Before the bake: the Deployment waits, saying why, and no VM runs the recipe at boot.
    eventually(
        lambda: (
            "waiting for the baked image" in str((w.kube.get("deployments.skyfleet.io", "shop") or {}).get("status"))
        ),
        timeout=90,
        what="the Deployment waiting for the bake",
    )
    assert w.kube.items("instances.skyfleet.io") == []
    eventually(lambda: builders(w, ("pending", "running")), timeout=120, what="the builder launched")
    # The credential's observation lists the builder (it carries the cluster id) every second:
    # it is the bake loop's, never an orphan.
    time.sleep(4)
    cred = w.kube.get("cloudcredentials.skyfleet.io", "cloud")
    assert condition(cred, "OrphanedVMs")[0] == "False"
    assert not w.kube.events("OrphanedVMs")
    play_recipe(w, "recipe-v1")

    eventually(lambda: bake_of(w).get("phase") == "Available", timeout=120, what="the bake Available")
    done = bake_of(w)
    uid = w.kube.get("images.skyfleet.io", "web")["metadata"]["uid"]
    [ami] = amis(w, uid)
    assert ami["ImageId"] == done["imageId"]
    ami_tags = {t["Key"]: t["Value"] for t in ami.get("Tags", [])}
    assert ami_tags["skyfleet.io/cluster-id"] == w.cluster_id
    assert ami_tags[KEY_TAG] == done["bakeKey"]
    # Published by the pass's closing status write, which may follow the bake's own by a moment.
    published = [{"credential": "cloud", "region": REGION, "id": ami["ImageId"], "bakeKey": done["bakeKey"]}]
    eventually(lambda: image_status(w).get("resolved") == published, timeout=60, what="the baked id published")
    eventually(lambda: condition(w.kube.get("images.skyfleet.io", "web")) == ("True", "Baked"), timeout=60)
    # The builder is deleted once the image exists.
    eventually(lambda: not builders(w), timeout=60, what="the builder deleted")

    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=120s")
    vms = app_vms(w)
    assert len(vms) == 2
    assert {vm["ImageId"] for vm in vms} == {ami["ImageId"]}
    for vm in vms:
        user_data = w.cloud.user_data(REGION, vm["InstanceId"])
        assert "group-own-user-data" in user_data
        assert "recipe-v1" not in user_data  # baked in, not run at every boot
    reasons = {e["reason"] for e in w.kube.events() if e["involvedObject"]["name"] == "web"}
    assert {"BakeStarted", "BuilderLaunched", "Snapshotting", "BakeSucceeded", "BuilderDeleted"} <= reasons
    assert not any("recipe-v1" in e["message"] for e in w.kube.events())


def test_a_restart_with_an_unchanged_recipe_makes_no_cloud_write(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    w.operator.stop()
    proxy.reset()
    proxy.faults.image_pending_delay = 6.0
    w.operator.start()
    eventually(lambda: proxy.count("requests:DescribeImages") >= 1, timeout=60, what="the restarted operator looking")
    time.sleep(10)
    writes = ("RunInstances", "CreateImage", "DeregisterImage", "TerminateInstances", "CreateTags", "CopyImage")
    assert {a: proxy.count(f"requests:{a}") for a in writes} == dict.fromkeys(writes, 0)


def test_a_recipe_change_bakes_again_rolls_the_shop_and_retires_the_old_generation(
    world: World, baked: dict[str, Any]
) -> None:
    w = world
    old = bake_of(w)
    old_snapshots = [
        m["Ebs"]["SnapshotId"]
        for i in w.cloud.client(REGION).describe_images(ImageIds=[old["imageId"]])["Images"]
        for m in i.get("BlockDeviceMappings", [])
        if "Ebs" in m
    ]
    w.kube.patch("images.skyfleet.io", "web", {"spec": {"recipe": {"scripts": ["echo recipe-v2 > /etc/motd"]}}})
    play_recipe(w, "recipe-v2")
    eventually(
        lambda: bake_of(w).get("phase") == "Available" and bake_of(w)["bakeKey"] != old["bakeKey"],
        timeout=120,
        what="the second generation",
    )
    new = bake_of(w)["imageId"]
    most = 0

    def rolled() -> bool:
        nonlocal most
        vms = app_vms(w)
        most = max(most, len(vms))
        return len(vms) == 2 and {vm["ImageId"] for vm in vms} == {new}

    eventually(rolled, timeout=240, interval=0.3, what="the shop on the new generation")
    assert most <= 3  # replicas 2 + maxSurge 1: never all at once
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=120s")

    # keep: 1 -> the old AMI goes with its snapshots once no Instance boots it.
    uid = w.kube.get("images.skyfleet.io", "web")["metadata"]["uid"]
    eventually(lambda: [i["ImageId"] for i in amis(w, uid)] == [new], timeout=120, what="the old AMI deregistered")

    def old_snapshots_left() -> set[str]:
        snaps = w.cloud.client(REGION).describe_snapshots(OwnerIds=["self"])["Snapshots"]
        return {s["SnapshotId"] for s in snaps} & set(old_snapshots)

    # Its snapshots go right after it, in calls of their own: a moment later, not with it.
    eventually(lambda: not old_snapshots_left(), timeout=60, what="the old AMI's snapshots deleted")
    eventually(
        lambda: [g["imageId"] for g in image_status(w).get("generations") or []] == [new],
        timeout=60,
        what="only the new generation in status",
    )


def test_a_sigkill_at_each_step_leaves_one_builder_and_one_image(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    proxy.faults.image_pending_delay = 20.0
    uid = w.kube.get("images.skyfleet.io", "web")["metadata"]["uid"]
    w.kube.patch("images.skyfleet.io", "web", {"spec": {"recipe": {"scripts": ["echo recipe-v3 > /etc/motd"]}}})

    # Killed right after the builder launched: the restarted operator adopts it.
    eventually(lambda: builders(w, ("pending", "running")), timeout=120, what="the builder launched")
    w.operator.kill()
    w.operator.start()
    time.sleep(8)
    builder = play_recipe(w, "recipe-v3")  # asserts there is exactly one

    # Killed while the image is pending: the restarted operator finds it by its bake key.
    eventually(lambda: len(amis(w, uid)) == 2, timeout=120, what="the third AMI requested")
    w.operator.kill()
    w.operator.start()
    eventually(lambda: bake_of(w).get("phase") == "Available", timeout=120, what="the bake finished after restarts")
    key = bake_of(w)["bakeKey"]
    mine = [i for i in amis(w, uid) if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(KEY_TAG) == key]
    assert len(mine) == 1
    eventually(lambda: not builders(w), timeout=60, what="no builder left")
    every = w.cloud.vms(
        w.cluster_id, REGION, ("pending", "running", "stopping", "stopped", "shutting-down", "terminated")
    )
    assert [vm["InstanceId"] for vm in every if tags(vm).get(KEY_TAG) == key] == [builder]
    proxy.faults.image_pending_delay = 6.0


def test_a_builder_that_never_stops_times_out_and_is_deleted(world: World, baked: dict[str, Any]) -> None:
    w = world
    w.kube.patch(
        "images.skyfleet.io",
        "web",
        {"spec": {"recipe": {"scripts": ["echo recipe-hangs"]}, "build": {"builder": {"timeoutSeconds": 60}}}},
    )
    eventually(lambda: builders(w, ("pending", "running")), timeout=120, what="the builder launched")
    eventually(lambda: bake_of(w).get("reason") == "BuildTimeout", timeout=150, what="BuildTimeout")
    eventually(lambda: not builders(w), timeout=60, what="the timed-out builder deleted")
    # The Image's conditions are written by the pass's closing status write, after the bake's own.
    eventually(
        lambda: condition(w.kube.get("images.skyfleet.io", "web"), "Degraded") == ("True", "BuildTimeout"),
        timeout=60,
        what="Degraded BuildTimeout",
    )
    failed = [e for e in w.kube.events("BakeFailed") if e["involvedObject"]["name"] == "web"]
    assert failed
    assert "BuildTimeout" in failed[-1]["message"]
    # The previous generation keeps serving the shop meanwhile.
    assert image_status(w)["resolved"][0]["id"] == (image_status(w)["generations"] or [{}])[-1]["imageId"]


def test_deleting_the_image_deregisters_its_amis_and_snapshots(world: World, baked: dict[str, Any]) -> None:
    w = world
    uid = w.kube.get("images.skyfleet.io", "web")["metadata"]["uid"]
    made = amis(w, uid)
    assert made
    snapshots = {m["Ebs"]["SnapshotId"] for i in made for m in i.get("BlockDeviceMappings", []) if "Ebs" in m}
    w.kube("delete", "deployments.skyfleet.io", "shop", "--timeout=120s")
    w.kube("delete", "images.skyfleet.io", "web", "--timeout=120s")
    assert amis(w, uid) == []
    left = {s["SnapshotId"] for s in w.cloud.client(REGION).describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not left & snapshots
    assert not builders(w)
    assert "Traceback" not in w.operator.log()
    assert "recipe-v" not in w.operator.log()
    assert json.dumps(w.kube.events()).count("recipe-v") == 0


def test_an_image_deleted_mid_bake_leaves_no_builder_and_no_partial_image(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    proxy.faults.image_pending_delay = 600.0  # the image stays pending until the Image is gone
    try:
        deleted_mid_bake(w)
    finally:
        proxy.faults.image_pending_delay = 6.0


def deleted_mid_bake(w: World) -> None:
    doc = image("recipe-mid")
    doc["metadata"]["name"] = "mid"
    dep = deployment(1)
    dep["metadata"]["name"] = "mid"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "mid"
    w.kube.apply(doc, dep)
    uid = eventually(lambda: (w.kube.get("images.skyfleet.io", "mid") or {}).get("metadata", {}).get("uid"))
    play_recipe(w, "recipe-mid")
    eventually(lambda: amis(w, uid), timeout=120, what="the image requested")
    phase = ((w.kube.get("images.skyfleet.io", "mid") or {}).get("status") or {}).get("bakes", [{}])[0].get("phase")
    assert phase == "Snapshotting"  # EC2 (the proxy) still says pending
    w.kube("delete", "deployments.skyfleet.io", "mid", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "mid", "--timeout=120s")
    assert amis(w, uid) == []
    assert not [vm for vm in builders(w) if tags(vm).get(IMAGE_UID_TAG) == uid]


def test_copy_to_regions_copies_each_bake_and_deleting_the_image_removes_the_copies(
    world: World, baked: dict[str, Any]
) -> None:
    w = world
    doc = image("recipe-copied", copyToRegions=["us-east-1"])
    doc["metadata"]["name"] = "copied"
    dep = deployment(0)  # a target, no VM needed
    dep["metadata"]["name"] = "copied"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "copied"
    w.kube.apply(doc, dep)
    uid = eventually(lambda: (w.kube.get("images.skyfleet.io", "copied") or {}).get("metadata", {}).get("uid"))
    play_recipe(w, "recipe-copied")

    def status() -> dict[str, Any]:
        return (w.kube.get("images.skyfleet.io", "copied") or {}).get("status") or {}

    def both_available() -> bool:
        bakes = {b["region"]: b for b in status().get("bakes") or []}
        return set(bakes) == {REGION, "us-east-1"} and all(b["phase"] == "Available" for b in bakes.values())

    eventually(both_available, timeout=180, what="the bake and its copy Available")
    bakes = {b["region"]: b for b in status()["bakes"]}
    assert bakes["us-east-1"]["sourceRegion"] == REGION
    assert bakes["us-east-1"]["bakeKey"] == bakes[REGION]["bakeKey"]
    copies = w.cloud.client("us-east-1").describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{IMAGE_UID_TAG}", "Values": [uid]}]
    )["Images"]
    assert [i["ImageId"] for i in copies] == [bakes["us-east-1"]["imageId"]]
    assert {t["Key"]: t["Value"] for t in copies[0]["Tags"]}[KEY_TAG] == bakes[REGION]["bakeKey"]

    w.kube("delete", "deployments.skyfleet.io", "copied", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "copied", "--timeout=120s")
    assert amis(w, uid) == []
    left = w.cloud.client("us-east-1").describe_images(
        Owners=["self"], Filters=[{"Name": f"tag:{IMAGE_UID_TAG}", "Values": [uid]}]
    )["Images"]
    assert [i for i in left if i.get("State") != "deregistered"] == []


def test_deletion_policy_orphan_keeps_the_baked_ami(world: World, baked: dict[str, Any]) -> None:
    w = world
    doc = image("recipe-kept", deletionPolicy="Orphan")
    doc["metadata"]["name"] = "kept"
    dep = deployment(0)
    dep["metadata"]["name"] = "kept"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "kept"
    w.kube.apply(doc, dep)
    uid = eventually(lambda: (w.kube.get("images.skyfleet.io", "kept") or {}).get("metadata", {}).get("uid"))
    play_recipe(w, "recipe-kept")
    eventually(
        lambda: (
            (((w.kube.get("images.skyfleet.io", "kept") or {}).get("status") or {}).get("bakes") or [{}])[0].get(
                "phase"
            )
            == "Available"
        ),
        timeout=120,
        what="the bake Available",
    )
    [ami] = amis(w, uid)
    w.kube("delete", "deployments.skyfleet.io", "kept", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "kept", "--timeout=120s")
    assert [i["ImageId"] for i in amis(w, uid)] == [ami["ImageId"]]
    assert not [vm for vm in builders(w) if tags(vm).get(IMAGE_UID_TAG) == uid]
    # Events are posted in the background: the finalizer can be gone before its event lands.
    orphaned = eventually(
        lambda: [e for e in w.kube.events("BakedImagesOrphaned") if e["involvedObject"]["name"] == "kept"],
        what="the BakedImagesOrphaned event",
    )
    assert ami["ImageId"] in orphaned[0]["message"]


def test_an_image_pending_past_its_deadline_is_snapshot_failed(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    proxy.faults.image_pending_delay = 600.0  # far past the Image's snapshotTimeoutSeconds
    try:
        stuck_image(w)
    finally:
        proxy.faults.image_pending_delay = 6.0


def stuck_image(w: World) -> None:
    doc = image("recipe-stuck")
    doc["metadata"]["name"] = "stuck"
    doc["spec"]["build"]["builder"]["snapshotTimeoutSeconds"] = 60
    dep = deployment(0)
    dep["metadata"]["name"] = "stuck"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "stuck"
    w.kube.apply(doc, dep)
    uid = eventually(lambda: (w.kube.get("images.skyfleet.io", "stuck") or {}).get("metadata", {}).get("uid"))
    builder = play_recipe(w, "recipe-stuck")
    eventually(lambda: amis(w, uid), timeout=120, what="the image requested")

    def bake() -> dict[str, Any]:
        status = (w.kube.get("images.skyfleet.io", "stuck") or {}).get("status") or {}
        return dict((status.get("bakes") or [{}])[0])

    eventually(lambda: bake().get("reason") == "SnapshotFailed", timeout=150, what="SnapshotFailed")
    assert "still pending after" in bake()["message"]
    eventually(
        lambda: condition(w.kube.get("images.skyfleet.io", "stuck"), "Degraded") == ("True", "SnapshotFailed"),
        timeout=30,
        what="Degraded SnapshotFailed",
    )
    # The builder is deleted and the partial image deregistered (its snapshots with it).
    eventually(
        lambda: not [vm for vm in builders(w) if vm["InstanceId"] == builder], timeout=60, what="the builder deleted"
    )
    eventually(lambda: amis(w, uid) == [], timeout=60, what="the partial image deregistered")
    failed = [e for e in w.kube.events("BakeFailed") if e["involvedObject"]["name"] == "stuck"]
    assert failed
    assert "SnapshotFailed" in failed[-1]["message"]
    w.kube("delete", "deployments.skyfleet.io", "stuck", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "stuck", "--timeout=120s")


def test_a_failed_recipe_is_builder_failed_naming_only_the_marker_line(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    doc = image("recipe-broken")
    doc["metadata"]["name"] = "broken"
    dep = deployment(0)
    dep["metadata"]["name"] = "broken"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "broken"
    w.kube.apply(doc, dep)

    def builder() -> list[dict[str, Any]]:
        return [
            vm
            for vm in builders(w, ("pending", "running"))
            if "recipe-broken" in w.cloud.user_data(REGION, vm["InstanceId"])
        ]

    [vm] = eventually(builder, timeout=120, what="the builder of the broken recipe")
    # What the builder's console shows when the recipe failed: the recipe's own output (which
    # may echo what it installs) and, last, the line the builder's finish script prints.
    proxy.set_console(
        vm["InstanceId"],
        "cloud-init: running recipe-broken\nexport DB_PASSWORD=hunter2-console-secret\n"
        "E: Unable to locate package nginx\n"
        "skyfleet-bake: recipe failed (cloud-init status 1) hunter2-console-secret\n",
    )

    def bake() -> dict[str, Any]:
        status = (w.kube.get("images.skyfleet.io", "broken") or {}).get("status") or {}
        return dict((status.get("bakes") or [{}])[0])

    eventually(lambda: bake().get("reason") == "BuilderFailed", timeout=120, what="BuilderFailed")
    message = bake()["message"]
    assert "skyfleet-bake: recipe failed (cloud-init status 1)" in message
    assert len(message) <= 1024
    eventually(lambda: not builder(), timeout=60, what="the failed builder deleted")
    eventually(
        lambda: condition(w.kube.get("images.skyfleet.io", "broken"), "Degraded") == ("True", "BuilderFailed"),
        timeout=30,
        what="Degraded BuilderFailed",
    )
    img = w.kube.get("images.skyfleet.io", "broken")
    failed = [e for e in w.kube.events("BakeFailed") if e["involvedObject"]["name"] == "broken"]
    assert failed
    assert "cloud-init status 1" in failed[-1]["message"]
    # Nothing else of the console leaves the cloud: not in status, events or the operator's log.
    for text in (json.dumps(img), json.dumps(w.kube.events()), w.operator.log()):
        assert "hunter2" not in text
        assert "Unable to locate" not in text
    w.kube("delete", "deployments.skyfleet.io", "broken", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "broken", "--timeout=120s")


def test_sharing_cut_short_by_a_crash_is_finished_after_the_restart(world: World, baked: dict[str, Any]) -> None:
    w, proxy = world, baked["proxy"]
    account = "123456789012"
    doc = image("recipe-shared", shareWith=[account])
    doc["metadata"]["name"] = "shared"
    dep = deployment(0)
    dep["metadata"]["name"] = "shared"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "shared"
    # Every share answers 503 until the operator is killed: the bake goes Available unshared.
    proxy.fail_next("ModifyImageAttribute", 10_000)
    w.kube.apply(doc, dep)
    play_recipe(w, "recipe-shared")

    def bake() -> dict[str, Any]:
        status = (w.kube.get("images.skyfleet.io", "shared") or {}).get("status") or {}
        return dict((status.get("bakes") or [{}])[0])

    eventually(lambda: bake().get("phase") == "Available", timeout=120, what="the bake Available")
    eventually(lambda: proxy.count("requests:ModifyImageAttribute") >= 1, timeout=60, what="a share tried")
    assert not bake().get("sharedWith")
    w.operator.kill()
    proxy.reset()
    proxy.faults.image_pending_delay = 6.0
    w.operator.start()

    eventually(lambda: bake().get("sharedWith") == [account], timeout=90, what="the share recorded")
    ami = bake()["imageId"]
    perms = w.cloud.client(REGION).describe_image_attribute(ImageId=ami, Attribute="launchPermission")
    assert [p.get("UserId") for p in perms["LaunchPermissions"]] == [account]
    assert any(e["involvedObject"]["name"] == "shared" for e in w.kube.events("ImageShared"))
    # Recorded, so not asked again.
    asked = proxy.count("requests:ModifyImageAttribute")
    time.sleep(5)
    assert proxy.count("requests:ModifyImageAttribute") == asked
    w.kube("delete", "deployments.skyfleet.io", "shared", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "shared", "--timeout=120s")


def test_the_builder_goes_to_the_subnet_the_image_names(world: World, baked: dict[str, Any]) -> None:
    w = world
    ec2 = w.cloud.client(REGION)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24")["Subnet"]["SubnetId"]
    doc = image("recipe-placed")
    doc["metadata"]["name"] = "placed"
    doc["spec"]["build"]["builder"]["clouds"] = [{"provider": "ec2", "subnet": subnet}]
    dep = deployment(0)
    dep["metadata"]["name"] = "placed"
    dep["spec"]["nodeGroups"][0]["imageRef"] = "placed"
    w.kube.apply(doc, dep)

    def builder() -> list[dict[str, Any]]:
        return [
            vm
            for vm in builders(w, ("pending", "running"))
            if "recipe-placed" in w.cloud.user_data(REGION, vm["InstanceId"])
        ]

    [vm] = eventually(builder, timeout=120, what="the builder of the placed Image")
    assert vm.get("SubnetId") == subnet
    assert not any(e["involvedObject"]["name"] == "placed" for e in w.kube.events("BuilderSubnetIgnored"))
    w.kube("delete", "deployments.skyfleet.io", "placed", "--timeout=60s")
    w.kube("delete", "images.skyfleet.io", "placed", "--timeout=120s")
    assert not builder()
