"""Ordinary tenant input that must not stop the operator: huge or odd user data, huge error text,
refusals by the API server, placement weights that place nothing (issue 11, items 1, 10, 11, 17)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.operator_fixtures import World, condition, eventually, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

IMAGE = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Image",
    "metadata": {"name": "xenial"},
    "spec": {"clouds": [{"provider": "ec2", "id": "ami-785db401"}]},
}


def deployment(name: str, *groups: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"nodeGroups": list(groups)},
    }


def group(name: str, replicas: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "imageRef": "xenial",
        "size": {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.micro"}},
        "placement": {"targets": [{"credential": "cloud"}]},
        **extra,
    }


def refused(w: World, doc: dict[str, Any]) -> str:
    """kubectl's error when the API server refuses ``doc`` at admission ("" when admitted).

    ``kubectl create``: apply would add its own copy of the object as an annotation, which
    for the largest objects is refused first, before the schema's rules are checked.
    """
    try:
        w.kube("create", "-f", "-", input=json.dumps(doc))
    except AssertionError as exc:
        return str(exc)
    return ""


@pytest.fixture(scope="module")
def cloud(world: World) -> World:
    world.kube.apply(*world.credential("cloud", "eu-central-1", world.cloud.endpoint), IMAGE)
    eventually(
        lambda: condition(world.kube.get("cloudcredentials.skyfleet.io", "cloud")) == ("True", "Verified"),
        timeout=60,
        what="credential verified",
    )
    return world


def test_user_data_over_the_total_bound_is_refused_at_admission(cloud: World) -> None:
    """16 groups x 16 KiB of user data: within each field's limit, too much in total."""
    groups = [{**group(f"g{i}", 0), "userData": "#!/bin/sh\n" + "x" * (16384 - 10)} for i in range(16)]
    error = refused(cloud, deployment("huge", *groups))
    assert "userData of all node groups together must be at most" in error
    assert cloud.kube.get("deployments.skyfleet.io", "huge") is None


def test_a_deployment_with_16k_emoji_of_user_data_is_handled_from_creation_to_deletion(cloud: World) -> None:
    """16 KiB of emoji: as ASCII-escaped JSON, kopf's stock diff base alone would be ~192 KiB; with
    kubectl's last-applied copy the object's annotations would pass 256 KiB and every patch fail."""
    w = cloud
    emoji = "#!/bin/sh\necho '" + "\U0001f680" * 16000 + "'\n"
    w.kube.apply(deployment("emoji", group("app", 1, userData=emoji)))
    # Handled: Instances exist, and the one over EC2's 16 KB user-data limit fails with a reason
    # before any cloud call (and is not replaced again and again).
    eventually(
        lambda: condition(w.kube.get("deployments.skyfleet.io", "emoji"))[1] == "UserDataTooLarge",
        timeout=90,
        what="Deployment says UserDataTooLarge",
    )
    inst = w.kube.get("instances.skyfleet.io", "emoji-app-0")
    assert condition(inst) == ("False", "UserDataTooLarge")
    assert "16384" in inst["status"]["message"]
    # Scaled: down to none, and its Instance goes (its finalizer released too).
    w.kube.json_patch("deployments.skyfleet.io", "emoji", ("replace", "/spec/nodeGroups/0/replicas", 0))
    eventually(
        lambda: w.kube.get("instances.skyfleet.io", "emoji-app-0") is None,
        timeout=60,
        what="scaled to 0 Instances",
    )
    eventually(
        lambda: condition(w.kube.get("deployments.skyfleet.io", "emoji")) == ("True", "AllReplicasReady"),
        timeout=60,
        what="Ready with 0 replicas",
    )
    annotations = w.kube.get("deployments.skyfleet.io", "emoji")["metadata"].get("annotations") or {}
    ours = {k: v for k, v in annotations.items() if k.startswith("skyfleet.io/")}
    assert all(len(v) < 4096 for v in ours.values()), {k: len(v) for k, v in ours.items()}
    # Deleted: the finalizer is released and the object goes.
    w.kube("delete", "deployments.skyfleet.io", "emoji", "--timeout=90s")
    assert w.kube.get("deployments.skyfleet.io", "emoji") is None
    assert w.kube.items("instances.skyfleet.io", selector="skyfleet.io/deployment=emoji") == []
    log = w.operator.log()
    assert "422" not in log
    assert "Too long" not in log
    assert w.vms("eu-central-1") == []


def test_all_placement_weights_zero_is_refused_at_admission(cloud: World) -> None:
    doc = deployment("nowhere", group("app"))
    doc["spec"]["nodeGroups"][0]["placement"]["targets"] = [{"credential": "cloud", "weight": 0}]
    assert "at least one placement target needs a weight above 0" in refused(cloud, doc)


def test_cloud_init_jinja_passes_through_a_raw_block(cloud: World) -> None:
    w = cloud
    user_data = (
        "## template: jinja\n#!/bin/sh\n{{ raw }}echo {{ v1.local_hostname }}{{ endraw }} > /etc/node-{{ instance }}\n"
    )
    w.kube.apply(deployment("jinja", group("app", 1, userData=user_data)))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/jinja", "--timeout=90s")
    vm_id = w.kube.get("instances.skyfleet.io", "jinja-app-0")["status"]["providerId"]
    rendered = w.cloud.user_data("eu-central-1", vm_id)
    assert "echo {{ v1.local_hostname }} > /etc/node-jinja-app-0" in rendered
    w.kube("delete", "deployments.skyfleet.io", "jinja", "--timeout=90s")


def test_a_huge_error_body_still_turns_the_credential_not_ready_with_a_short_safe_message(cloud: World) -> None:
    """An error answer far larger than any status field: Ready must still flip to False, with a
    bounded message that carries nothing of the body's payload."""
    w = cloud
    proxy = w.cloud.proxy()
    canary = "Q0FOQVJZ" * 4000  # base64-looking payload, as user data in a URL would be
    w.kube.apply(*w.credential("noisy", "eu-central-1", proxy.endpoint))
    eventually(
        lambda: condition(w.kube.get("cloudcredentials.skyfleet.io", "noisy")) == ("True", "Verified"),
        timeout=60,
        what="noisy credential verified first",
    )
    proxy.fail_next(
        "DescribeAvailabilityZones",
        count=1000,
        code="AuthFailure",
        status=401,
        # (no "&": the proxy puts the message into its XML answer as it is)
        message=f"denied https://ec2.example/?UserData={canary} " + "detail " * 20000,
    )
    # A spec change makes the verify loop check again at once.
    w.kube.patch("cloudcredentials.skyfleet.io", "noisy", {"spec": {"verifyIntervalSeconds": 61}})
    eventually(
        lambda: condition(w.kube.get("cloudcredentials.skyfleet.io", "noisy")) == ("False", "InvalidCredentials"),
        timeout=60,
        what="Ready=False InvalidCredentials",
    )
    cred = w.kube.get("cloudcredentials.skyfleet.io", "noisy")
    ready = next(c for c in cred["status"]["conditions"] if c["type"] == "Ready")
    assert len(ready["message"]) <= 512
    assert "Q0FOQVJZQ0FOQVJZ" not in json.dumps(cred)
    events = [e for e in w.kube.events() if e["involvedObject"]["name"] == "noisy"]
    assert events
    assert all("Q0FOQVJZQ0FOQVJZ" not in e["message"] and len(e["message"]) <= 1024 for e in events)
    w.kube("delete", "cloudcredentials.skyfleet.io", "noisy", "--timeout=60s")


def test_a_resource_quota_on_instances_ends_as_a_condition(cloud: World) -> None:
    """Runs last in this module: the quota binds every later Instance of the namespace."""
    w = cloud
    w.kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "instances"},
            "spec": {"hard": {"count/instances.skyfleet.io": "1"}},
        }
    )
    eventually(
        lambda: ((w.kube.get("resourcequota", "instances") or {}).get("status") or {}).get("hard"),
        timeout=60,
        what="quota in force",
    )
    w.kube.apply(deployment("quota", group("app", 3)))
    eventually(
        lambda: condition(w.kube.get("deployments.skyfleet.io", "quota")) == ("False", "QuotaExceeded"),
        timeout=90,
        what="Ready=False QuotaExceeded",
    )
    dep = w.kube.get("deployments.skyfleet.io", "quota")
    assert "exceeded quota" in dep["status"]["message"]
    assert len(w.kube.items("instances.skyfleet.io", selector="skyfleet.io/deployment=quota")) == 1
    w.kube("delete", "resourcequota", "instances")
    w.kube("delete", "deployments.skyfleet.io", "quota", "--timeout=90s")
