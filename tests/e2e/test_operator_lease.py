"""One active operator at a time (a Lease), and deletionPolicy Orphan with the orphan sweep."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from skyfleet.testing.manifests import deployment, image
from skyfleet.testing.net import free_port
from tests.e2e.operator_fixtures import Operator, World, condition, eventually, tags, world
from tests.e2e.operator_fixtures import small_group as group

pytestmark = pytest.mark.e2e
__all__ = ["world"]


def app(name: str, replicas: int, **spec: Any) -> list[dict[str, Any]]:
    return [image("xenial"), deployment(name, group(replicas, "cloud"), **spec)]


def probe(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback only
            status: int = answer.status
            return status
    except (OSError, urllib.error.HTTPError):
        return None


def vms_of(w: World, deployment: str) -> list[dict[str, Any]]:
    return [vm for vm in w.vms("eu-central-1") if tags(vm)["skyfleet.io/deployment"] == deployment]


def test_a_second_operator_waits_and_takes_over_when_the_first_dies(
    world: World, tmp_path_factory: pytest.TempPathFactory
) -> None:
    w = world
    # The module's operator must hold the Lease first, or the "standby" would simply win the race.
    eventually(lambda: "acquired the lease" in w.operator.log(), timeout=60, what="first operator leading")
    standby = Operator(w.kube, w.cluster_id, tmp_path_factory.mktemp("standby") / "standby.log", w.operator.lease)
    liveness = f"http://127.0.0.1:{free_port()}/healthz"
    standby.start("--liveness", liveness)
    try:
        eventually(lambda: "waiting for the lease" in standby.log(), timeout=60, what="standby waiting")
        # A waiting standby is alive: its probe passes, so the kubelet leaves it be.
        assert probe(liveness) == 200
        w.kube.apply(*w.credential("cloud", "eu-central-1", w.cloud.endpoint), *app("web", 1))
        w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/web", "--timeout=120s")
        assert "operator starting" not in standby.log()

        w.operator.kill()
        eventually(lambda: "acquired the lease" in standby.log(), timeout=60, what="standby took the lease")
        # Now kopf itself answers the probe on the same endpoint.
        eventually(lambda: probe(liveness) == 200 or None, timeout=60, what="leader's liveness endpoint")
        w.kube.json_patch("deployments.skyfleet.io", "web", ("replace", "/spec/nodeGroups/0/replicas", 2))
        eventually(lambda: len(vms_of(w, "web")) == 2, timeout=120, what="the standby scales")
        w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/web", "--timeout=120s")
    finally:
        # From here on the standby is the operator the module tears down with.
        w.operator.kill()
        w.operator = standby


def plant_orphan(w: World, region: str) -> str:
    """A VM carrying this cluster's owner tags for an Instance that never existed here."""
    tagged = {
        "skyfleet.io/cluster-id": w.cluster_id,
        "skyfleet.io/namespace": w.kube.namespace,
        "skyfleet.io/deployment": "ghost",
        "skyfleet.io/instance": "ghost-app-0",
        "skyfleet.io/instance-uid": str(uuid.uuid4()),
    }
    answer = w.cloud.client(region).run_instances(
        ImageId="ami-785db401",
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tagged.items()]}],
    )
    instance_id: str = answer["Instances"][0]["InstanceId"]
    return instance_id


def vm_by_id(w: World, region: str, instance_id: str) -> dict[str, Any]:
    reservations = w.cloud.client(region).describe_instances(InstanceIds=[instance_id])["Reservations"]
    vm: dict[str, Any] = reservations[0]["Instances"][0]
    return vm


def test_orphan_policy_releases_vms_and_the_sweep_reports_then_deletes_orphans(world: World) -> None:
    w = world
    region = "eu-central-1"
    w.kube.apply(*w.credential("cloud", region, w.cloud.endpoint), *app("keep", 1, deletionPolicy="Orphan"))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/keep", "--timeout=120s")
    kept = vms_of(w, "keep")
    assert len(kept) == 1
    kept_id = kept[0]["InstanceId"]
    w.kube("delete", "deployments.skyfleet.io/keep", "--timeout=90s")
    assert w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=keep") == []
    # deletionPolicy Orphan: the VM runs on, released from this cluster's owner tags but still
    # saying where it came from.
    vm = vm_by_id(w, region, kept_id)
    assert vm["State"]["Name"] == "running"
    assert "skyfleet.io/cluster-id" not in tags(vm)
    assert "skyfleet.io/instance-uid" not in tags(vm)
    assert tags(vm)["skyfleet.io/deployment"] == "keep"
    assert any(e["involvedObject"]["name"].startswith("keep-") for e in w.kube.events("VMOrphaned"))

    # A VM tagged for this cluster and namespace whose Instance is gone is an orphan: reported
    # (status, condition, event), and by default left alone.
    ghost = plant_orphan(w, region)

    def credential() -> dict[str, Any]:
        obj: dict[str, Any] = w.kube.get("cloudcredentials.skyfleet.io", "cloud")
        return obj

    eventually(
        lambda: condition(credential(), "OrphanedVMs") == ("True", "OrphansFound"),
        timeout=60,
        what="OrphanedVMs condition",
    )
    assert credential()["status"]["orphanedVms"] == 1  # the released VM is not counted
    assert any(ghost in e["message"] for e in w.kube.events("OrphanedVMs"))
    assert condition(credential()) == ("True", "Verified")
    time.sleep(3)
    assert vm_by_id(w, region, ghost)["State"]["Name"] == "running"

    # Opting in deletes it once it has stayed an orphan for the grace period; the released VM
    # is never touched.
    w.kube.patch(
        "cloudcredentials.skyfleet.io", "cloud", {"spec": {"orphans": {"delete": True, "gracePeriodSeconds": 30}}}
    )
    eventually(
        lambda: vm_by_id(w, region, ghost)["State"]["Name"] in ("shutting-down", "terminated"),
        timeout=90,
        what="the orphan deleted",
    )
    eventually(
        lambda: condition(credential(), "OrphanedVMs") == ("False", "NoOrphans"),
        timeout=30,
        what="no orphans left",
    )
    assert credential()["status"]["orphanedVms"] == 0
    assert any(ghost in e["message"] for e in w.kube.events("OrphanDeleted"))
    assert vm_by_id(w, region, kept_id)["State"]["Name"] == "running"


def test_credential_and_secret_outlive_the_instances_that_need_them(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("held", "eu-central-1", w.cloud.endpoint))
    app_docs = app("holder", 1)
    app_docs[1]["spec"]["nodeGroups"][0]["placement"]["targets"] = [{"credential": "held"}]
    w.kube.apply(*app_docs)
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/holder", "--timeout=120s")
    w.kube("delete", "cloudcredentials.skyfleet.io/held", "--wait=false")
    # The Secret cannot even be marked for deletion while a CloudCredential names it (the
    # admission policy installed with the CRDs).
    with pytest.raises(AssertionError, match="holds the keys of CloudCredential held"):
        w.kube("delete", "secret/held-keys", "--wait=false")
    time.sleep(5)
    credential = w.kube.get("cloudcredentials.skyfleet.io", "held")
    secret = w.kube.get("secret", "held-keys")
    assert credential is not None
    assert credential["metadata"].get("deletionTimestamp")
    assert secret is not None
    assert not secret["metadata"].get("deletionTimestamp")
    # With both still there, the VM can be destroyed when its Deployment goes...
    w.kube("delete", "deployments.skyfleet.io/holder", "--timeout=90s")
    assert vms_of(w, "holder") == []
    # ...then the credential follows, and the Secret may go.
    eventually(lambda: w.kube.get("cloudcredentials.skyfleet.io", "held") is None, timeout=60, what="credential gone")
    w.kube("delete", "secret/held-keys", "--timeout=30s")
