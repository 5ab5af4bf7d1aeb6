"""kopf's indexes as the operator registers them (handlers/indexes.py)."""

from __future__ import annotations

import gc
import inspect
import sys
from typing import Any

import kopf
import pytest
from kopf._core.intents.registries import get_default_registry

import skyfleet.handlers  # noqa: F401 - importing registers every handler
from skyfleet.handlers.indexes import by_credential, by_deployment, uids
from skyfleet.reconcile.views import DeploymentView

pytestmark = pytest.mark.unit


def test_every_index_runs_on_the_event_loop_under_the_name_handlers_ask_for() -> None:
    # kopf runs a synchronous handler in its thread pool: one hand-off per index per watch
    # event (four per Instance event, 40,000 on a restart at 10,000 Instances).
    handlers = {h.id: h.fn for h in get_default_registry()._indexing.get_all_handlers()}
    assert {
        "instances",
        "credentials",
        "images",
        "deployments",
        "images_in_use",
        "scaling_policies",
    } <= set(handlers)
    assert [name for name, fn in handlers.items() if not inspect.iscoroutinefunction(fn)] == []


async def test_one_index_serves_every_instance_lookup() -> None:
    # One index for what three were: kopf runs every index of every watch event through its
    # handler machinery, about half of what an Instance event cost at a restart.
    registered = [h for h in get_default_registry()._indexing.get_all_handlers() if h.selector.any_name == "instances"]
    assert sorted(h.id for h in registered) == ["images_in_use", "instances"]
    [handler] = [h.fn for h in registered if h.id == "instances"]
    index: dict[Any, list[Any]] = {}
    for name, uid, credential in (("shop-web-0", "u-0", "a"), ("shop-web-1", "u-1", "b"), ("blog-web-0", "u-2", "a")):
        body = kopf.Body(instance(name, uid, credential))
        for key, value in (await handler(namespace="team", uid=uid, body=body)).items():
            index.setdefault(key, []).append(value)
    kwargs = {"instances": index}
    assert [v.name for v in by_deployment(kwargs).get(("team", "shop"), [])] == ["shop-web-0", "shop-web-1"]
    assert [m.name for m in by_credential(kwargs).get(("team", "a"), [])] == ["shop-web-0", "blog-web-0"]
    assert len(by_credential(kwargs).get(("team", "b"), ())) == 1
    assert uids(kwargs).get("team") == ["u-0", "u-1", "u-2"]
    assert by_deployment(kwargs).get(("other", "shop"), []) == []


def instance(name: str, uid: str, credential: str) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": name, "namespace": "team", "uid": uid, "generation": 1},
        "spec": {
            "deployment": name.split("-", maxsplit=1)[0],
            "group": "web",
            "credential": credential,
            "templateHash": "t1",
            "imageRef": "ubuntu",
        },
    }


def reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` (what holding it in the index keeps alive)."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


async def test_the_deployments_index_keeps_a_view_not_the_deployment() -> None:
    # The validated model (user data, rollout, health settings, status: about 12 KiB) was kept
    # for every Deployment; what Images, bakes, credential wake-ups and ScalingPolicies read is
    # the groups' image, targets, replicas and size.
    [handler] = [h.fn for h in get_default_registry()._indexing.get_all_handlers() if h.id == "deployments"]
    user_data = "#cloud-config\n" + "x" * 4000
    group = {
        "name": "web",
        "replicas": 3,
        "imageRef": "ubuntu",
        "size": {"cpu": 1, "memoryMiB": 1024},
        "userData": user_data,
        "placement": {"targets": [{"credential": "a"}, {"credential": "b", "region": "eu-west-1"}]},
    }
    body = {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"nodeGroups": [group]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "m" * 500}]
        },  # not even valid
    }
    [(key, view)] = (await handler(namespace="team", body=kopf.Body(body))).items()
    assert key == "team"
    assert isinstance(view, DeploymentView)
    assert view.name == "shop"
    assert view.uses_credential("b")
    assert not view.uses_credential("c")
    [g] = view.groups
    assert (g.name, g.image_ref, g.targets, g.replicas) == ("web", "ubuntu", (("a", None), ("b", "eu-west-1")), 3)
    assert (g.size.cpu, g.size.memory_mib) == (1, 1024)
    held = reachable(view)
    assert not any(isinstance(o, str) and o in (user_data, "m" * 500) for o in held)
    assert not any(hasattr(o, "__dict__") and not hasattr(o, "model_fields_set") for o in held)
    assert sum(sys.getsizeof(o) for o in held) < 3000


def test_no_instance_has_a_daemon_or_timer_of_its_own() -> None:
    # A daemon or timer per Instance would be a task, a stopper and the last body (kopf's
    # ``live_fresh_body``) held for each of 10,000 Instances while nothing happens to them.
    # Instances are handled when their events arrive; the observer watches their VMs per
    # credential, and each Deployment's loop their count.
    spawning = get_default_registry()._spawning.get_all_handlers()
    assert sorted({h.selector.any_name for h in spawning}) == [
        "cloudcredentials",
        "deployments",
        "images",
        "scalingpolicies",
    ]
