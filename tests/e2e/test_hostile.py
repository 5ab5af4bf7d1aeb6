"""Hostile manifests of every kind, drawn by hypothesis from a fixed seed (issue 13): each one is
refused at admission naming the field, or admitted and reported on its Ready condition, and
deleted cleanly; the operator logs no traceback and the healthy Deployment beside them stays Ready
on the same VM. bench/hostile.py runs the same harness over 500 and more."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from skyfleet.testing.hostile import Context, Runner, generate, target_deployment
from skyfleet.testing.manifests import deployment, image, node_group
from tests.e2e.operator_fixtures import World, condition, eventually, world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
__all__ = ["world"]

SEED = int(os.environ.get("SKYFLEET_HOSTILE_SEED", "13"))
COUNT = int(os.environ.get("SKYFLEET_HOSTILE_COUNT", "100"))


def scene(w: World) -> None:
    """The healthy shop, its credential and image, and decoys of the same kind in another namespace."""
    shop = deployment("shop", node_group("app", replicas=1, image="xenial", credential="cloud"))
    target = target_deployment(Context(endpoint=w.cloud.endpoint))
    w.kube.apply(*w.credential("cloud", "eu-central-1", w.cloud.endpoint), image("xenial"), shop, target)
    w.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/shop", "--timeout=120s")
    elsewhere = f"{w.kube.namespace}-elsewhere"
    w.kube("create", "namespace", elsewhere, ns=False)
    decoys = [
        *w.credential("elsewhere", "eu-central-1", w.cloud.endpoint),
        image("elsewhere"),
        deployment("elsewhere", node_group("app", replicas=0, image="elsewhere", credential="elsewhere")),
    ]
    for doc in decoys:
        doc["metadata"]["namespace"] = elsewhere
    w.kube(
        "apply",
        "-n",
        elsewhere,
        "-f",
        "-",
        ns=False,
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": decoys}),
    )


def test_hostile_manifests_are_refused_or_reported_and_the_shop_keeps_running(world: World) -> None:
    w = world
    scene(w)
    try:
        runner = Runner(
            kubectl=Path(w.kube.tools_bin) / "kubectl",
            env=w.kube.env,
            namespace=w.kube.namespace,
            operator_log=w.operator.log,
            operator_alive=lambda: w.operator.running,
            report_timeout=90,
        )
        manifests = generate(COUNT, SEED, Context(endpoint=w.cloud.endpoint))
        report = runner.run(manifests, batch=30)
        print(report.summary())
        assert report.defects == [], report.summary()
        assert report.defect_outcomes() == [], report.summary()
        counts = report.counts()
        assert counts["refused"] > 0, counts
        assert counts["reported"] > 0, counts
        # ScalingPolicies are served: admitted ones report like the rest, none is left aside.
        assert counts["unhandled"] == 0, counts
        policies = Counter(o.verdict for o in report.outcomes if o.manifest.kind == "ScalingPolicy")
        assert policies["reported"] > 0, policies
        # Nothing of the hostile ones is left in the cloud: only the shop's VM runs.
        eventually(lambda: len(w.vms("eu-central-1", "us-east-1")) == 1, timeout=120, what="only the shop's VM left")
        assert condition(w.kube.get("deployments.skyfleet.io", "shop")) == ("True", "AllReplicasReady")
    finally:
        w.kube("delete", "namespace", f"{w.kube.namespace}-elsewhere", "--wait=false", ns=False, check=False)
