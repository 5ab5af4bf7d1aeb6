"""No shared default cluster id (issue 11, item 3): an operator started without one derives its
own from this cluster, so VMs of another installation that kept the old default are not ours."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.operator_fixtures import Cloud, Kube, Operator, condition, eventually, kube_env, tags

pytestmark = pytest.mark.e2e

REGION = "eu-central-1"


@pytest.fixture
def setup(control_plane: Any, installed_crds: Any, tmp_path: Path) -> Iterator[tuple[Kube, Cloud, Operator]]:
    from skyfleet.testing.ec2emulator import EC2Emulator

    suffix = uuid.uuid4().hex[:6]
    # Orphans go after 1 s instead of 300 (the CRD's own minimum is 30).
    env = {**kube_env(control_plane), "SKYFLEET_ORPHAN_GRACE": "1"}
    kube = Kube(Path(control_plane.tools_bin), env, f"sf-cid-{suffix}")
    kube("create", "namespace", kube.namespace, ns=False)
    emulator = EC2Emulator()
    emulator.start()
    operator = Operator(kube, None, tmp_path / "operator.log", lease=f"skyfleet-cid-{suffix}")
    try:
        yield kube, Cloud(emulator.endpoint), operator
    finally:
        if operator.proc is None or operator.proc.poll() is not None:
            operator.start()
        kube("delete", "namespace", kube.namespace, "--timeout=120s", ns=False, check=False)
        operator.stop()
        emulator.stop()
        print(f"operator log: {operator.log_path}")


def test_a_vm_with_the_old_default_cluster_id_survives_an_operator_started_without_one(
    setup: tuple[Kube, Cloud, Operator],
) -> None:
    kube, cloud, operator = setup
    ec2 = cloud.client(REGION)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    # Another cluster's VM: the old shared default id, and a namespace name both clusters use.
    planted = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "skyfleet.io/cluster-id", "Value": "skyfleet"},
                    {"Key": "skyfleet.io/namespace", "Value": kube.namespace},
                    {"Key": "skyfleet.io/instance-uid", "Value": str(uuid.uuid4())},
                    {"Key": "skyfleet.io/instance", "Value": "web-app-0"},
                ],
            }
        ],
    )["Instances"][0]["InstanceId"]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "keys"},
            "stringData": {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": "e2e-secret-value-123"},
        },
        {
            "apiVersion": "skyfleet.io/v1alpha1",
            "kind": "CloudCredential",
            "metadata": {"name": "cloud"},
            "spec": {
                "provider": "ec2",
                "region": REGION,
                "secretRef": {"name": "keys"},
                "endpoint": {"url": cloud.endpoint},
                "orphans": {"delete": True},
            },
        },
    )
    operator.start()
    uid = kube("get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}", ns=False).strip()
    eventually(
        lambda: f"using k8s-{uid}, derived from the UID of namespace kube-system" in operator.log(),
        timeout=60,
        what="the derived cluster id announced",
    )
    eventually(
        lambda: condition(kube.get("cloudcredentials.skyfleet.io", "cloud"), "OrphanedVMs")[0] is not None,
        timeout=60,
        what="the credential observed",
    )
    # Many observation periods (1 s each) past the 1 s grace: an orphan of ours would be gone.
    time.sleep(10)
    cred = kube.get("cloudcredentials.skyfleet.io", "cloud")
    assert condition(cred, "OrphanedVMs") == ("False", "NoOrphans") or cred["status"].get("orphanedVms") == 0
    alive = [vm for vm in cloud.vms("skyfleet", REGION) if vm["InstanceId"] == planted]
    assert alive, "the other installation's VM was destroyed"
    assert tags(alive[0])["skyfleet.io/cluster-id"] == "skyfleet"
    assert "OrphanDeleted" not in kube("get", "events", "-o", "jsonpath={.items[*].reason}")
