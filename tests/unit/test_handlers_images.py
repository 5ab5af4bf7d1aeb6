"""Resolving an Image (handlers/images.py) against the in-memory cloud: a failure that says
nothing about the image keeps the last resolved id; a lookup that finds nothing does not."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.contract import NotFound, Throttled
from skyfleet.handlers.images import resolve_once
from skyfleet.handlers.indexes import credential_view
from skyfleet.reconcile.views import deployment_view
from tests.unit.test_handlers_instances import NS, ApplyingKube, world

pytestmark = pytest.mark.unit

SHOP = Deployment.model_validate(
    {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "nodeGroups": [
                {
                    "name": "web",
                    "imageRef": "ubuntu",
                    "size": {"cpu": 2},
                    "placement": {"targets": [{"credential": "mem", "region": "mem-1"}]},
                }
            ]
        },
    }
)


def image_body() -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Image",
        "metadata": {"name": "ubuntu", "namespace": NS, "generation": 1},
        "spec": {"clouds": [{"provider": "memory", "lookup": {"namePattern": "ubuntu-*"}}]},
    }


async def resolve(ctx: Any, body: dict[str, Any]) -> dict[str, Any]:
    """One pass of the Image loop; returns the Image's status as written."""
    ctx.kube = kube = ApplyingKube(body)
    credentials = {
        (NS, "mem"): [
            credential_view("mem", {"spec": {"provider": "memory", "region": "mem-1", "secretRef": {"name": "keys"}}})
        ]
    }
    await resolve_once(
        ctx=ctx,
        namespace=NS,
        name="ubuntu",
        body=kopf.Body(body),
        images={(NS, "ubuntu"): [Image.model_validate(body)]},  # type: ignore[arg-type]
        deployments={NS: [deployment_view(SHOP)]},  # type: ignore[arg-type]
        credentials=credentials,  # type: ignore[arg-type]
    )
    status: dict[str, Any] = kube.body["status"]
    return status


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


async def test_a_cloud_hiccup_during_a_resync_keeps_the_last_resolved_id_and_ready() -> None:
    ctx, _kube, cloud, _body = world()
    body = image_body()
    first = await resolve(ctx, body)
    assert [(r["credential"], r["region"], r["id"]) for r in first["resolved"]] == [("mem", "mem-1", "img-ubuntu-2")]
    assert ready(first)["status"] == "True"

    cloud.fail("list_images", Throttled("slow down", provider="memory"))
    status = await resolve(ctx, body)
    # Deployments keep placing on mem/mem-1 with the id already resolved for this spec.
    assert status["resolved"] == first["resolved"]
    assert ready(status)["status"] == "True"
    assert "could not be refreshed" in ready(status)["message"]


async def test_an_answer_that_the_image_is_gone_drops_it_and_a_hiccup_on_an_edited_spec_keeps_nothing() -> None:
    ctx, _kube, cloud, _body = world()
    body = image_body()
    await resolve(ctx, body)

    cloud.fail("list_images", NotFound("no image matches", provider="memory"))
    status = await resolve(ctx, body)
    assert status.get("resolved") is None
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "NoMatch")

    await resolve(ctx, body)  # resolved again
    body["metadata"]["generation"] = 2  # an edit: the old id no longer answers for this spec
    cloud.fail("list_images", Throttled("slow down", provider="memory"))
    status = await resolve(ctx, body)
    assert status.get("resolved") is None
    assert (ready(status)["status"], ready(status)["reason"]) == ("False", "ResolutionFailed")
