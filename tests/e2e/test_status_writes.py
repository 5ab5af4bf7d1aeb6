"""Two loops write one CloudCredential's conditions: a write from a stale copy must not win."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import config

from skyfleet.handlers.kube import Conflict, Kube

pytestmark = pytest.mark.e2e

CREDENTIAL = {
    "apiVersion": "skyfleet.io/v1alpha1",
    "kind": "CloudCredential",
    "metadata": {"name": "shared"},
    "spec": {"provider": "ec2", "region": "us-east-1", "secretRef": {"name": "k"}},
}


def cond(type_: str, reason: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


async def test_a_status_write_from_a_stale_copy_is_refused_not_merged_over(
    control_plane: Any, installed_crds: list[str], namespace: str
) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(CREDENTIAL))
    kube = Kube(api_client=config.new_client_from_config(config_file=str(control_plane.kubeconfig)))
    stale = await kube.get("cloudcredentials", namespace, "shared")
    assert stale is not None
    version = stale["metadata"]["resourceVersion"]

    # The verify loop writes Ready from the copy it read...
    await kube.patch_status(
        "cloudcredentials", namespace, "shared", {"conditions": [cond("Ready", "Verified")]}, resource_version=version
    )
    # ...and the observation loop, computing from the same (now stale) copy, would replace the
    # whole list with its own condition: refused instead.
    with pytest.raises(Conflict):
        await kube.patch_status(
            "cloudcredentials",
            namespace,
            "shared",
            {"conditions": [cond("OrphanedVMs", "OrphansFound")]},
            resource_version=version,
        )
    fresh = await kube.get("cloudcredentials", namespace, "shared")
    assert fresh is not None
    assert [c["type"] for c in fresh["status"]["conditions"]] == ["Ready"]

    # Computed again from the fresh copy, both conditions stay.
    both = [*fresh["status"]["conditions"], cond("OrphanedVMs", "OrphansFound")]
    await kube.patch_status(
        "cloudcredentials",
        namespace,
        "shared",
        {"conditions": both},
        resource_version=fresh["metadata"]["resourceVersion"],
    )
    final = await kube.get("cloudcredentials", namespace, "shared")
    assert final is not None
    assert [c["type"] for c in final["status"]["conditions"]] == ["Ready", "OrphanedVMs"]
