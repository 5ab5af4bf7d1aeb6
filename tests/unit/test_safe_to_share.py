"""Pure parts of issue 11's operator fixes: safe messages, small kopf annotations, plan cases,
region verdicts, metrics of deleted credentials, lease timings and the derived cluster id."""

from __future__ import annotations

import json
from typing import Any

import kopf
import pytest
from pydantic import ValidationError

from skyfleet.api.image import Recipe, RecipeFile
from skyfleet.handlers.storage import BoundedProgressStorage, DigestDiffBaseStorage, digests, rebuild
from skyfleet.metrics import Metrics
from skyfleet.operator import derived_cluster_id
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.deployment import refused_status
from skyfleet.reconcile.images import EffectiveImage
from skyfleet.reconcile.instances import never_called_the_cloud, user_data_too_large
from skyfleet.reconcile.messages import MESSAGE_LIMIT, safe_message
from skyfleet.reconcile.regions import RegionFailure, regions_condition
from skyfleet.reconcile.userdata import NoAddresses, TemplateError, render_template
from skyfleet.settings import Settings
from tests.unit.test_metrics import value
from tests.unit.test_reconcile_deployment import T0, cond, created, deployment, group, inst, plan

pytestmark = pytest.mark.unit

# --- item 10: one helper bounds and sanitises every message --------------------------------------


def test_a_huge_error_becomes_one_short_line_without_payloads() -> None:
    user_data = "#!/bin/sh\necho secret-plan\n"
    text = (
        "HTTPSConnectionPool(host='ec2.eu-central-1.amazonaws.com'): Max retries exceeded with url: "
        "/?Action=RunInstances&UserData=IyEvYmluL3NoCmVjaG8gc2VjcmV0LXBsYW4K&ImageId=ami-1 "
        f"<html><body>{'A' * 200}</body></html>\n\x00 {user_data} " + "more " * 100_000
    )
    out = safe_message(text, redact=[user_data])
    assert len(out) <= MESSAGE_LIMIT
    assert "\n" not in out
    assert "\x00" not in out
    for leak in ("IyEvYmluL3NoCmVjaG8", "secret-plan", "<html>", "A" * 80):
        assert leak not in out
    assert out.startswith("HTTPSConnectionPool(host='ec2.eu-central-1.amazonaws.com')")


def test_conditions_only_ever_hold_safe_messages() -> None:
    conds = set_condition([], "Ready", False, "Unreachable", "x" * 100_000 + "\n", now=T0)
    assert len(conds[0].message) <= MESSAGE_LIMIT


# --- item 1: kopf's annotations stay small whatever the object holds -------------------------------


def emoji_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "skyfleet.io/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "x", "namespace": "ns", "annotations": {"team": "a"}, "labels": {"l": "1"}},
        "spec": {"nodeGroups": [{"name": "app", "userData": "\U0001f680" * 16384}], "paused": False},
    }


def test_the_diff_base_is_a_few_hundred_bytes_for_any_spec() -> None:
    storage = DigestDiffBaseStorage(prefix="skyfleet.io", key="last-handled-configuration")
    body = kopf.Body(emoji_deployment())
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    stored = patch["metadata"]["annotations"]["skyfleet.io/last-handled-configuration"]
    assert len(stored) < 1024
    assert len(json.dumps(emoji_deployment()["spec"])) > 190_000  # what kopf's stock storage would copy


def test_the_rebuilt_diff_base_shows_exactly_which_fields_changed() -> None:
    old = emoji_deployment()
    stored = digests({"spec": old["spec"], "metadata": {"labels": old["metadata"]["labels"]}})
    new = json.loads(json.dumps(old))
    new["spec"]["paused"] = True
    essence = {"spec": new["spec"], "metadata": {"labels": new["metadata"]["labels"]}}
    base = rebuild(stored, essence)
    assert base["spec"]["nodeGroups"] == new["spec"]["nodeGroups"]  # unchanged: taken as is
    assert base["spec"]["paused"] != new["spec"]["paused"]  # changed: differs, so kopf sees it
    assert base["metadata"] == essence["metadata"]
    assert rebuild(stored, {"spec": old["spec"], "metadata": {"labels": old["metadata"]["labels"]}}) == {
        "spec": old["spec"],
        "metadata": {"labels": old["metadata"]["labels"]},
    }


def test_label_and_annotation_keys_with_dots_are_tracked_exactly() -> None:
    essence = {"metadata": {"labels": {"skyfleet.io/deployment": "shop"}}, "spec": {"a": 1}}
    assert rebuild(digests(essence), essence) == essence
    changed = {"metadata": {"labels": {"skyfleet.io/deployment": "other"}}, "spec": {"a": 1}}
    assert rebuild(digests(essence), changed)["metadata"]["labels"]["skyfleet.io/deployment"] != "other"


def test_the_diff_base_stays_bounded_with_a_thousand_labels() -> None:
    essence = {"metadata": {"labels": {f"l{i}": "v" for i in range(1000)}}, "spec": {"a": 1}}
    assert len(json.dumps(digests(essence))) <= 4096


def test_progress_records_keep_only_a_short_safe_message() -> None:
    storage = BoundedProgressStorage(prefix="skyfleet.io")
    patch = kopf.Patch()
    body = kopf.Body({"metadata": {"name": "x", "namespace": "ns"}})
    storage.store(key="provision", record={"retries": 3, "message": "Q0FOQVJZ" * 50_000}, body=body, patch=patch)
    stored = next(iter(patch["metadata"]["annotations"].values()))
    assert len(stored) < 400
    assert "Q0FOQVJZQ0FOQVJZ" not in stored


# --- items 11 and 17: the plan ends every case as a condition --------------------------------------


def test_recipe_plus_user_data_over_the_instance_limit_is_a_condition() -> None:
    recipe = Recipe(files=[RecipeFile(path="/etc/big", content="y" * 60_000)])
    images: dict[str, EffectiveImage | str] = {"ubuntu": EffectiveImage("ubuntu", (), recipe, "ubuntu")}
    dep = deployment(group(userData="#!/bin/sh\n" + "x" * 10_000))
    p = plan(dep, [], images=images)
    assert created(p) == []
    assert cond(p, "Ready") == ("False", "UserDataTooLarge")


def test_an_instance_over_the_provider_limit_is_reported_not_replaced_again_and_again() -> None:
    dep = deployment(group(replicas=1))
    failed = inst(dep, 0, ready=False, phase="Failed", reason="UserDataTooLarge", message="user data is 20000 bytes")
    p = plan(dep, [failed])
    assert (created(p), p.deletes) == ([], [])
    assert cond(p, "Ready") == ("False", "UserDataTooLarge")
    assert "20000 bytes" in (p.status.message or "")


def test_provider_user_data_limits_count_bytes() -> None:
    assert user_data_too_large("a" * 16384, 16384) == ""
    assert "16386 bytes" in user_data_too_large("a" * 16382 + "é", 16384) + user_data_too_large(
        "a" * 16384 + "é", 16384
    )
    assert user_data_too_large("x" * 10**6, None) == ""


def test_a_refused_create_turns_into_a_condition_with_the_reason() -> None:
    status = plan(deployment(), []).status
    after = refused_status(status, "QuotaExceeded", "group web: exceeded quota", now=T0, generation=1)
    ready = next(c for c in after.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "QuotaExceeded")
    assert after.message == "group web: exceeded quota"


def two_tier(db_replicas: int) -> Any:
    return deployment(
        group("db", replicas=db_replicas),
        group("web", replicas=1, dependsOn=["db"], userData="DB={{ groups.db.privateAddresses }}"),
    )


def test_a_dependency_scaled_to_zero_holds_its_dependents_with_a_clear_reason() -> None:
    p = plan(two_tier(0), [])
    assert created(p) == []
    assert cond(p, "Progressing") == ("True", "WaitingForDependencies")
    assert "db, which has 0 replicas" in (p.status.message or "")


def test_a_dependency_without_the_wanted_addresses_is_waited_for_never_rendered_blank() -> None:
    dep = two_tier(1)
    p = plan(dep, [inst(dep, 0, group="db", private_address=None)])
    assert created(p) == []
    assert cond(p, "Progressing") == ("True", "WaitingForAddresses")


def test_instances_waiting_on_an_unknown_region_name_it_and_spend_no_budget() -> None:
    dep = deployment(group(replicas=1))
    waiting = inst(dep, 0, ready=False, phase="Pending", reason="RegionUnknown", region="eu-centrall-1")
    p = plan(dep, [waiting])
    assert (created(p), p.deletes) == ([], [])
    assert cond(p, "Ready") == ("False", "RegionUnknown")
    assert "region eu-centrall-1 of credential a" in (p.status.message or "")
    assert p.status.groups is not None
    assert p.status.groups[0].failed_provisions == 0


def render(template: str, **addresses: list[str]) -> str:
    return render_template(
        template,
        deployment="shop",
        group="web",
        instance="shop-web-0",
        allowed_groups=list(addresses),
        addresses=addresses,
        private_addresses=addresses,
    )


def test_raw_blocks_pass_cloud_init_jinja_through() -> None:
    out = render("## template: jinja\n{{ raw }}{{ v1.local_hostname }}{% if x %}{{ endraw }} on {{ instance }}")
    assert out == "## template: jinja\n{{ v1.local_hostname }}{% if x %} on shop-web-0"
    with pytest.raises(TemplateError, match="unknown placeholder"):
        render("{{ v1.local_hostname }}")
    with pytest.raises(TemplateError, match="without its endraw"):
        render("{{ raw }} {{ x }}")
    with pytest.raises(NoAddresses):
        render("{{ groups.db.addresses }}", db=[])


# --- item 9: one condition names every failing region ---------------------------------------------


def test_regions_condition_names_unknown_regions_first() -> None:
    verdict = regions_condition(
        {
            "us-east-1": RegionFailure("RegionUnavailable", "region us-east-1: timed out"),
            "eu-centrall-1": RegionFailure("RegionUnknown", "region eu-centrall-1 is not known to ec2"),
        },
        observed=["eu-central-1"],
    )
    assert (verdict.ok, verdict.reason) == (False, "RegionUnknown")
    assert verdict.message.startswith("region eu-centrall-1 is not known")
    assert "still observed: eu-central-1" in verdict.message
    assert regions_condition({}, observed=["eu-central-1"]).ok


def test_an_instance_that_never_called_the_cloud_needs_no_cloud_call_to_delete() -> None:
    assert never_called_the_cloud(None, has_provider_id=False)
    assert never_called_the_cloud("Pending", has_provider_id=False)
    assert not never_called_the_cloud("Creating", has_provider_id=False)
    assert not never_called_the_cloud("Failed", has_provider_id=False)
    assert not never_called_the_cloud("Pending", has_provider_id=True)


# --- item 15: a deleted credential leaves no series behind ------------------------------------------


def test_a_deleted_credentials_series_go_with_it() -> None:
    metrics = Metrics()
    metrics.set_orphans("a", "aws-1", "ec2", 2)
    metrics.set_instance_phases("a", "aws-1", "ec2", {"Running": 2})
    metrics.set_orphans("b", "do", "digitalocean", 1)
    metrics.set_instance_phases("b", "do", "digitalocean", {"Running": 1})
    metrics.forget_credential("a", "aws-1")
    assert value(metrics, "skyfleet_orphaned_vms", provider="ec2") is None
    assert value(metrics, "skyfleet_instances", provider="ec2", phase="Running") is None
    assert value(metrics, "skyfleet_orphaned_vms", provider="digitalocean") == 1
    assert value(metrics, "skyfleet_instances", provider="digitalocean", phase="Running") == 1


def test_one_of_two_credentials_of_a_provider_going_leaves_the_others_figures() -> None:
    metrics = Metrics()
    metrics.set_orphans("a", "aws-1", "ec2", 2)
    metrics.set_orphans("b", "aws-2", "ec2", 1)
    metrics.forget_credential("a", "aws-1")
    assert value(metrics, "skyfleet_orphaned_vms", provider="ec2") == 1


# --- items 3 and 8: settings -------------------------------------------------------------------------


def test_there_is_no_shared_default_cluster_id() -> None:
    assert Settings().cluster_id is None
    uid = "6E1B1F3A-0F7E-4F43-9C2B-1D6A2F0B9C11"
    derived = derived_cluster_id(uid)
    assert derived == "k8s-6e1b1f3a-0f7e-4f43-9c2b-1d6a2f0b9c11"
    assert Settings(cluster_id=derived).cluster_id == derived  # a valid tag value
    metrics = Metrics()
    metrics.set_cluster_id(derived)
    assert value(metrics, "skyfleet_cluster_info", cluster_id=derived) == 1


def test_lease_timings_follow_client_go() -> None:
    s = Settings()
    assert (s.lease_duration, s.lease_renew_deadline, s.lease_retry_period) == (15.0, 10.0, 2.0)
    with pytest.raises(ValidationError, match="renew deadline"):
        Settings(lease_renew_deadline=15.0)
