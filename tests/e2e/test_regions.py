"""One bad region must not stop observation of a credential's other regions (issue 11, item 9)."""

from __future__ import annotations

import pytest

from tests.e2e.operator_fixtures import World, condition, eventually, world
from tests.e2e.test_tenant_input import IMAGE, deployment, group

pytestmark = pytest.mark.e2e
__all__ = ["world"]

GOOD, MISSPELT = "eu-central-1", "eu-centrall-1"


def ready_reason(w: World, name: str) -> tuple[str | None, str | None]:
    return condition(w.kube.get("deployments.skyfleet.io", name))


def test_a_misspelt_region_is_reported_and_the_good_region_carries_on(world: World) -> None:
    w = world
    w.kube.apply(*w.credential("cloud", GOOD, w.cloud.endpoint), IMAGE)
    misplaced = group("app", 2)
    misplaced["placement"]["targets"] = [{"credential": "cloud", "region": MISSPELT}]
    w.kube.apply(deployment("lost", misplaced), deployment("shop", group("app", 1)))

    # The good region: Ready, and a VM removed behind Skyfleet's back is replaced.
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=120s")
    vm = w.kube.get("instances.skyfleet.io", "shop-app-0")["status"]["providerId"]
    w.cloud.client(GOOD).terminate_instances(InstanceIds=[vm])
    eventually(
        lambda: [v for v in w.vms(GOOD) if v["InstanceId"] != vm and "shop" in str(v.get("Tags"))],
        timeout=90,
        what="the terminated VM replaced",
    )
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=120s")

    # The misspelt region: named in the Deployment's condition and the credential's, with an event,
    # and no failure budget spent on it.
    eventually(lambda: ready_reason(w, "lost") == ("False", "RegionUnknown"), timeout=90, what="RegionUnknown")
    dep = w.kube.get("deployments.skyfleet.io", "lost")
    assert MISSPELT in dep["status"]["message"]
    assert all(g["failedProvisions"] == 0 for g in dep["status"]["groups"])
    eventually(
        lambda: (
            condition(w.kube.get("cloudcredentials.skyfleet.io", "cloud"), "RegionsObserved")
            == ("False", "RegionUnknown")
        ),
        timeout=60,
        what="credential RegionsObserved=False",
    )
    cred = w.kube.get("cloudcredentials.skyfleet.io", "cloud")
    regions = next(c for c in cred["status"]["conditions"] if c["type"] == "RegionsObserved")
    assert MISSPELT in regions["message"]
    assert condition(cred) == ("True", "Verified")
    eventually(
        lambda: any(
            e["involvedObject"]["name"] == "cloud" and MISSPELT in e["message"] for e in w.kube.events("RegionUnknown")
        ),
        timeout=30,
        what="RegionUnknown event on the credential",
    )

    # Deleting the misplaced Deployment completes: its Instances never had a VM.
    w.kube("delete", "deployments.skyfleet.io", "lost", "--timeout=60s")
    assert w.kube.items("instances.skyfleet.io", selector="skyfleet.io/deployment=lost") == []
    assert "Traceback" not in w.operator.log()
