"""The VM observer over the index it reads (``instances_by_credential``): a converged Instance
gets no write, a VM gone from the cloud makes the Instance Lost with one write."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import kopf
import pytest

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.handlers.context import now
from skyfleet.handlers.indexes import instances_by_credential
from skyfleet.handlers.instances import _provision
from skyfleet.handlers.observe import LoopState, _observe_members
from tests.unit.test_handlers_instances import NS, image, world

pytestmark = pytest.mark.unit

CRED = CloudCredential.model_validate(
    {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "CloudCredential",
        "metadata": {"name": "mem", "namespace": NS},
        "spec": {"provider": "memory", "region": "mem-1", "secretRef": {"name": "keys"}},
    }
)


async def observe(ctx: Any, body: dict[str, Any], state: LoopState, nodes: list[Any]) -> None:
    # The index's entry made anew from the body, as kopf does on every watch event.
    members = list(instances_by_credential(namespace=NS, body=kopf.Body(body)).values())
    await _observe_members(
        ctx=ctx, cred=CRED, members=members, nodes=nodes, state=state, ts=now(), clock=time.monotonic()
    )


async def test_a_running_vm_that_is_listed_gets_no_write_and_one_gone_from_the_cloud_is_lost() -> None:
    ctx, kube, cloud, body = world()
    ctx.settings.lost_grace = 0
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    assert body["status"]["phase"] == "Running"
    writes = len(kube.writes)
    state = LoopState()

    await observe(ctx, body, state, list(cloud.nodes.values()))
    assert len(kube.writes) == writes  # converged: nothing to write

    cloud.nodes.clear()  # terminated behind the operator's back
    await observe(ctx, body, state, [])
    assert body["status"]["phase"] == "Lost"
    assert len(kube.writes) == writes + 1


async def test_the_observer_index_keeps_the_status_as_read_in_compact_form_and_shares_repeated_names() -> None:
    ctx, _kube, _cloud, body = world()
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    # Two Instances decoded from the watch separately, as kopf does.
    first, second = (json.loads(json.dumps(body)) for _ in range(2))
    second["metadata"] = {**second["metadata"], "name": "shop-web-1", "uid": "u-other"}
    a, b = (next(iter(instances_by_credential(namespace=NS, body=kopf.Body(x)).values())) for x in (first, second))
    # The status exactly as read (the ``old`` of the next write), held as one string, not the
    # decoded tree of the watch event.
    assert a.status_raw == body["status"]
    assert isinstance(a.status_json, str)
    status = a.status()
    assert status is not None
    assert (status.phase, status.provider_id) == ("Running", body["status"]["providerId"])
    assert (a.phase, a.generation, a.deleting) == ("Running", 1, False)
    # What every Instance of a Deployment repeats is held once.
    assert a.deployment == b.deployment
    assert a.deployment is b.deployment
    assert a.namespace is b.namespace
    assert a.phase is b.phase


async def test_a_period_like_the_last_skips_the_instance_and_any_change_is_seen_again() -> None:
    ctx, kube, cloud, body = world()
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    state = LoopState()
    writes = len(kube.writes)
    [vm] = cloud.nodes.values()
    await observe(ctx, body, state, [vm])
    await observe(ctx, body, state, [vm])
    assert len(kube.writes) == writes
    # Remembered as settled: the next period with the same status and listing decodes nothing.
    assert set(state.settled) == {body["metadata"]["uid"]}

    # The VM changes (a new public address): written at once, though the status did not change.
    moved = dataclasses.replace(vm, public_ips=("203.0.113.9",))
    await observe(ctx, body, state, [moved])
    assert body["status"]["addresses"]["public"] == ["203.0.113.9"]
    assert len(kube.writes) == writes + 1

    # Someone edits the status by hand: the next period puts it back.
    body["status"] = {**body["status"], "address": "198.51.100.1"}
    await observe(ctx, body, state, [moved])
    assert body["status"]["address"] == "203.0.113.9"
    assert len(kube.writes) == writes + 2

    # An Instance gone from the index is forgotten.
    await _observe_members(ctx=ctx, cred=CRED, members=[], nodes=[moved], state=state, ts=now(), clock=time.monotonic())
    assert state.settled == {}
