"""Editing a CloudCredential or rotating its Secret while creates are queued fails none of them.

Every edit makes the operator build a new connector; the one it replaces must let the creates
queued on it finish instead of failing them (which would spend the group's failure budget).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from skyfleet.testing.faultproxy import Faults
from skyfleet.testing.manifests import image
from tests.e2e.operator_fixtures import World, condition, eventually, ordered_deployment, world

pytestmark = pytest.mark.e2e
__all__ = ["world"]

IMAGE = image("xenial")
REPLICAS = 6


def deployment(name: str, credential: str) -> dict[str, Any]:
    return ordered_deployment(name, credential, replicas=REPLICAS, maxProvisioningFailures=1)


def test_credential_and_secret_edits_while_creates_are_queued(world: World) -> None:
    w = world
    # Slow answers and one call at a time: the creates queue up on the credential's connector.
    proxy = w.cloud.proxy()
    proxy.faults = Faults(latency=0.4)
    docs = w.credential("slow", "eu-central-1", proxy.endpoint, limits={"maxConcurrency": 1})
    w.kube.apply(*docs, IMAGE, deployment("queued", "slow"))

    def creating() -> int:
        return sum(
            1
            for i in w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=queued")
            if (i.get("status") or {}).get("phase") == "Creating"
        )

    eventually(lambda: creating() >= 2, timeout=90, what="creates in flight")
    launched_before = proxy.count("launches")
    for round_ in range(3):
        # A spec edit and a key rotation: each gives the credential a new connector.
        w.kube.patch("cloudcredentials.skyfleet.io", "slow", {"spec": {"verifyIntervalSeconds": 60 + round_}})
        w.kube.patch("secret", "slow-keys", {"stringData": {"secretAccessKey": f"rotated-{round_}-value"}})
        time.sleep(1.0)
    assert launched_before < REPLICAS  # the edits came while creates were still queued

    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/queued", "--timeout=240s")
    instances = w.kube.items("instances.skyfleet.io", "skyfleet.io/deployment=queued")
    assert len(instances) == REPLICAS
    assert [(i["status"].get("phase"), i["status"].get("provisioningFailures")) for i in instances] == [
        ("Running", None)
    ] * REPLICAS
    failures = [e for e in w.kube.events() if e["reason"] in ("ProvisioningFailed", "CloudUnavailable")]
    assert failures == []
    assert condition(w.kube.get("deployments.skyfleet.io", "queued"), "Degraded")[0] != "True"
    log = w.operator.log()
    # Neither a closed connector nor its shut-down pool shows up in any create.
    assert "is closed" not in log
    assert "Handler 'provision' failed" not in log
    w.kube("delete", "deployments.skyfleet.io/queued", "--timeout=120s")
