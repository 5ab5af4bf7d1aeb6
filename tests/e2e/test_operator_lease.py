"""One active operator at a time (a Lease), and deletionPolicy Orphan with the orphan sweep."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from skyfleet.testing.net import free_port
from tests.e2e.operator_fixtures import Operator, World, condition, eventually, tags, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]


def app(name: str, replicas: int, **spec: Any) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "Image",
            "metadata": {"name": "xenial"},
            "spec": {"clouds": [{"provider": "ec2", "id": "ami-785db401"}]},
        },
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "app",
                        "replicas": replicas,
                        "imageRef": "xenial",
                        "size": {"cpu": 1, "memoryMiB": 512},
                        "placement": {"targets": [{"credential": "cloud"}]},
                    }
                ],
                **spec,
            },
        },
    ]


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


def test_orphan_policy_leaves_vms_running_and_the_sweep_reports_them(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("cloud", "eu-central-1", w.cloud.endpoint), *app("keep", 1, deletionPolicy="Orphan"))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/keep", "--timeout=120s")
    kept = vms_of(w, "keep")
    assert len(kept) == 1
    w.kube("delete", "deployments.skyfleet.io/keep", "--timeout=90s")
    assert w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=keep") == []
    assert [vm["InstanceId"] for vm in vms_of(w, "keep")] == [kept[0]["InstanceId"]]
    eventually(
        lambda: (w.kube.get("cloudcredentials.skyfleet.io", "cloud")["status"].get("orphanedVms") or 0) >= 1,
        timeout=60,
        what="orphan reported in status",
    )
    assert any(e["involvedObject"]["name"] == "cloud" for e in w.kube.events("OrphanedVMs"))
    assert condition(w.kube.get("cloudcredentials.skyfleet.io", "cloud")) == ("True", "Verified")
    # Reporting is all: the orphan still runs.
    assert len(vms_of(w, "keep")) == 1


def test_credential_and_secret_outlive_the_instances_that_need_them(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("held", "eu-central-1", w.cloud.endpoint))
    app_docs = app("holder", 1)
    app_docs[1]["spec"]["nodeGroups"][0]["placement"]["targets"] = [{"credential": "held"}]
    w.kube.apply(*app_docs)
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/holder", "--timeout=120s")
    w.kube("delete", "cloudcredentials.skyfleet.io/held", "secret/held-keys", "--wait=false")
    time.sleep(5)
    credential = w.kube.get("cloudcredentials.skyfleet.io", "held")
    secret = w.kube.get("secret", "held-keys")
    assert credential is not None
    assert credential["metadata"].get("deletionTimestamp")
    assert secret is not None
    assert secret["metadata"].get("deletionTimestamp")
    # With both still there, the VM can be destroyed when its Deployment goes...
    w.kube("delete", "deployments.skyfleet.io/holder", "--timeout=90s")
    assert vms_of(w, "holder") == []
    # ...and then both follow.
    eventually(
        lambda: (
            w.kube.get("cloudcredentials.skyfleet.io", "held") is None and w.kube.get("secret", "held-keys") is None
        ),
        timeout=60,
        what="credential and Secret gone",
    )
