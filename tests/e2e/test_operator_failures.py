"""Bad input and cloud faults: clear reasons and events, fallbacks, crashes without duplicates or leaks."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from skyfleet.testing.manifests import image as image_of
from tests.e2e.operator_fixtures import World, condition, eventually, ordered_deployment, tags, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

IMAGE = image_of("xenial")


deployment = ordered_deployment


@pytest.fixture(autouse=True)
def image(world: World) -> None:
    """Every test's Deployments boot IMAGE: apply it (unchanged if there) so each test stands alone."""
    world.kube.apply(IMAGE)


def reason_of(w: World, kind: str, name: str, type_: str = "Ready") -> tuple[str | None, str | None]:
    return condition(w.kube.get(kind, name), type_)


def event_for(w: World, name: str, reason: str) -> bool:
    return any(e["involvedObject"]["name"] == name for e in w.kube.events(reason))


def test_missing_secret_is_reported_with_reason_and_event(world: World) -> None:
    w = world
    docs = w.credential("nokeys", "eu-central-1", w.cloud.endpoint)
    w.kube.apply(docs[1])  # the CloudCredential without its Secret
    eventually(
        lambda: reason_of(w, "cloudcredentials.skyfleet.io", "nokeys") == ("False", "SecretNotFound"),
        timeout=60,
        what="SecretNotFound",
    )
    eventually(lambda: event_for(w, "nokeys", "SecretNotFound"), timeout=30, what="SecretNotFound event")
    # Creating the Secret later is picked up without a restart.
    w.kube.apply(docs[0])
    w.kube.patch("cloudcredentials.skyfleet.io", "nokeys", {"spec": {"verifyIntervalSeconds": 30}})
    eventually(
        lambda: reason_of(w, "cloudcredentials.skyfleet.io", "nokeys") == ("True", "Verified"),
        timeout=60,
        what="Verified once the Secret exists",
    )
    assert "e2e-secret-value-123" not in w.operator.log()


def test_unknown_credential_is_reported_with_reason_and_event(world: World) -> None:
    w = world
    w.kube.apply(IMAGE, deployment("orphaned-ref", "no-such-credential"))
    eventually(
        lambda: reason_of(w, "deployments.skyfleet.io", "orphaned-ref") == ("False", "CredentialNotFound"),
        timeout=60,
        what="CredentialNotFound",
    )
    eventually(lambda: event_for(w, "orphaned-ref", "CredentialNotFound"), timeout=30, what="event")
    assert w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=orphaned-ref") == []
    w.kube("delete", "deployments.skyfleet.io/orphaned-ref", "--timeout=60s")


def test_image_without_a_match_is_reported_with_reason_and_event(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("plain", "eu-central-1", w.cloud.endpoint))
    image = {
        **IMAGE,
        "metadata": {"name": "nowhere"},
        "spec": {"clouds": [{"provider": "ec2", "lookup": {"namePattern": "no-such-image-*", "owner": "self"}}]},
    }
    w.kube.apply(image, deployment("needs-image", "plain", image="nowhere", maxProvisioningFailures=1))
    eventually(
        lambda: reason_of(w, "images.skyfleet.io", "nowhere") == ("False", "NoMatch"),
        timeout=60,
        what="Image NoMatch",
    )
    eventually(lambda: event_for(w, "nowhere", "NoMatch"), timeout=30, what="NoMatch event")
    eventually(
        lambda: (
            reason_of(w, "deployments.skyfleet.io", "needs-image", "Degraded")
            == ("True", "ProvisioningFailuresExceeded")
        ),
        timeout=90,
        what="Deployment degraded after its failure budget",
    )
    failed = w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=needs-image")
    assert [condition(i) for i in failed] == [("False", "ImageNotFound")]
    assert w.vms() == []
    w.kube("delete", "deployments.skyfleet.io/needs-image", "--timeout=60s")


@pytest.mark.parametrize(
    ("code", "reason"),
    [("InstanceLimitExceeded", "QuotaExceeded"), ("InsufficientInstanceCapacity", "CapacityUnavailable")],
)
def test_quota_or_capacity_error_on_the_first_target_falls_back_to_the_second(
    world: World, code: str, reason: str
) -> None:
    w = world
    name = f"fallback-{reason.lower()}"
    proxy = w.cloud.proxy()
    proxy.fail_next("RunInstances", count=50, code=code, status=400)
    w.kube.apply(
        IMAGE,
        *w.credential("full", "eu-central-1", proxy.endpoint),
        *w.credential("spare", "us-east-1", w.cloud.endpoint),
        deployment(name, "full", "spare"),
    )
    # Well within the resync period (20 s here): the fallback must not wait for it, also when
    # the second credential is verified only after the first target failed.
    w.kube("wait", "--for=condition=Ready", f"deployments.skyfleet.io/{name}", "--timeout=15s")
    assert proxy.count("errors") >= 1
    vms = [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == name]
    # The failed Instance's name may be reused once it is gone: where the one VM runs is what counts.
    assert [vm["Placement"]["AvailabilityZone"][:-1] for vm in vms] == ["us-east-1"]
    instances = w.kube.items("instances.skyfleet.io", f"skyfleet.io/deployment={name}")
    assert [(i["metadata"]["name"], i["spec"]["credential"]) for i in instances] == [
        (tags(vms[0])["skyfleet.io/instance"], "spare")
    ]
    assert event_for(w, name, "PlacementFallback")
    assert event_for(w, f"{name}-app-0", reason)
    w.kube("delete", f"deployments.skyfleet.io/{name}", "--timeout=60s")
    assert [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == name] == []


def test_max_instances_on_the_first_target_sends_the_rest_to_the_second(world: World) -> None:
    w = world
    w.kube.apply(
        *w.credential("capped", "eu-central-1", w.cloud.endpoint, limits={"maxInstances": 1}),
        *w.credential("spare", "us-east-1", w.cloud.endpoint),
        deployment("capped-app", "capped", "spare", replicas=3),
    )
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/capped-app", "--timeout=120s")
    vms = [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == "capped-app"]
    regions = sorted(vm["Placement"]["AvailabilityZone"][:-1] for vm in vms)
    assert regions == ["eu-central-1", "us-east-1", "us-east-1"]
    w.kube("delete", "deployments.skyfleet.io/capped-app", "--timeout=60s")


def test_vms_of_ours_without_an_instance_fill_max_instances_and_the_create_falls_back(world: World) -> None:
    # Placement counts Instances and sees room; the connector counts every VM of ours on the
    # credential, these two that no Instance records too, and refuses: QuotaExceeded, fallback.
    w = world
    ec2 = w.cloud.client("eu-central-1")
    present = len(w.vms("eu-central-1"))
    planted = [
        ec2.run_instances(
            ImageId="ami-785db401",
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [
                        {"Key": "skyfleet.io/cluster-id", "Value": w.cluster_id},
                        {"Key": "skyfleet.io/deployment", "Value": "no-such-deployment"},
                        {"Key": "skyfleet.io/instance-uid", "Value": f"planted-{n}"},
                    ],
                }
            ],
        )["Instances"][0]["InstanceId"]
        for n in range(2)
    ]
    try:
        w.kube.apply(
            *w.credential("full-of-orphans", "eu-central-1", w.cloud.endpoint, limits={"maxInstances": present + 2}),
            *w.credential("spare", "us-east-1", w.cloud.endpoint),
            deployment("orphaned-room", "full-of-orphans", "spare"),
        )
        w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/orphaned-room", "--timeout=120s")
        vms = [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == "orphaned-room"]
        assert [vm["Placement"]["AvailabilityZone"][:-1] for vm in vms] == ["us-east-1"]
        assert event_for(w, "orphaned-room", "PlacementFallback")
        assert event_for(w, "orphaned-room-app-0", "QuotaExceeded")
        w.kube("delete", "deployments.skyfleet.io/orphaned-room", "--timeout=60s")
    finally:
        ec2.terminate_instances(InstanceIds=planted)


def test_sigkill_mid_provisioning_then_restart_leaves_no_duplicate_and_no_leak(world: World) -> None:
    w = world
    proxy = w.cloud.proxy()
    # EC2-like: one launch every two seconds, so the kill lands while creates are in flight;
    # the proxy deduplicates ClientTokens as EC2 does.
    proxy.throttle("RunInstances", burst=1, rate=0.5)
    w.kube.apply(*w.credential("slow", "eu-central-1", proxy.endpoint), deployment("crashy", "slow", replicas=4))
    eventually(lambda: proxy.count("launches") >= 2, timeout=90, interval=0.1, what="two launches")
    w.operator.kill()
    recorded = [
        i
        for i in w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=crashy")
        if (i.get("status") or {}).get("providerId")
    ]
    assert len(recorded) < 4, "the operator finished before the kill; the test proves nothing"
    time.sleep(2)
    w.operator.start()
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/crashy", "--timeout=180s")
    instances = w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=crashy")
    vms = [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == "crashy"]
    assert len(instances) == 4
    assert len(vms) == 4, f"duplicates or leaks: {[tags(vm)['skyfleet.io/instance'] for vm in vms]}"
    by_uid = {tags(vm)["skyfleet.io/instance-uid"]: vm["InstanceId"] for vm in vms}
    assert by_uid == {i["metadata"]["uid"]: i["status"]["providerId"] for i in instances}


def test_vm_terminated_out_of_band_is_replaced(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("spare", "us-east-1", w.cloud.endpoint), deployment("drift", "spare"))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/drift", "--timeout=120s")
    [vm] = [vm for vm in w.vms() if tags(vm)["skyfleet.io/deployment"] == "drift"]
    w.cloud.client("us-east-1").terminate_instances(InstanceIds=[vm["InstanceId"]])

    def replaced() -> list[dict[str, Any]] | None:
        vms = [v for v in w.vms() if tags(v)["skyfleet.io/deployment"] == "drift"]
        ready = reason_of(w, "deployments.skyfleet.io", "drift") == ("True", "AllReplicasReady")
        return vms if ready and len(vms) == 1 and vms[0]["InstanceId"] != vm["InstanceId"] else None

    [new] = eventually(replaced, timeout=120, what="a replacement VM")
    # A new Instance (its name may reuse the freed ordinal once the lost one is gone).
    assert tags(new)["skyfleet.io/instance-uid"] != tags(vm)["skyfleet.io/instance-uid"]
    assert event_for(w, "drift-app-0", "VMLost")
    assert event_for(w, "drift", "ReplacingLostVM")


def test_a_rotated_secret_takes_effect_without_a_restart(world: World) -> None:
    w = world
    proxy = w.cloud.proxy()
    proxy.faults.accepted_keys = frozenset({"AKIAROTATED"})  # the old key was revoked
    w.kube.apply(*w.credential("rotating", "eu-central-1", proxy.endpoint, verifyIntervalSeconds=30))
    eventually(
        lambda: reason_of(w, "cloudcredentials.skyfleet.io", "rotating") == ("False", "InvalidCredentials"),
        timeout=60,
        what="InvalidCredentials",
    )
    assert event_for(w, "rotating", "InvalidCredentials")
    assert w.operator.proc is not None
    operator = w.operator.proc

    w.kube.patch("secret", "rotating-keys", {"stringData": {"accessKeyId": "AKIAROTATED"}})
    # Read again at the next verification (at most verifyIntervalSeconds later), no restart.
    eventually(
        lambda: reason_of(w, "cloudcredentials.skyfleet.io", "rotating") == ("True", "Verified"),
        timeout=60,
        what="Verified with the rotated key",
    )
    assert w.operator.proc is operator
    assert operator.poll() is None  # the same process, still running
    # Neither key's secret half shows up anywhere a user could read it.
    shown = json.dumps(w.kube.get("cloudcredentials.skyfleet.io", "rotating")) + json.dumps(w.kube.events())
    assert "e2e-secret-value-123" not in shown


def test_deleting_the_namespace_destroys_every_vm(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("spare", "us-east-1", w.cloud.endpoint), deployment("last", "spare", replicas=2))
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/last", "--timeout=120s")
    assert w.vms()
    # Secrets, CloudCredentials, Deployments and Instances all go at once; the Secrets must
    # outlive the Instances, or the VMs could not be destroyed.
    w.kube("delete", "namespace", w.kube.namespace, "--timeout=180s", ns=False)
    assert w.vms() == []
