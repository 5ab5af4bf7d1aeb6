"""The diff-base essence kopf compares (handlers/storage.py): the same as kopf's own, built
without copying what kopf drops."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest
from kopf._cogs.structs import diffs
from kopf._core.intents import causes

from skyfleet.handlers.storage import DigestDiffBaseStorage
from skyfleet.reconcile.instances import create_settled

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


# -- kinds that say themselves whether they were handled: no annotation write per object ----------

SETTLED = {
    "Instance": lambda body: create_settled(body.get("status")),
    "Deployment": lambda body: True,
}


def fresh(status: Any = None, uid: str = "u-1", kind: str = "Instance") -> kopf.Body:
    raw = instance(status=status or {})
    raw["kind"] = kind
    del raw["metadata"]["annotations"]["skyfleet.io/last-handled-configuration"]
    raw["metadata"]["uid"] = uid
    return kopf.Body(raw)


def cause(store: DigestDiffBaseStorage, body: kopf.Body, *, initial: bool = False) -> causes.Reason:
    """The cause kopf would act on for this event, as its processing detects it."""
    old = store.fetch(body=body)
    new = store.build(body=body)
    found = causes.detect_changing_cause(
        finalizer="skyfleet.io/finalizer",
        raw_event={"type": "MODIFIED", "object": dict(body)},
        resource=None,
        indices=None,
        logger=None,
        patch=kopf.Patch(),
        body=body,
        old=old,
        new=new,
        diff=diffs.diff(old, new),
        memo=None,
        initial=initial,
    )
    return found.reason


def test_an_instance_is_created_once_and_no_annotation_is_written_for_it() -> None:
    store = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration", settled=SETTLED)
    new = fresh()
    assert cause(store, new) == causes.Reason.CREATE
    # The create handler succeeded: kopf stores the diff-base; nothing goes into its patch.
    patch = kopf.Patch()
    store.store(body=new, patch=patch, essence=store.build(body=new))
    assert not patch
    # A stale event (the status written before the create) comes after: not a second create.
    assert cause(store, fresh({"phase": "Creating"})) == causes.Reason.NOOP
    assert cause(store, fresh({"phase": "Pending", "providerId": "i-1"})) == causes.Reason.NOOP
    # Another Instance, not yet handled, is still new.
    assert cause(store, fresh({"phase": "Creating"}, uid="u-2")) == causes.Reason.CREATE


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # Recorded its VM, or failed for good: resumed, which the provision handler's filter skips.
        ({"phase": "Running", "providerId": "i-1"}, causes.Reason.RESUME),
        ({"phase": "Failed"}, causes.Reason.RESUME),
        # A create was under way when the operator stopped: it runs again (and adopts the VM).
        ({"phase": "Creating"}, causes.Reason.CREATE),
        ({}, causes.Reason.CREATE),
    ],
)
def test_after_a_restart_only_instances_without_a_vm_are_created_again(
    status: dict[str, Any], expected: causes.Reason
) -> None:
    store = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration", settled=SETTLED)
    assert cause(store, fresh(status), initial=True) == expected


def test_an_annotation_from_before_is_ignored_once_the_instance_says_it_was_handled() -> None:
    store = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration", settled=SETTLED)
    body = kopf.Body(instance(status={"phase": "Running", "providerId": "i-1"}))
    body["spec"]["driftPolicy"] = "Ignore"  # changed since the (empty) digests were written
    assert cause(store, body) == causes.Reason.NOOP


def test_other_kinds_keep_their_annotation() -> None:
    store = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration", settled=SETTLED)
    raw = fresh(kind="CloudCredential")
    assert cause(store, raw) == causes.Reason.CREATE
    patch = kopf.Patch()
    store.store(body=raw, patch=patch, essence=store.build(body=raw))
    assert "skyfleet.io/last-handled-configuration" in patch["metadata"]["annotations"]


def test_a_deployment_never_gets_one() -> None:
    store = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration", settled=SETTLED)
    raw = fresh(kind="Deployment")
    assert cause(store, raw) == causes.Reason.NOOP
    raw["spec"]["group"] = "db"
    assert cause(store, raw) == causes.Reason.NOOP
