"""Instance decisions: status from what the cloud shows, create errors, when a VM is lost or may be sent again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.instance import InstanceStatus
from skyfleet.contract import CloudNode, NodeState, create_resend_wait, errors
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.instances import (
    CREATE_FAILURES,
    FALLBACK_REASONS,
    classify_create_error,
    lost_for_good,
    observed_status,
    unseen_vm_may_exist,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def node(state: NodeState, **kw: Any) -> CloudNode:
    return CloudNode(provider_id="i-1", name="n", state=state, **kw)


@pytest.mark.parametrize(
    ("state", "phase", "ready", "reason"),
    [
        (NodeState.PENDING, "Pending", "False", "VMPending"),
        (NodeState.RUNNING, "Running", "True", "VMRunning"),
        (NodeState.STOPPED, "Stopped", "False", "VMStopped"),
        (NodeState.TERMINATED, "Lost", "False", "VMGone"),
    ],
)
def test_observed_status_from_vm_state(state: NodeState, phase: str, ready: str, reason: str) -> None:
    s = observed_status(None, node(state), provider="ec2", now=T0)
    c = find_condition(s.conditions, "Ready")
    assert c is not None
    assert (s.phase, c.status, c.reason) == (phase, ready, reason)


def test_observed_status_addresses_prefer_public() -> None:
    s = observed_status(
        None,
        node(NodeState.RUNNING, public_ips=("203.0.113.9",), private_ips=("10.1.1.1",), size_id="t3.micro"),
        provider="ec2",
        now=T0,
    )
    assert (s.address, s.provider_id, s.instance_type) == ("203.0.113.9", "i-1", "t3.micro")
    assert s.addresses is not None
    assert s.addresses.private == ["10.1.1.1"]
    private_only = observed_status(None, node(NodeState.RUNNING, private_ips=("10.1.1.1",)), provider="ec2", now=T0)
    assert private_only.address == "10.1.1.1"


def test_cloud_values_that_do_not_fit_the_status_schema_are_left_out_not_written() -> None:
    """Found by bench/hostile.py: an image id of 253 characters came back from the cloud as 506
    (mis-decoded UTF-8); written as is, the API server refused the whole status, provider id
    included, and the create handler failed with a traceback on every retry."""
    huge = node(
        NodeState.RUNNING,
        image_id="\u00c3\u00a9" * 253,
        size_id="t" * 64,
        public_ips=("x" * 65, "203.0.113.9"),
        private_ips=tuple(f"10.0.0.{i}" for i in range(20)),
    )
    s = observed_status(None, huge, provider="ec2", now=T0)
    # What the API server will accept, checked by the same model the CRD schema comes from.
    InstanceStatus.model_validate(s.to_api())
    assert (s.provider_id, s.phase, s.image_id, s.instance_type) == ("i-1", "Running", None, None)
    assert s.address == "203.0.113.9"
    assert s.addresses is not None
    assert s.addresses.private is not None
    assert len(s.addresses.private) == 16
    # A value recorded before (the image id the Instance asked for) is kept.
    before = InstanceStatus(image_id="ami-1", instance_type="t3.micro")
    kept = observed_status(before, huge, provider="ec2", now=T0)
    assert (kept.image_id, kept.instance_type) == ("ami-1", "t3.micro")


def test_vanished_vm_is_lost_and_a_repeat_observation_is_identical() -> None:
    running = observed_status(None, node(NodeState.RUNNING), provider="ec2", now=T0)
    lost = observed_status(running, None, provider="ec2", now=T0 + timedelta(minutes=1))
    assert lost.phase == "Lost"
    assert lost.provider_id == "i-1"
    assert observed_status(lost, None, provider="ec2", now=T0 + timedelta(hours=1)) == lost
    assert observed_status(running, node(NodeState.RUNNING), provider="ec2", now=T0 + timedelta(hours=1)) == running


def test_observed_status_keeps_the_current_object_untouched() -> None:
    current = InstanceStatus(phase="Creating")
    observed_status(current, node(NodeState.RUNNING), provider="ec2", now=T0)
    assert current.phase == "Creating"


@pytest.mark.parametrize(
    ("error", "reason", "retry", "fallback"),
    [
        (errors.QuotaExceeded("q"), "QuotaExceeded", False, True),
        (errors.CapacityUnavailable("c"), "CapacityUnavailable", False, True),
        (errors.Throttled("t"), "CloudUnavailable", True, False),
        (errors.Transient("t"), "CloudUnavailable", True, False),
        (errors.InvalidRequest("bad size"), "InvalidRequest", False, False),
        (errors.NotFound("no image"), "ImageNotFound", False, False),
        (errors.Permanent("p"), "ProvisioningFailed", False, False),
        (errors.InvalidCredentials("who"), "InvalidCredentials", True, False),
        (errors.CircuitOpen("down"), "CloudUnavailable", True, False),
        (RuntimeError("unmapped"), "CloudUnavailable", True, False),
    ],
)
def test_create_errors(error: BaseException, reason: str, retry: bool, fallback: bool) -> None:
    f = classify_create_error(error)
    # The Deployment decides fallback from the reason the Instance fails with.
    assert (f.reason, f.retry, f.reason in FALLBACK_REASONS) == (reason, retry, fallback)
    # ...and that set says what the error class says (contract/errors.py), once.
    assert (f.reason in FALLBACK_REASONS) == getattr(error, "fallback", False)


def test_no_reason_both_falls_back_and_does_not() -> None:
    # One reason per class row: a reason shared by a fallback class and another would make the
    # Deployment fall back on errors that do not mean another target may succeed.
    for reason in FALLBACK_REASONS:
        assert all(kind.fallback for kind, r, _ in CREATE_FAILURES if r == reason)


@pytest.mark.parametrize(
    ("first_missed", "now", "grace", "lost"),
    [
        (100.0, 100.0, 60.0, False),  # just noticed
        (100.0, 159.9, 60.0, False),
        (100.0, 160.0, 60.0, True),
        (100.0, 100.0, 0.0, True),  # no grace configured
    ],
)
def test_a_vm_is_lost_only_after_missing_for_the_whole_grace(
    first_missed: float, now: float, grace: float, lost: bool
) -> None:
    assert lost_for_good(first_missed, now, grace) is lost


@pytest.mark.parametrize(
    ("phase", "has_provider_id", "wait"),
    [
        ("Creating", False, True),  # a create may have been in flight: its VM can show up late
        ("Creating", True, True),
        ("Pending", True, True),  # recorded but not listed yet
        ("Running", True, True),
        ("Lost", True, False),  # the observer already confirmed it gone
        ("Failed", False, False),  # the cloud refused the create
        ("Pending", False, False),  # never reached the cloud (credential not ready)
        (None, False, False),
    ],
)
def test_deletion_waits_only_for_a_vm_that_may_still_appear(
    phase: str | None, has_provider_id: bool, wait: bool
) -> None:
    assert unseen_vm_may_exist(phase, has_provider_id=has_provider_id) is wait


@pytest.mark.parametrize(
    ("token", "unknown_since", "now", "wait"),
    [
        (False, None, 1000.0, 0.0),  # nothing sent yet, or every send answered: create now
        (False, 1000.0, 1000.5, 29.5),  # answer lost half a second ago: the listing may lag
        (False, 1000.0, 1029.0, 1.0),
        (False, 1000.0, 1030.0, 0.0),  # lookups missed it for the whole window: it never launched
        (False, 1000.0, 2000.0, 0.0),
        (True, 1000.0, 1000.5, 0.0),  # the cloud deduplicates the token: re-sending is safe now
        (True, None, 1000.0, 0.0),
    ],
)
def test_a_create_with_unknown_outcome_is_not_sent_again_before_listings_settle(
    token: bool, unknown_since: float | None, now: float, wait: float
) -> None:
    assert create_resend_wait(idempotency_token=token, unknown_since=unknown_since, now=now, settle=30.0) == wait
