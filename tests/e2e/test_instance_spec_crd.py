"""An Instance's spec against a real kube-apiserver: immutable, but for driftPolicy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.test_crds import INSTANCE, changed, kubectl_apply

pytestmark = pytest.mark.e2e

FULL = changed(
    changed(changed(INSTANCE, "spec.region", "us-east-1"), "spec.userData", "#!/bin/sh\n"),
    "spec.driftPolicy",
    "Recreate",
)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.imageId", "ami-2"),  # unset -> set
        ("spec.region", None),  # set -> unset
        ("spec.region", "eu-west-1"),
        ("spec.userData", "#!/bin/sh\necho other\n"),
        ("spec.templateHash", "h2"),
        ("spec.size", {"cpu": 2}),
    ],
)
def test_every_field_but_drift_policy_is_immutable(
    control_plane: Any, installed_crds: list[str], namespace: str, path: str, value: Any
) -> None:
    kubectl_apply(control_plane, namespace, FULL)
    result = kubectl_apply(control_plane, namespace, changed(FULL, path, value), check=False)
    assert result.returncode != 0, f"{path}: change accepted"
    assert "an Instance's spec is immutable" in result.stderr


@pytest.mark.parametrize("value", ["Report", None])
def test_drift_policy_changes_in_place(
    control_plane: Any, installed_crds: list[str], namespace: str, value: str | None
) -> None:
    kubectl_apply(control_plane, namespace, FULL)
    kubectl_apply(control_plane, namespace, changed(FULL, "spec.driftPolicy", value))
    got = control_plane.kubectl(
        "get", "instances.skyfleet.io", "shop-web-0", "-n", namespace, "-o", "jsonpath={.spec.driftPolicy}"
    )
    assert got.stdout == (value or "")
