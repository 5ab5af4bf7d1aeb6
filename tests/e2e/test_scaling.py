"""Tiers that scale themselves: ScalingPolicies over a real Prometheus, moving real Instances and VMs.

One operator (evaluating every second), one moto EC2 behind a fault proxy, one Prometheus scraping a
load exporter every second serve the module; tests run in file order. The exporter's series carry
the test namespace as their ``namespace`` label, and another tenant's ``web_load`` (1000) is served
beside them throughout: a policy that read it would scale every group to its maximum. Windows are a few seconds
(set in each policy's spec) so the module stays short. The Deployment's manifest is never written:
``kubectl diff`` of it stays empty throughout.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from skyfleet.reconcile.scaling_scope import scope_query
from skyfleet.testing.prometheus import LoadExporter, Prometheus
from tests.e2e.operator_fixtures import World, condition, eventually, tags, world
from tests.unit.test_reconcile_scaling_scope import REWRITTEN

pytestmark = pytest.mark.e2e
__all__ = ["world"]

SP = "scalingpolicies.skyfleet.io"
NANO = {"cpu": 1, "memoryMiB": 512, "instanceTypes": {"ec2": "t3.nano"}}
MICRO = {"cpu": 1, "memoryMiB": 1024, "instanceTypes": {"ec2": "t3.micro"}}


def group(name: str, replicas: int) -> dict[str, Any]:
    return {
        "name": name,
        "replicas": replicas,
        "imageRef": "xenial",
        "size": NANO,
        "placement": {"targets": [{"credential": "elastic"}]},
        "rollout": {"maxSurge": 1, "maxUnavailable": 0},
    }


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "Deployment",
    "metadata": {"name": "elastic"},
    "spec": {"nodeGroups": [group("web", 1), group("api", 1), group("batch", 2)]},
}


def policy(name: str, group: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": name},
        "spec": {"target": {"deployment": "elastic", "group": group}, **spec},
    }


OTHER_TENANT_LOAD = 1000.0


class TenantLoad(LoadExporter):
    """A load exporter whose series belong to one namespace (label ``namespace``), as a shared
    Prometheus's series do when it scrapes many tenants' pods."""

    namespace = ""

    def set(self, name: str, value: float, **labels: str) -> None:
        super().set(name, value, **{"namespace": self.namespace, **labels})


def mine(w: World, promql: str) -> str:
    """``promql`` confined to the test namespace, for the test's own look at Prometheus."""
    return scope_query(promql, w.kube.namespace)


@pytest.fixture(scope="module")
def elastic(world: World) -> Iterator[tuple[World, LoadExporter, Prometheus]]:
    with TenantLoad() as load, Prometheus(targets=[load.target]) as prom:
        load.namespace = world.kube.namespace
        load.set("web_load", OTHER_TENANT_LOAD, namespace="other-tenant")
        load.set("web_load", 5.0)
        load.set("batch_latency", 0.2)
        load.set("shards", 1.0, shard="a")
        load.set("shards", 2.0, shard="b")
        prom.wait_for(mine(world, "web_load"), lambda v: v == 5.0)
        prom.wait_for('web_load{namespace="other-tenant"}', lambda v: v == OTHER_TENANT_LOAD)
        world.operator.stop()
        world.operator.start("--prometheus-url", prom.url, "--scaling-period", "1")
        proxy = world.cloud.proxy()
        world.kube.apply(
            *world.credential("elastic", "eu-central-1", proxy.endpoint),
            {
                "apiVersion": "skyfleet.io/v1alpha1",
                "kind": "Image",
                "metadata": {"name": "xenial"},
                "spec": {"clouds": [{"provider": "ec2", "id": "ami-785db401"}]},
            },
            DEPLOYMENT,
        )
        world.kube("wait", "--for=condition=Ready", "deployments.skyfleet.io/elastic", "--timeout=120s")
        yield world, load, prom


def live(w: World, group: str) -> list[dict[str, Any]]:
    items = w.kube.items("instances.skyfleet.io", f"skyfleet.io/deployment=elastic,skyfleet.io/group={group}")
    return [i for i in items if not i["metadata"].get("deletionTimestamp")]


def ready(w: World, group: str) -> int:
    return sum(1 for i in live(w, group) if condition(i)[0] == "True")


def status(w: World, name: str) -> dict[str, Any]:
    return (w.kube.get(SP, name) or {}).get("status") or {}


def events(w: World, reason: str, name: str) -> list[str]:
    return [
        e.get("message", "")
        for e in w.kube.events(reason)
        if e["involvedObject"]["kind"] == "ScalingPolicy" and e["involvedObject"]["name"] == name
    ]


def manifest_unchanged(w: World) -> bool:
    """`kubectl diff` of the Deployment as applied: exit 0 and no output, so Git sees no drift."""
    proc = subprocess.run(
        [str(w.kube.tools_bin / "kubectl"), "-n", w.kube.namespace, "diff", "-f", "-"],
        input=json.dumps(DEPLOYMENT),
        capture_output=True,
        text=True,
        env=w.kube.env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl diff of the Deployment shows drift: {proc.stdout or proc.stderr}"
    return True


def test_load_above_target_scales_out_to_max_and_back_in_after_the_window(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    w, load, prom = elastic
    w.kube.apply(
        policy(
            "web",
            "web",
            minReplicas=1,
            maxReplicas=4,
            metrics=[{"name": "load", "query": "sum(web_load)", "target": {"averageValue": 10}}],
            behavior={"scaleDown": {"stabilizationWindowSeconds": 8}},
        )
    )
    # 5 per VM is within [1, 4] and below target: the group stays at its spec's single VM.
    eventually(lambda: condition(w.kube.get(SP, "web")) == ("True", "WithinTolerance") or None, 30, what="evaluated")
    assert status(w, "web")["desiredReplicas"] == 1
    assert status(w, "web")["selector"] == "skyfleet.io/deployment=elastic,skyfleet.io/group=web"

    load.set("web_load", 30.0)  # ceil(30 / 10) = 3
    eventually(lambda: len(live(w, "web")) == 3, 60, what="web scaled out to 3")
    load.set("web_load", 100.0)  # ceil(100 / 10) = 10, bounded to maxReplicas 4
    eventually(lambda: ready(w, "web") == 4, 90, what="web at maxReplicas 4, all running")
    # status.replicas counts the group's Instances at the next evaluation.
    s = eventually(lambda: (s := status(w, "web"))["replicas"] == 4 and s, 10, what="status counts 4")
    assert s["desiredReplicas"] == 4
    assert s["lastDecision"]["replicas"] == 4
    assert s["lastDecision"]["previousReplicas"] == 3
    assert [m["name"] for m in s["metrics"]] == ["load"]
    assert s["metrics"][0]["value"] == 100.0
    dep = w.kube.get("deployments.skyfleet.io", "elastic")
    web = next(g for g in dep["status"]["groups"] if g["name"] == "web")
    assert (web["desiredReplicas"], web["scalingPolicy"]) == (4, "web")
    assert any("1 -> 3 replicas" in m for m in events(w, "ScaledOut", "web"))
    assert any("3 -> 4 replicas" in m for m in events(w, "ScaledOut", "web"))
    time.sleep(3)
    assert len(live(w, "web")) == 4, "no more than maxReplicas"

    load.set("web_load", 10.0)  # 1 VM's worth, but only after the 8 s scale-down window
    prom.wait_for(mine(w, "sum(web_load)"), lambda v: v == 10.0)
    seen = time.monotonic()
    eventually(lambda: status(w, "web").get("desiredReplicas") == 1 or None, 60, interval=0.25, what="scale-in")
    waited = time.monotonic() - seen
    assert waited >= 4, f"scaled in {waited:.1f}s after the load fell, inside the 8 s window"
    eventually(lambda: len(live(w, "web")) == 1, 60, what="web back to 1 VM")
    assert any("4 -> 1 replicas" in m for m in events(w, "ScaledIn", "web"))
    assert manifest_unchanged(w)


def test_prometheus_down_changes_nothing_and_says_so_then_recovers(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    w, load, prom = elastic
    before = status(w, "web")["desiredReplicas"]
    prom.stop()
    try:
        eventually(lambda: condition(w.kube.get(SP, "web")) == ("False", "MetricUnavailable"), 30, what="down")
        load.set("web_load", 100.0)  # unseen: nothing may move on missing data
        time.sleep(3)
        assert status(w, "web")["desiredReplicas"] == before
        assert status(w, "web")["metrics"][0]["reason"] == "MetricUnavailable"
        assert events(w, "MetricUnavailable", "web")
    finally:
        prom.start()
    eventually(lambda: condition(w.kube.get(SP, "web"))[0] == "True" or None, 60, what="recovered")
    load.set("web_load", 10.0)
    assert manifest_unchanged(w)


def desired_over(w: World, name: str, seconds: float) -> list[int]:
    """The policy's desiredReplicas, sampled every half second for ``seconds``."""
    seen: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.append(status(w, name)["desiredReplicas"])
        time.sleep(0.5)
    return seen


def test_a_noisy_signal_across_the_target_inside_the_window_causes_no_reversal(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    w, load, prom = elastic
    load.set("web_load", 10.0)
    # Prometheus may have scraped the earlier test's 100 after its restart: wait until the policy
    # has read the 10 (the latest sample) and is back at 1, so the window starts from a quiet group.
    prom.wait_for(mine(w, "sum(web_load)"), lambda v: v == 10.0)
    eventually(
        lambda: ((s := status(w, "web"))["metrics"][0].get("value") == 10.0 and s["desiredReplicas"] == 1) or None,
        60,
        what="web at 1 on a load of 10",
    )
    scaled_in = len(events(w, "ScaledIn", "web"))
    # 25 wants 3 VMs, 12 wants 2: the signal crosses back and forth every 2 s, inside the 8 s window.
    seen: list[int] = []
    for value in (25.0, 12.0) * 4:
        load.set("web_load", value)
        seen += desired_over(w, "web", 2)
    assert max(seen) == 3
    assert seen == sorted(seen), f"the group went back down inside the window: {seen}"
    assert len(events(w, "ScaledIn", "web")) == scaled_in


def test_after_a_restart_scale_in_still_waits_for_the_window(elastic: tuple[World, LoadExporter, Prometheus]) -> None:
    """The decision's memory is lost with the process; the next one rebuilds it from status so
    that a restart can delay a scale-in but never hasten one."""
    w, load, prom = elastic
    w.kube.patch(SP, "web", {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 15}}}})
    load.set("web_load", 25.0)
    eventually(lambda: status(w, "web").get("desiredReplicas") == 3 or None, 30, what="web at 3")
    time.sleep(2)  # the recommendations of 3 are in the old process's memory only
    w.operator.stop()
    load.set("web_load", 5.0)  # only the new process sees the load fall
    prom.wait_for(mine(w, "sum(web_load)"), lambda v: v == 5.0)
    w.operator.start("--prometheus-url", prom.url, "--scaling-period", "1")
    # The new process's first evaluation writes the new value; it must not scale in with it.
    first = eventually(
        lambda: (s := status(w, "web"))["metrics"][0]["value"] == 5.0 and s, 90, interval=0.25, what="re-evaluated"
    )
    evaluated = time.monotonic()
    assert first["desiredReplicas"] == 3, "the first evaluation after the restart scaled in at once"
    held = desired_over(w, "web", 8)
    assert set(held) == {3}, f"scaled in {time.monotonic() - evaluated:.0f}s after the restart, inside the window"
    eventually(lambda: status(w, "web").get("desiredReplicas") == 1 or None, 60, what="scale-in after the window")
    w.kube.patch(SP, "web", {"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 8}}}})
    load.set("web_load", 10.0)
    assert manifest_unchanged(w)


def test_kubectl_scale_moves_a_policy_without_rules_clamped_and_a_second_policy_conflicts(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    w, _, _ = elastic
    w.kube.apply(policy("api", "api", minReplicas=1, maxReplicas=3))
    eventually(lambda: status(w, "api").get("desiredReplicas") == 1 or None, 30, what="api evaluated")
    w.kube("scale", f"{SP}/api", "--replicas=2")
    eventually(lambda: len(live(w, "api")) == 2, 60, what="api scaled to 2 by kubectl scale")
    w.kube("scale", f"{SP}/api", "--replicas=9")
    eventually(lambda: status(w, "api").get("desiredReplicas") == 3 or None, 30, what="clamped to 3")
    eventually(lambda: len(live(w, "api")) == 3, 60, what="api at maxReplicas 3")
    raw = f"/apis/skyfleet.io/v1alpha1/namespaces/{w.kube.namespace}/scalingpolicies/api/scale"
    # status.replicas counts the group's Instances at the next evaluation (every second here).
    eventually(lambda: json.loads(w.kube("get", "--raw", raw, ns=False))["status"]["replicas"] == 3, 10, what="3")
    scale = json.loads(w.kube("get", "--raw", raw, ns=False))
    assert scale["spec"]["replicas"] == 9
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "skyfleet.io/deployment=elastic,skyfleet.io/group=api"

    w.kube.apply(policy("api-second", "api", minReplicas=1, maxReplicas=1))
    eventually(lambda: condition(w.kube.get(SP, "api-second")) == ("False", "Conflict"), 30, what="Conflict")
    time.sleep(2)
    assert len(live(w, "api")) == 3, "the second policy does nothing"
    assert "desiredReplicas" not in status(w, "api-second")

    # Deleting the policy returns the group to its spec (1 replica); the other then governs it.
    w.kube("delete", SP, "api-second")
    w.kube("delete", SP, "api")
    eventually(lambda: len(live(w, "api")) == 1, 60, what="api back to its spec")
    assert manifest_unchanged(w)


def test_bad_query_target_and_url_are_conditions(elastic: tuple[World, LoadExporter, Prometheus]) -> None:
    w, _, _ = elastic
    w.kube.apply(
        policy("shards", "api", maxReplicas=3, metrics=[{"name": "s", "query": "shards", "target": {"value": 1}}]),
        policy("nowhere", "db", maxReplicas=3),
        policy(
            "internal",
            "batch",
            maxReplicas=3,
            prometheus={"url": "http://169.254.169.254:9090"},
            metrics=[{"name": "s", "query": "up", "target": {"value": 1}}],
        ),
    )
    eventually(lambda: condition(w.kube.get(SP, "shards")) == ("False", "QueryInvalid"), 30, what="QueryInvalid")
    assert "2 series" in status(w, "shards")["conditions"][0]["message"]
    eventually(lambda: condition(w.kube.get(SP, "nowhere")) == ("False", "TargetNotFound"), 30, what="no group")
    eventually(lambda: condition(w.kube.get(SP, "internal")) == ("False", "EndpointNotAllowed"), 30, what="refused URL")
    assert len(live(w, "api")) == 1
    for name in ("shards", "nowhere", "internal"):
        w.kube("delete", SP, name)


def test_a_policy_reads_only_its_own_namespace_on_the_shared_prometheus(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    """Design invariant 8: the operator's Prometheus serves every namespace, so a policy's query
    is confined to its own; one naming another namespace is not sent, and says which selector."""
    w, load, prom = elastic
    load.set("web_load", 10.0)
    prom.wait_for(mine(w, "web_load"), lambda v: v == 10.0)
    rules = [
        # sum(web_load) over the whole Prometheus is 1010: the policy must see its own 10
        {"name": "own", "query": "sum(web_load)", "target": {"averageValue": 1000}},
        {"name": "theirs", "query": 'sum(web_load{namespace="other-tenant"})', "target": {"value": 1}},
        {"name": "any", "query": 'max(web_load{namespace=~".+"})', "target": {"value": 1}},
        {"name": "up", "query": "count(up)", "target": {"value": 1}},  # scrape targets carry no namespace
    ]
    w.kube.apply(policy("peek", "api", maxReplicas=3, metrics=rules))
    eventually(lambda: condition(w.kube.get(SP, "peek")) == ("False", "QueryNotScoped"), 30, what="refused")
    s = eventually(lambda: (s := status(w, "peek")).get("metrics") and len(s["metrics"]) == 4 and s, 30, what="read")
    seen = {m["name"]: m for m in s["metrics"]}
    assert seen["own"]["value"] == 10.0, f"the policy saw {seen['own'].get('value')}, not its own 10"
    assert (seen["theirs"].get("value"), seen["theirs"]["reason"]) == (None, "QueryNotScoped")
    assert (seen["any"].get("value"), seen["any"]["reason"]) == (None, "QueryNotScoped")
    assert (seen["up"].get("value"), seen["up"]["reason"]) == (None, "NoData")
    message = next(c["message"] for c in s["conditions"] if c["type"] == "Ready")
    assert 'web_load{namespace="other-tenant"}' in message
    assert all((m.get("value") or 0) < OTHER_TENANT_LOAD for m in s["metrics"])
    assert events(w, "QueryNotScoped", "peek")
    assert s["desiredReplicas"] == 1, "a refused query moves nothing"
    assert len(live(w, "api")) == 1

    # Naming the shared Prometheus as the policy's own URL does not lift the scoping.
    w.kube.patch(SP, "peek", {"spec": {"prometheus": {"url": prom.url + "/"}, "metrics": rules[1:2]}})
    eventually(
        lambda: (
            (s := status(w, "peek")).get("observedGeneration") == w.kube.get(SP, "peek")["metadata"]["generation"]
            and [m["name"] for m in s["metrics"]] == ["theirs"]
            and s
        ),
        30,
        what="re-evaluated with the shared URL",
    )
    assert condition(w.kube.get(SP, "peek")) == ("False", "QueryNotScoped")
    assert "value" not in status(w, "peek")["metrics"][0]

    # The same policy, scoped, scales on its own namespace's value: ceil(10 / 4) = 3, not the max
    # that 1010 would ask for (maxReplicas 3 is that max, so the bound is raised to tell them apart).
    w.kube.patch(
        SP,
        "peek",
        {"spec": {"prometheus": None, "maxReplicas": 5, "metrics": [{**rules[0], "target": {"averageValue": 4}}]}},
    )
    eventually(lambda: status(w, "peek").get("desiredReplicas") == 3 or None, 30, what="scaled on its own load")
    eventually(lambda: len(live(w, "api")) == 3, 60, what="api at 3")
    time.sleep(2)
    assert status(w, "peek")["desiredReplicas"] == 3
    assert condition(w.kube.get(SP, "peek"))[0] == "True"
    w.kube("delete", SP, "peek")
    eventually(lambda: len(live(w, "api")) == 1, 60, what="api back to its spec")
    assert manifest_unchanged(w)


def test_every_rewrite_is_promql_the_real_prometheus_accepts(elastic: tuple[World, LoadExporter, Prometheus]) -> None:
    """What scope_query sends (tokens rebuilt, one space apart) parses on the real Prometheus."""
    _, _, prom = elastic
    for query, sent in REWRITTEN:
        assert scope_query(query, "a") == sent
        prom.query(sent)  # raises on an error answer (a parse error is HTTP 400)


def test_scale_to_zero_and_back_from_zero(elastic: tuple[World, LoadExporter, Prometheus]) -> None:
    w, _, _ = elastic
    w.kube.apply(policy("api-zero", "api", minReplicas=0, maxReplicas=2, replicas=2))
    eventually(lambda: len(live(w, "api")) == 2, 60, what="api at 2")
    w.kube("scale", f"{SP}/api-zero", "--replicas=0")
    eventually(lambda: not w.kube.items("instances.skyfleet.io", "skyfleet.io/group=api"), 90, what="api at 0")
    # status.replicas counts Instances at the next evaluation.
    s = eventually(lambda: (s := status(w, "api-zero")).get("replicas") == 0 and s, 10, what="replicas 0")
    assert s["desiredReplicas"] == 0
    # From 2 the way to zero passes through one replica.
    assert [m for m in events(w, "ScaledIn", "api-zero") if "2 -> 1 replicas" in m]
    assert [m for m in events(w, "ScaledIn", "api-zero") if "1 -> 0 replicas" in m]
    w.kube("scale", f"{SP}/api-zero", "--replicas=1")
    # Back from zero within seconds reuses the name of an Instance just deleted: still one VM.
    most, deadline = 0, time.monotonic() + 90
    while not (ready(w, "api") == 1 and len(live(w, "api")) == 1) and time.monotonic() < deadline:
        most = max(most, len(live(w, "api")))
        time.sleep(0.25)
    assert ready(w, "api") == 1, "api did not come back from zero"
    assert most <= 1, f"{most} Instances for one replica"
    w.kube("delete", SP, "api-zero")
    assert manifest_unchanged(w)


def test_a_constraint_sizes_the_group_up_through_a_rollout_without_losing_capacity(
    elastic: tuple[World, LoadExporter, Prometheus],
) -> None:
    w, load, _ = elastic
    w.kube.apply(
        policy(
            "batch",
            "batch",
            minReplicas=2,
            maxReplicas=2,
            metrics=[
                {"name": "slow", "query": "max(batch_latency)", "constraint": {"above": 1, "action": "SizeUp"}},
                {"name": "fast", "query": "max(batch_latency)", "constraint": {"below": 0.1, "action": "SizeDown"}},
            ],
            vertical={"sizes": [NANO, MICRO]},
            behavior={"verticalCooldownSeconds": 5},
        )
    )
    eventually(lambda: status(w, "batch").get("rung") == 0 or None, 30, what="batch on the first rung")
    load.set("batch_latency", 2.0)
    eventually(lambda: status(w, "batch").get("rung") == 1 or None, 30, what="sized up")
    assert status(w, "batch")["size"] == "1cpu/1024MiB"
    assert events(w, "SizedUp", "batch")
    fewest = 2
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        fewest = min(fewest, ready(w, "batch"))
        types = {
            vm["InstanceType"]
            for vm in w.vms("eu-central-1")
            if tags(vm)["skyfleet.io/instance"].startswith("elastic-batch-")
        }
        if types == {"t3.micro"} and ready(w, "batch") == 2:
            break
        time.sleep(0.5)
    assert types == {"t3.micro"}, f"batch VMs are {types} after the rollout"
    assert fewest == 2, "the rollout (maxSurge 1, maxUnavailable 0) never drops below 2 running VMs"
    assert manifest_unchanged(w)

    load.set("batch_latency", 0.0)  # below 0.1: one rung down once the 5 s cooldown has passed
    eventually(lambda: status(w, "batch").get("rung") == 0 or None, 30, what="sized down")
    assert events(w, "SizedDown", "batch")
