"""The handlers' side of an Instance's recorded intent: the image id the planner wrote wins
over the Image's newer resolution, and a driftPolicy updated in place is observed."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from skyfleet.handlers.deployments import _update_drift_policies
from skyfleet.handlers.instances import _provision
from tests.unit.test_handlers_instances import NS, ApplyingKube, image, merge, world

pytestmark = pytest.mark.unit


async def test_the_planners_image_id_wins_over_a_newer_resolution() -> None:
    ctx, _kube, cloud, body = world()
    body["spec"]["imageId"] = "img-ubuntu-1"  # the planner recorded what its siblings boot
    images = {(NS, "ubuntu"): [image("img-ubuntu-2", generation=2)]}
    await _provision(ctx, body, 0, images)  # type: ignore[arg-type]
    assert [d for op, d in cloud.calls if op == "create"] == ["shop-web-0 image=img-ubuntu-1 size=medium"]
    assert body["status"]["imageId"] == "img-ubuntu-1"


async def test_conditions_carry_the_instances_generation() -> None:
    ctx, kube, _cloud, body = world()
    body["metadata"]["generation"] = 2  # its driftPolicy was updated before the VM was made
    await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
    # Every Ready condition written on the way (Creating, then VMRunning) is of generation 2.
    readies = [c for w in kube.writes for c in w.get("conditions") or [] if c["type"] == "Ready"]
    assert [c["reason"] for c in readies] == ["Creating", "VMRunning"]
    assert {c["observedGeneration"] for c in readies} == {2}
    assert body["status"]["observedGeneration"] == 2


class SpecKube(ApplyingKube):
    """ApplyingKube that also applies spec patches (bumping the generation when the spec
    changes, as the API server does) and answers gets."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.spec_patches: list[dict[str, Any]] = []

    async def patch(self, plural: str, namespace: str, name: str, patch: Any) -> None:
        self.spec_patches.append(dict(patch))
        spec = merge(self.body["spec"], patch["spec"])
        if spec != self.body["spec"]:
            self.body["spec"] = spec
            self.body["metadata"]["generation"] += 1

    async def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.body)


@pytest.mark.parametrize("had_status", [True, False])
async def test_a_drift_policy_update_is_observed_by_the_status(had_status: bool) -> None:
    ctx, _kube, _cloud, body = world()
    if had_status:
        await _provision(ctx, body, 0, {(NS, "ubuntu"): [image("img-ubuntu-1")]})  # type: ignore[arg-type]
        assert body["status"]["observedGeneration"] == 1
    kube = SpecKube(body)
    ctx.kube = kube  # type: ignore[assignment]
    changed: set[str] = set()
    await _update_drift_policies(ctx, NS, {"shop-web-0": "Report"}, changed)
    assert body["spec"]["driftPolicy"] == "Report"
    assert body["metadata"]["generation"] == 2
    if had_status:
        # Argo CD and kstatus read a status behind its generation as still in progress.
        assert body["status"]["observedGeneration"] == 2
        assert body["status"]["phase"] == "Running"
        assert changed == {"shop-web-0"}
    else:
        # Not looked at yet: its first status takes the generation; nothing to write now.
        assert kube.writes == []
        assert changed == set()
    # A repeated plan (the index not updated yet) writes the same spec: no new generation, no
    # status write, and no second event.
    writes, changed = len(kube.writes), set()
    await _update_drift_policies(ctx, NS, {"shop-web-0": "Report"}, changed)
    assert (body["metadata"]["generation"], len(kube.writes), changed) == (2, writes, set())
