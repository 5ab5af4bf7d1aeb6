"""The diff-base essence kopf compares (handlers/storage.py): the same as kopf's own, built
without copying what kopf drops."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from skyfleet.handlers.storage import DigestDiffBaseStorage

pytestmark = pytest.mark.unit


class NotCopied:
    """Fails the test if anything deep-copies it."""

    def __deepcopy__(self, memo: Any) -> Any:
        raise AssertionError("deep-copied a part of the object that the essence drops")


def instance(status: Any = None) -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Instance",
        "metadata": {
            "name": "shop-web-0",
            "namespace": "team",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 2,
            "labels": {"skyfleet.io/deployment": "shop"},
            "annotations": {
                "skyfleet.io/delete": "true",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "skyfleet.io/last-handled-configuration": '{"format":"skyfleet.io/digests-v2","digests":[]}',
            },
            "ownerReferences": [{"kind": "Deployment", "name": "shop", "uid": "u-shop"}],
            "finalizers": ["skyfleet.io/finalizer"],
            "managedFields": [{"manager": "skyfleet", "fieldsV1": {"f:status": {"f:phase": {}}}}],
        },
        "spec": {"deployment": "shop", "group": "web", "credential": "mem", "size": {"cpu": 1}},
        "status": status if status is not None else {"phase": "Running", "conditions": [{"type": "Ready"}]},
    }


def storage() -> DigestDiffBaseStorage:
    return DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration")


@pytest.mark.parametrize("extra", [None, [("status", "phase")], [("spec", "size")]])
def test_the_essence_is_kopfs_own(extra: Any) -> None:
    body = kopf.Body(instance())
    stock = kopf.AnnotationsDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration")
    assert storage().build(body=body, extra_fields=extra) == stock.build(body=body, extra_fields=extra)


def test_status_and_managed_fields_are_not_copied_to_build_it() -> None:
    # kopf deep-copies the whole object to build the essence, then drops metadata and status:
    # about 3 ms of CPU for an Instance, twice for every watch event.
    raw = instance(status={"phase": "Running", "big": NotCopied()})
    raw["metadata"]["managedFields"] = [NotCopied()]
    body = kopf.Body(raw)
    essence = storage().build(body=body)
    assert essence["spec"] == raw["spec"]
    assert essence["metadata"] == {
        "labels": {"skyfleet.io/deployment": "shop"},
        "annotations": {"skyfleet.io/delete": "true"},
    }
    assert storage().fetch(body=body) is not None
    assert copy.deepcopy(essence) == essence
