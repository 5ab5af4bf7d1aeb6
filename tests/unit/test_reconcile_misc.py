"""Smaller decisions: conditions, dependsOn order, image selection, credential verdicts, VM state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment, NodeGroup
from skyfleet.api.image import Image, ImageSource
from skyfleet.api.instance import InstanceStatus
from skyfleet.connectors import CloudNode, NodeState, errors
from skyfleet.contract import create_resend_wait
from skyfleet.reconcile.conditions import find_condition, set_condition
from skyfleet.reconcile.credentials import secret_aliases, verdict_for
from skyfleet.reconcile.deployment import FALLBACK_REASONS
from skyfleet.reconcile.groups import DependencyError, creation_order
from skyfleet.reconcile.images import ImageError, effective_image, image_uses, select_source
from skyfleet.reconcile.instances import classify_create_error, lost_for_good, observed_status, unseen_vm_may_exist
from skyfleet.reconcile.patches import merge_patch

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_condition_transition_time_moves_only_with_status() -> None:
    c1 = set_condition([], "Ready", False, "Pending", "a", now=T0)
    c2 = set_condition(c1, "Ready", False, "Other", "b", now=T0 + timedelta(minutes=1))
    c3 = set_condition(c2, "Ready", True, "Ok", "", now=T0 + timedelta(minutes=2))
    assert [c.last_transition_time for c in (c1[0], c2[0], c3[0])] == [T0, T0, T0 + timedelta(minutes=2)]
    assert (c2[0].reason, c2[0].message) == ("Other", "b")
    both = set_condition(c3, "Degraded", False, "AsExpected", "", now=T0)
    assert [c.type for c in both] == ["Ready", "Degraded"]
    assert find_condition(both, "Missing") is None


def ng(name: str, *deps: str) -> NodeGroup:
    return NodeGroup.model_validate(
        {
            "name": name,
            "imageRef": "i",
            "size": {"cpu": 1, "memoryMiB": 512},
            "placement": {"targets": [{"credential": "c"}]},
            "dependsOn": list(deps),
        }
    )


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([ng("web", "db"), ng("db")], ["db", "web"]),
        ([ng("a"), ng("b"), ng("c")], ["a", "b", "c"]),
        ([ng("lb", "web"), ng("web", "db", "cache"), ng("cache"), ng("db")], ["cache", "db", "web", "lb"]),
    ],
)
def test_creation_order(groups: list[NodeGroup], expected: list[str]) -> None:
    assert creation_order(groups) == expected


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ([ng("a", "b"), ng("b", "a")], "cycle"),
        ([ng("a", "b"), ng("b", "c"), ng("c", "a")], "cycle"),
        ([ng("a", "nope")], "nope"),
        ([ng("a", "a")], "'a'"),
    ],
)
def test_bad_dependencies(groups: list[NodeGroup], fragment: str) -> None:
    with pytest.raises(DependencyError, match=fragment):
        creation_order(groups)


def src(**kw: Any) -> ImageSource:
    return ImageSource.model_validate(kw)


@pytest.mark.parametrize(
    ("sources", "expected_id"),
    [
        # credential-specific entry beats a provider-wide lookup, wherever it is listed
        ([src(provider="ec2", id="ami-any"), src(credential="virginia", id="ami-v")], "ami-v"),
        # an exact region beats an entry for every region
        ([src(provider="ec2", id="ami-any"), src(provider="ec2", region="us-east-1", id="ami-r")], "ami-r"),
        # equally specific: the first listed (child before parent)
        ([src(provider="ec2", id="ami-1"), src(provider="ec2", id="ami-2")], "ami-1"),
        # entries for other credentials, providers or regions do not apply
        (
            [
                src(credential="frankfurt", id="x"),
                src(provider="gce", id="y"),
                src(provider="ec2", region="eu-west-1", id="z"),
            ],
            None,
        ),
    ],
)
def test_select_source(sources: list[ImageSource], expected_id: str | None) -> None:
    got = select_source(sources, credential="virginia", provider="ec2", region="us-east-1")
    assert (got.id if got else None) == expected_id


def image(name: str, **spec: Any) -> Image:
    return Image.model_validate({"metadata": {"name": name}, "spec": spec})


def test_effective_image_folds_parents() -> None:
    images = {
        "base": image(
            "base",
            loginUser="debian",
            clouds=[{"provider": "ec2", "id": "ami-base"}],
            recipe={"packages": ["curl"], "scripts": ["#!/bin/sh\necho base\n"]},
        ),
        "app": image(
            "app",
            parent="base",
            clouds=[{"credential": "a", "id": "ami-app"}],
            recipe={"packages": ["curl", "nginx"], "scripts": ["#!/bin/sh\necho app\n"]},
        ),
    }
    eff = effective_image("app", images.get)
    assert [s.id for s in eff.sources] == ["ami-app", "ami-base"]
    assert eff.login_user == "debian"
    assert eff.recipe is not None
    assert eff.recipe.packages == ["curl", "nginx"]
    assert eff.recipe.scripts == ["#!/bin/sh\necho base\n", "#!/bin/sh\necho app\n"]


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        ({"app": image("app", parent="base")}, "'base' not found"),
        ({"app": image("app", parent="app")}, "cycle"),
        ({}, "'app' not found"),
    ],
)
def test_effective_image_errors(images: dict[str, Image], fragment: str) -> None:
    with pytest.raises(ImageError, match=fragment):
        effective_image("app", images.get)


def test_image_uses_lists_every_credential_and_region_a_deployment_places_it_on() -> None:
    dep = Deployment.model_validate(
        {
            "metadata": {"name": "d"},
            "spec": {
                "nodeGroups": [
                    {
                        "name": "a",
                        "imageRef": "ubuntu",
                        "size": {"cpu": 1, "memoryMiB": 512},
                        "placement": {"targets": [{"credential": "f"}, {"credential": "v", "region": "us-west-2"}]},
                    },
                    {
                        "name": "b",
                        "imageRef": "other",
                        "size": {"cpu": 1, "memoryMiB": 512},
                        "placement": {"targets": [{"credential": "x"}]},
                    },
                ]
            },
        }
    )
    assert image_uses("ubuntu", [dep], {"f": "eu-central-1", "v": "us-east-1"}) == [
        ("f", "eu-central-1"),
        ("v", "us-west-2"),
    ]


@pytest.mark.parametrize(
    ("error", "secret_found", "reason", "ready", "retry"),
    [
        (None, True, "Verified", True, False),
        (None, False, "SecretNotFound", False, False),
        (errors.InvalidCredentials("no"), True, "InvalidCredentials", False, False),
        (errors.Transient("5xx"), True, "Unreachable", False, True),
        (errors.Throttled("slow"), True, "Unreachable", False, True),
        (errors.CircuitOpen("open"), True, "Unreachable", False, True),
        (errors.UnknownConnector("x"), True, "UnknownConnector", False, False),
        (errors.Unsupported("x"), True, "UnsupportedProvider", False, False),
        (errors.UnknownParameter("authVersoin"), True, "UnknownParameter", False, False),
        (errors.InvalidRequest("bad"), True, "InvalidSpec", False, False),
        (errors.EndpointNotAllowed("link-local"), True, "EndpointNotAllowed", False, False),
        (OSError("refused"), True, "Unreachable", False, True),
    ],
)
def test_credential_verdicts(
    error: BaseException | None, secret_found: bool, reason: str, ready: bool, retry: bool
) -> None:
    v = verdict_for(error, secret_found=secret_found)
    assert (v.reason, v.ready, v.retry_soon) == (reason, ready, retry)


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
    ],
)
def test_create_errors(error: BaseException, reason: str, retry: bool, fallback: bool) -> None:
    f = classify_create_error(error)
    # Fallback is stated once, by the planner, from the reason the Instance fails with.
    assert (f.reason, f.retry, f.reason in FALLBACK_REASONS) == (reason, retry, fallback)


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
    ("old", "new", "patch"),
    [
        ({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2}}, {}),
        (None, {"a": 1}, {"a": 1}),
        ({"a": 1, "m": "x"}, {"a": 1}, {"m": None}),
        ({"b": {"c": 2, "d": 3}}, {"b": {"c": 2}}, {"b": {"d": None}}),
        ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
        ({"a": None}, {"a": None}, {}),
    ],
)
def test_merge_patch(old: dict[str, Any] | None, new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"accessKeyId": "A", "secretAccessKey": "S"},
            {"accessKeyId": "A", "secretAccessKey": "S", "access_key_id": "A", "secret_access_key": "S"},
        ),
        ({"aws_access_key_id": "A"}, {"aws_access_key_id": "A"}),
        ({"api-token": "T"}, {"api-token": "T", "api_token": "T"}),
        # an explicit snake_case key wins over the alias of its camelCase twin
        ({"accessKeyId": "camel", "access_key_id": "snake"}, {"accessKeyId": "camel", "access_key_id": "snake"}),
    ],
)
def test_secret_keys_reach_connectors_in_both_spellings(data: dict[str, str], expected: dict[str, str]) -> None:
    assert secret_aliases(data) == expected


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
