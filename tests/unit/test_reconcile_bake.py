"""Baking decisions: the bake key, the builder's cloud-init, the per-target state machine,
retention, what VMs boot from, and the conditions a user reads."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from skyfleet.api.common import ConditionStatus
from skyfleet.api.deployment import Size
from skyfleet.api.image import BakedGeneration, BakeTarget, Builder, ImageBuild, ImageStatus, Recipe, RecipeFile
from skyfleet.connectors import BakedImage, CloudNode, CreateRequest, ImageOwnerTags, ImageState, NodeState, OwnerTags
from skyfleet.reconcile import bake
from skyfleet.reconcile.bake import Do, Observed, Reason, next_step
from skyfleet.reconcile.conditions import find_condition
from skyfleet.reconcile.userdata import recipe_to_cloud_config

pytestmark = pytest.mark.unit

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
BUILD = ImageBuild(builder=Builder(size=Size(cpu=2, memory_mib=2048)))
RECIPE = Recipe(
    packages=["nginx"],
    files=[RecipeFile(path="/etc/motd", content="hi\n")],
    scripts=["#!/bin/sh\necho one\n", "#!/bin/sh\necho two\n"],
)
KEY = bake.bake_key(user_data=bake.builder_user_data(RECIPE), base_image_id="ami-base", build=BUILD, provider="ec2")
OWNER = ImageOwnerTags(cluster_id="c1", image_uid="0d9f6c1e-8f0a-4a52-9f7c-1b2c3d4e5f60", bake_key=KEY, image="web")


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def target(phase: str, **kw: Any) -> BakeTarget:
    fields: dict[str, Any] = {
        "credential": "aws",
        "region": "us-east-1",
        "phase": phase,
        "bake_key": KEY,
        "attempt": 1,
        "started_at": ago(60),
    }
    return BakeTarget(**(fields | kw))


def node(state: NodeState, provider_id: str = "i-b") -> CloudNode:
    return CloudNode(provider_id=provider_id, name="bake", state=state)


def image(state: ImageState, image_id: str = "ami-new") -> BakedImage:
    return BakedImage(id=image_id, name="sf-web", state=state, tags=OWNER.to_tags())


def step(t: BakeTarget | None, obs: Observed = Observed(), **kw: Any) -> bake.Step:  # noqa: B008 - frozen
    return next_step(
        t, obs, kw.pop("now", NOW), credential="aws", region="us-east-1", key=kw.pop("key", KEY), build=BUILD, **kw
    )


# -- the bake key and the builder ------------------------------------------------------------


def test_bake_key_is_stable_and_changes_only_with_what_is_baked() -> None:
    user_data = bake.builder_user_data(RECIPE)

    def key(**kw: Any) -> str:
        args: dict[str, Any] = {"user_data": user_data, "base_image_id": "ami-base", "build": BUILD, "provider": "ec2"}
        return bake.bake_key(**(args | kw))

    assert re.fullmatch(r"[0-9a-f]{32}", KEY)
    assert key() == KEY  # same inputs, same key (nothing random, nothing ordered by chance)
    other_recipe = bake.builder_user_data(Recipe(packages=["nginx", "jq"]))
    changed = {
        "recipe": key(user_data=other_recipe),
        "base image": key(base_image_id="ami-newer"),
        "builder size": key(build=ImageBuild(builder=Builder(size=Size(cpu=4, memory_mib=2048)))),
    }
    assert len({KEY, *changed.values()}) == 4
    same = ImageBuild(
        builder=Builder(size=Size(cpu=2, memory_mib=2048), timeout_seconds=600),
        keep=5,
        copy_to_regions=["eu-west-1"],
        deletion_policy="Orphan",
    )
    assert key(build=same) == KEY  # how a bake runs is not what it makes
    typed = ImageBuild(builder=Builder(size=Size(cpu=2, memory_mib=2048, instance_types={"ec2": "c7i.large"})))
    assert key(build=typed) != KEY
    assert key(build=typed, provider="gce") == KEY  # the ec2 type does not apply on gce


def test_builder_user_data_runs_the_recipe_then_powers_off_only_on_success() -> None:
    rendered = bake.builder_user_data(RECIPE)

    assert rendered.startswith("#cloud-config\n")
    doc = yaml.safe_load(rendered)
    recipe = yaml.safe_load(recipe_to_cloud_config(RECIPE) or "")
    assert doc["packages"] == recipe["packages"] == ["nginx"]
    assert doc["write_files"][: len(recipe["write_files"])] == recipe["write_files"]
    finish = doc["write_files"][-1]
    assert finish["path"] == "/var/lib/skyfleet/bake-finish.sh"
    assert "cloud-init status --wait" in finish["content"]
    assert "poweroff" in finish["content"]
    assert bake.FAILURE_MARKER in finish["content"]
    waiter, chain = doc["runcmd"]
    assert "bake-finish.sh" in waiter[-1]
    # The recipe's scripts as one chain that stops at the first failure, run last.
    assert chain == ["sh", "-c", "set -e; /var/lib/skyfleet/recipe-00.sh; /var/lib/skyfleet/recipe-01.sh"]
    assert yaml.safe_load(bake.builder_user_data(None))["runcmd"][-1] == ["sh", "-c", "true"]


def test_builder_user_data_must_fit_the_provider() -> None:
    small = bake.builder_user_data(RECIPE)
    big = bake.builder_user_data(Recipe(files=[RecipeFile(path="/big", content="x" * 20000)]))

    assert bake.user_data_problem(small, 16384) is None
    assert bake.user_data_problem(big, None) is None
    problem = bake.user_data_problem(big, 16384)
    assert problem is not None
    assert "16384" in problem
    # A cloud that takes no user data could never run the recipe on a builder.
    assert "no user data" in (bake.user_data_problem(small, None, accepted=False) or "")


def test_builder_request_is_ours_marked_as_builder_and_idempotent() -> None:
    req = bake.builder_request(
        owner=OWNER,
        credential="aws",
        region="us-east-1",
        attempt=2,
        base_image_id="ami-base",
        size_id="t3.small",
        user_data="#cloud-config\n",
        zone="us-east-1a",
    )

    assert isinstance(req, CreateRequest)
    uid = bake.builder_uid(OWNER.image_uid, "aws", "us-east-1", KEY, 2)
    tags = req.tags()
    assert req.owner == bake.builder_owner(OWNER, "aws", "us-east-1", 2)
    assert tags[OwnerTags.INSTANCE_UID] == uid == req.effective_token
    assert tags[ImageOwnerTags.BAKE_KEY] == KEY
    assert tags[ImageOwnerTags.IMAGE_UID] == OWNER.image_uid
    assert tags[ImageOwnerTags.IMAGE] == OWNER.image
    assert bake.is_builder(tags)
    assert bake.builder_owner(OWNER, "aws", "us-east-1", 2).owns(tags)
    assert not bake.builder_owner(OWNER, "aws", "us-east-1", 1).owns(tags)
    assert len(uid) == 36
    assert bake.builder_uid(OWNER.image_uid, "aws", "us-east-1", KEY, 3) != uid
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", req.name)
    assert len(req.name) <= 63
    assert (req.image_id, req.size_id, req.zone) == ("ami-base", "t3.small", "us-east-1a")


@pytest.mark.parametrize("name", ["web", "a.very.long.image-name-with.dots-and-more-than-forty-characters-in-it"])
def test_image_name_is_valid_everywhere_and_unique_per_image_and_key(name: str) -> None:
    made = bake.image_name(name, OWNER.image_uid, KEY)

    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", made)  # GCE's rule, the strictest
    assert len(made) <= 63
    assert bake.image_name(name, "1" + OWNER.image_uid[1:], KEY) != made
    assert bake.image_name(name, OWNER.image_uid, "f" * 32) != made


def test_only_the_rebuilt_marker_line_of_a_failed_console_is_kept() -> None:
    console = (
        "password=hunter2\n"
        f"{bake.FAILURE_MARKER} (cloud-init status 1)\n"
        f"echo {bake.FAILURE_MARKER} (cloud-init status 2) token=s3cr3t\n"
        "\x1b[31mboom\x07\n"
    )

    line = bake.failure_line(console)

    assert line == f"{bake.FAILURE_MARKER} (cloud-init status 2)"  # the last one, rebuilt
    assert bake.failure_line(f"{bake.FAILURE_MARKER}: AKIA-leak") == bake.FAILURE_MARKER
    assert bake.failure_line("skyfleet-bake: recipe succeeded, powering off") is None
    assert bake.failure_line(None) is None
    assert bake.recipe_failed(f"...\n{bake.FAILURE_MARKER} (cloud-init status 1)\n")
    assert not bake.recipe_failed("skyfleet-bake: recipe succeeded, powering off")
    assert not bake.recipe_failed(None)


# -- the state machine, case by case -----------------------------------------------------------

S = Callable[[], bake.Step]
CASES: list[tuple[str, S, Do, dict[str, Any] | None]] = [
    # (case, step, action, fields of the status to persist first; None: no write)
    ("nothing yet: launch a builder", lambda: step(None), Do.LAUNCH_BUILDER, {"phase": "Launching", "attempt": 1}),
    (
        "an image of this key exists: reuse it, no cloud write",
        lambda: step(None, Observed(existing=image(ImageState.AVAILABLE, "ami-old"))),
        Do.REUSE,
        {"phase": "Available", "image_id": "ami-old", "attempt": 0},
    ),
    (
        "an image of this key is pending: wait for it",
        lambda: step(None, Observed(existing=image(ImageState.PENDING, "ami-p"))),
        Do.WAIT_IMAGE,
        {"phase": "Snapshotting", "image_id": "ami-p"},
    ),
    (
        "a failed image of this key: deregister it first",
        lambda: step(None, Observed(existing=image(ImageState.FAILED, "ami-f"))),
        Do.DELETE_IMAGE,
        None,
    ),
    (
        "provider cannot bake: fail at once",
        lambda: step(None, Observed(supported=False)),
        Do.NOTHING,
        {"phase": "Failed", "reason": "UnsupportedProvider"},
    ),
    ("launch recorded, answer lost: launch again (adopts)", lambda: step(target("Launching")), Do.LAUNCH_BUILDER, None),
    (
        "no builder by the deadline",
        lambda: step(target("Launching", started_at=ago(1801))),
        Do.NOTHING,
        {"phase": "Failed", "reason": "BuildTimeout"},
    ),
    (
        "builder running the recipe",
        lambda: step(target("Provisioning", builder_id="i-b"), Observed(builder=node(NodeState.RUNNING))),
        Do.WAIT_BUILDER,
        None,
    ),
    (
        "builder powered off: snapshot, recorded first",
        lambda: step(target("Provisioning", builder_id="i-b"), Observed(builder=node(NodeState.STOPPED))),
        Do.SNAPSHOT,
        {"phase": "Snapshotting", "snapshot_started_at": NOW, "builder_id": "i-b"},
    ),
    (
        "builder still running past the timeout",
        lambda: step(
            target("Provisioning", builder_id="i-b", started_at=ago(1801)), Observed(builder=node(NodeState.RUNNING))
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "BuildTimeout", "builder_id": "i-b", "finished_at": NOW},
    ),
    (
        "the recipe failed: the reason names the marker line only",
        lambda: step(
            target("Provisioning", builder_id="i-b"),
            Observed(
                builder=node(NodeState.RUNNING),
                recipe_failed=True,
                failure_line=f"{bake.FAILURE_MARKER} (cloud-init status 1)",
            ),
        ),
        Do.NOTHING,
        {
            "phase": "Failed",
            "reason": "BuilderFailed",
            "message": "the recipe failed on the builder: skyfleet-bake: recipe failed (cloud-init status 1) "
            "(the rest of its console stays in the cloud)",
        },
    ),
    (
        "the recipe failed (console)",
        lambda: step(
            target("Provisioning", builder_id="i-b"), Observed(builder=node(NodeState.RUNNING), recipe_failed=True)
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "BuilderFailed"},
    ),
    (
        "builder not listed yet, just launched",
        lambda: step(target("Provisioning", builder_id="i-b", started_at=ago(10))),
        Do.WAIT_BUILDER,
        None,
    ),
    (
        "builder gone",
        lambda: step(target("Provisioning", builder_id="i-b", started_at=ago(600))),
        Do.NOTHING,
        {"phase": "Failed", "reason": "BuilderFailed"},
    ),
    (
        "builder terminated out of band",
        lambda: step(target("Provisioning", builder_id="i-b"), Observed(builder=node(NodeState.TERMINATED))),
        Do.NOTHING,
        {"phase": "Failed", "reason": "BuilderFailed"},
    ),
    (
        "snapshot recorded, answer lost: snapshot again (adopts by key)",
        lambda: step(target("Snapshotting", builder_id="i-b", snapshot_started_at=ago(30))),
        Do.SNAPSHOT,
        None,
    ),
    (
        "image pending",
        lambda: step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(300)),
            Observed(image=image(ImageState.PENDING)),
        ),
        Do.WAIT_IMAGE,
        None,
    ),
    (
        "image pending past its deadline",
        lambda: step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(3601)),
            Observed(image=image(ImageState.PENDING)),
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "SnapshotFailed", "image_id": "ami-new"},
    ),
    (
        "image pending past the builder's snapshotTimeoutSeconds",
        lambda: next_step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(301)),
            Observed(image=image(ImageState.PENDING)),
            NOW,
            credential="aws",
            region="us-east-1",
            key=KEY,
            build=BUILD.model_copy(
                update={"builder": BUILD.builder.model_copy(update={"snapshot_timeout_seconds": 300})}
            ),
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "SnapshotFailed", "message": "the image was still pending after 301 s"},
    ),
    (
        "image pending within the builder's snapshotTimeoutSeconds",
        lambda: next_step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(299)),
            Observed(image=image(ImageState.PENDING)),
            NOW,
            credential="aws",
            region="us-east-1",
            key=KEY,
            build=BUILD.model_copy(
                update={"builder": BUILD.builder.model_copy(update={"snapshot_timeout_seconds": 300})}
            ),
        ),
        Do.WAIT_IMAGE,
        None,
    ),
    (
        "image available: record it",
        lambda: step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(300)),
            Observed(image=image(ImageState.AVAILABLE)),
        ),
        Do.NOTHING,
        {"phase": "Available", "image_id": "ami-new", "finished_at": NOW, "builder_id": "i-b"},
    ),
    (
        "image failed in the cloud",
        lambda: step(
            target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(300)),
            Observed(image=dataclasses.replace(image(ImageState.FAILED), reason="Client.InternalError")),
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "SnapshotFailed", "message": "the cloud failed the image (Client.InternalError)"},
    ),
    (
        "image vanished while pending",
        lambda: step(target("Snapshotting", builder_id="i-b", image_id="ami-new", snapshot_started_at=ago(600))),
        Do.NOTHING,
        {"phase": "Failed", "reason": "SnapshotFailed"},
    ),
    (
        "provisional id replaced by the final one (DigitalOcean)",
        lambda: step(
            target("Snapshotting", builder_id="d-1", image_id="action/9", snapshot_started_at=ago(300)),
            Observed(image=image(ImageState.PENDING, "snap-77")),
        ),
        Do.WAIT_IMAGE,
        {"image_id": "snap-77", "phase": "Snapshotting"},
    ),
    (
        "available: the builder goes",
        lambda: step(
            target("Available", builder_id="i-b", image_id="ami-new"), Observed(image=image(ImageState.AVAILABLE))
        ),
        Do.DELETE_BUILDER,
        None,
    ),
    (
        "available and clean: nothing to do, nothing written",
        lambda: step(target("Available", image_id="ami-new"), Observed(image=image(ImageState.AVAILABLE))),
        Do.NOTHING,
        None,
    ),
    (
        "baked image deleted out of band: bake again",
        lambda: step(target("Available", image_id="ami-new")),
        Do.LAUNCH_BUILDER,
        {"phase": "Launching", "attempt": 2},
    ),
    (
        "failed: the builder goes",
        lambda: step(target("Failed", builder_id="i-b", reason="BuildTimeout", finished_at=NOW)),
        Do.DELETE_BUILDER,
        None,
    ),
    (
        "failed with a pending image: it goes too",
        lambda: step(
            target("Failed", image_id="ami-new", reason="SnapshotFailed", finished_at=NOW),
            Observed(image=image(ImageState.PENDING)),
        ),
        Do.DELETE_IMAGE,
        None,
    ),
    (
        "failed and clean: wait for the backoff",
        lambda: step(target("Failed", reason="BuildTimeout", finished_at=ago(60))),
        Do.NOTHING,
        None,
    ),
    (
        "failed, backoff over: try again with a new builder",
        lambda: step(target("Failed", reason="QuotaExceeded", finished_at=ago(601))),
        Do.LAUNCH_BUILDER,
        {"phase": "Launching", "attempt": 2, "reason": None},
    ),
    (
        "failed too often: stays failed",
        lambda: step(target("Failed", reason="BuildTimeout", attempt=5, finished_at=ago(10**6))),
        Do.NOTHING,
        None,
    ),
    (
        "failed as unsupported: never retried",
        lambda: step(target("Failed", reason="UnsupportedProvider", attempt=0, finished_at=ago(10**6))),
        Do.NOTHING,
        None,
    ),
    (
        "recipe changed mid-bake: the old builder goes first",
        lambda: step(target("Provisioning", builder_id="i-old"), key="f" * 32),
        Do.DELETE_BUILDER,
        None,
    ),
    (
        "recipe changed mid-snapshot: the old partial image goes",
        lambda: step(
            target("Snapshotting", image_id="ami-old", snapshot_started_at=ago(30)),
            Observed(image=image(ImageState.PENDING, "ami-old")),
            key="f" * 32,
        ),
        Do.DELETE_IMAGE,
        None,
    ),
    (
        "recipe changed after a bake: a new generation",
        lambda: step(
            target("Available", image_id="ami-old"), Observed(image=image(ImageState.AVAILABLE)), key="f" * 32
        ),
        Do.LAUNCH_BUILDER,
        {"phase": "Launching", "attempt": 1, "bake_key": "f" * 32, "image_id": None},
    ),
    (
        "Image deleted mid-bake: the builder goes",
        lambda: step(target("Provisioning", builder_id="i-b"), deleting=True),
        Do.DELETE_BUILDER,
        None,
    ),
    (
        "Image deleted mid-snapshot: the partial image goes",
        lambda: step(
            target("Snapshotting", image_id="ami-new", snapshot_started_at=ago(10)),
            Observed(image=image(ImageState.PENDING)),
            deleting=True,
        ),
        Do.DELETE_IMAGE,
        None,
    ),
    (
        "Image deleted, bake clean: nothing (generations are retention's)",
        lambda: step(
            target("Available", image_id="ami-new"), Observed(image=image(ImageState.AVAILABLE)), deleting=True
        ),
        Do.NOTHING,
        None,
    ),
    (
        "copy: the source region has not baked yet",
        lambda: step(None, source=target("Provisioning", region="us-west-2", builder_id="i-b")),
        Do.NOTHING,
        None,
    ),
    (
        "copy: the source image is available",
        lambda: step(None, source=target("Available", region="us-west-2", image_id="ami-src")),
        Do.COPY_IMAGE,
        {"phase": "Snapshotting", "source_region": "us-west-2", "snapshot_started_at": NOW},
    ),
    (
        "copy recorded, answer lost: copy again (adopts by key)",
        lambda: step(
            target("Snapshotting", source_region="us-west-2", snapshot_started_at=ago(20)),
            source=target("Available", region="us-west-2", image_id="ami-src"),
        ),
        Do.COPY_IMAGE,
        None,
    ),
    (
        "copy: the provider cannot copy",
        lambda: step(
            None, Observed(supported=False), source=target("Available", region="us-west-2", image_id="ami-src")
        ),
        Do.NOTHING,
        {"phase": "Failed", "reason": "UnsupportedProvider"},
    ),
]


@pytest.mark.parametrize(("case", "decide", "action", "status"), CASES, ids=[c[0] for c in CASES])
def test_next_step(case: str, decide: S, action: Do, status: dict[str, Any] | None) -> None:
    decided = decide()

    assert decided.action is action, case
    if status is None:
        assert decided.status is None, case
        return
    assert decided.status is not None, case
    for name, value in status.items():
        assert getattr(decided.status, name) == value, f"{case}: {name}"


def test_cleanup_steps_name_what_to_delete() -> None:
    assert step(target("Failed", builder_id="i-b", finished_at=NOW)).builder_id == "i-b"
    deleted = step(target("Snapshotting", image_id="ami-x"), Observed(image=image(ImageState.PENDING)), deleting=True)
    assert deleted.image_id == "ami-x"


def test_waits_back_off_and_stay_within_the_deadline() -> None:
    early = step(
        target("Snapshotting", image_id="ami-new", snapshot_started_at=ago(20)),
        Observed(image=image(ImageState.PENDING)),
    )
    late = step(
        target("Snapshotting", image_id="ami-new", snapshot_started_at=ago(1200)),
        Observed(image=image(ImageState.PENDING)),
    )
    assert early.requeue is not None
    assert late.requeue is not None
    assert 5 <= early.requeue < late.requeue <= 60
    near = step(
        target("Provisioning", builder_id="i-b", started_at=ago(1795)), Observed(builder=node(NodeState.RUNNING))
    )
    assert near.requeue is not None
    assert near.requeue <= 5  # looks again right at the timeout, not 30 s after it


def test_call_failures_become_reasons_or_retries() -> None:
    t = target("Launching")
    assert bake.failure(t, Do.LAUNCH_BUILDER, "quota_exceeded", "image quota", NOW).reason == "QuotaExceeded"  # type: ignore[union-attr]
    assert bake.failure(t, Do.LAUNCH_BUILDER, "unsupported", "no", NOW).reason == "UnsupportedProvider"  # type: ignore[union-attr]
    assert bake.failure(t, Do.LAUNCH_BUILDER, "invalid_request", "bad size", NOW).reason == "BuilderFailed"  # type: ignore[union-attr]
    assert bake.failure(t, Do.SNAPSHOT, "invalid_request", "bad", NOW).reason == "SnapshotFailed"  # type: ignore[union-attr]
    assert bake.failure(t, Do.SNAPSHOT, "throttled", "slow down", NOW) is None
    assert bake.failure(t, Do.SNAPSHOT, "transient", "503", NOW) is None


# -- a crash after any step resumes instead of starting over ---------------------------------


class FakeCloud:
    """Just enough cloud for the state machine: builders adopted by uid, images by bake key."""

    def __init__(self, stop_after: float, pending_for: float) -> None:
        self.stop_after = stop_after
        self.pending_for = pending_for
        self.builders: dict[str, tuple[str, datetime, bool]] = {}  # id -> (uid, launched, deleted)
        self.images: dict[str, tuple[str, datetime, bool]] = {}  # id -> (key, requested, deregistered)
        self.launches = 0
        self.snapshots = 0

    def create(self, req: CreateRequest, now: datetime) -> CloudNode:
        uid = req.owner.instance_uid
        for bid, (u, _, deleted) in self.builders.items():
            if u == uid and not deleted:
                return self.describe(bid, now)  # type: ignore[return-value]
        self.launches += 1
        bid = f"i-{len(self.builders)}"
        self.builders[bid] = (uid, now, False)
        return self.describe(bid, now)  # type: ignore[return-value]

    def describe(self, bid: str | None, now: datetime) -> CloudNode | None:
        if bid is None or bid not in self.builders or self.builders[bid][2]:
            return None
        stopped = (now - self.builders[bid][1]).total_seconds() >= self.stop_after
        return node(NodeState.STOPPED if stopped else NodeState.RUNNING, bid)

    def create_image(self, key: str, now: datetime) -> BakedImage:
        existing = self.find(key, now)
        if existing is not None:
            return existing
        self.snapshots += 1
        iid = f"ami-{len(self.images)}"
        self.images[iid] = (key, now, False)
        return self.get(iid, now)  # type: ignore[return-value]

    def get(self, iid: str | None, now: datetime) -> BakedImage | None:
        if iid is None or iid not in self.images or self.images[iid][2]:
            return None
        ready = (now - self.images[iid][1]).total_seconds() >= self.pending_for
        return image(ImageState.AVAILABLE if ready else ImageState.PENDING, iid)

    def find(self, key: str, now: datetime) -> BakedImage | None:
        for iid, (k, _, gone) in self.images.items():
            if k == key and not gone:
                return self.get(iid, now)
        return None

    def alive_builders(self) -> list[str]:
        return [bid for bid, (_, _, deleted) in self.builders.items() if not deleted]


def run_bake(cloud: FakeCloud, crash_at: int, crash_after_call: bool, max_steps: int = 60) -> BakeTarget | None:
    """The handler's loop, executed faithfully, with one crash: at step ``crash_at`` the process
    dies before (or right after) the cloud call, losing everything not yet in status."""
    status: BakeTarget | None = None
    now = NOW
    for n in range(max_steps):
        obs = Observed(
            builder=cloud.describe(status.builder_id if status else None, now),
            image=cloud.get(status.image_id if status else None, now),
            existing=cloud.find(KEY, now) if status is None or status.phase == "Available" else None,
        )
        decided = step(status, obs, now=now)
        if decided.status is not None:
            status = decided.status  # persisted before the call
        crash = n == crash_at
        if crash and not crash_after_call:
            now += timedelta(seconds=30)
            continue
        result: Any = None
        if decided.action is Do.LAUNCH_BUILDER:
            assert status is not None
            req = bake.builder_request(
                owner=OWNER,
                credential="aws",
                region="us-east-1",
                attempt=status.attempt,
                base_image_id="ami-base",
                size_id="t3.small",
                user_data="#cloud-config\n",
            )
            result = cloud.create(req, now)
            if not crash:
                status = bake.launched(status, result)
        elif decided.action is Do.SNAPSHOT:
            assert status is not None
            result = cloud.create_image(KEY, now)
            if not crash:
                status = bake.image_requested(status, result)
        elif decided.action is Do.DELETE_BUILDER:
            assert status is not None
            uid, launched_at, _ = cloud.builders[decided.builder_id or ""]
            cloud.builders[decided.builder_id or ""] = (uid, launched_at, True)
            if not crash:
                status = bake.builder_deleted(status)
        elif (
            decided.action is Do.NOTHING
            and status is not None
            and status.phase == "Available"
            and not status.builder_id
        ):
            return status
        now += timedelta(seconds=30)
    return status


@pytest.mark.parametrize("crash_after_call", [False, True], ids=["before-call", "after-call"])
@pytest.mark.parametrize("crash_at", range(12))
def test_a_crash_at_any_step_resumes_with_one_builder_and_one_image(crash_at: int, crash_after_call: bool) -> None:
    cloud = FakeCloud(stop_after=90, pending_for=90)

    final = run_bake(cloud, crash_at, crash_after_call)

    assert final is not None
    assert final.phase == "Available"
    assert final.image_id is not None
    assert cloud.launches == 1
    assert cloud.snapshots == 1
    assert cloud.alive_builders() == []


def test_without_a_crash_the_bake_takes_the_expected_steps() -> None:
    cloud = FakeCloud(stop_after=90, pending_for=90)
    final = run_bake(cloud, crash_at=-1, crash_after_call=False)
    assert final is not None
    assert final.attempt == 1
    assert final.finished_at is not None
    assert final.started_at is not None
    assert (final.finished_at - final.started_at).total_seconds() <= 300


# -- what VMs boot from, and which generations go -------------------------------------------


def gen(key: str, image_id: str, hours: int, credential: str = "aws", region: str = "us-east-1") -> BakedGeneration:
    return BakedGeneration(
        credential=credential, region=region, bake_key=key, image_id=image_id, created_at=NOW - timedelta(hours=hours)
    )


def test_baked_vms_boot_the_baked_image_without_the_recipe() -> None:
    status = ImageStatus(
        bakes=[target("Available", image_id="ami-baked")],
        generations=[gen(KEY, "ami-baked", 1)],
    )
    source = bake.boot_source(status, baked=True, credential="aws", region="us-east-1", base_image_id="ami-base")

    assert (source.image_id, source.bake_key, source.with_recipe) == ("ami-baked", KEY, False)
    recipe = recipe_to_cloud_config(RECIPE)
    assert bake.boot_user_data(recipe, "#!/bin/sh\necho group\n", source) == "#!/bin/sh\necho group\n"
    assert bake.boot_user_data(recipe, None, source) is None


def test_unbaked_vms_boot_the_base_image_with_the_recipe() -> None:
    source = bake.boot_source(None, baked=False, credential="aws", region="us-east-1", base_image_id="ami-base")

    assert (source.image_id, source.with_recipe) == ("ami-base", True)
    recipe = recipe_to_cloud_config(RECIPE)
    assert bake.boot_user_data(recipe, None, source) == recipe


def test_while_a_new_generation_bakes_the_previous_one_serves() -> None:
    status = ImageStatus(
        bakes=[target("Provisioning", bake_key="f" * 32, builder_id="i-b")],
        generations=[gen(KEY, "ami-old", 30), gen(KEY, "ami-prev", 2, region="eu-west-1"), gen("e" * 32, "ami-mid", 5)],
    )
    source = bake.boot_source(status, baked=True, credential="aws", region="us-east-1", base_image_id="ami-base")

    assert (source.image_id, source.with_recipe) == ("ami-mid", False)


@pytest.mark.parametrize(
    ("bakes", "waiting"),
    [
        ([], "bake not started"),
        ([target("Provisioning")], "bake Provisioning"),
        ([target("Failed", reason="BuildTimeout")], "bake failed: BuildTimeout"),
    ],
)
def test_first_bake_not_ready_means_wait(bakes: list[BakeTarget], waiting: str) -> None:
    source = bake.boot_source(
        ImageStatus(bakes=bakes or None), baked=True, credential="aws", region="us-east-1", base_image_id="ami-base"
    )

    assert source.image_id is None
    assert source.waiting is not None
    assert waiting in source.waiting


def test_retention_keeps_the_newest_and_what_instances_use() -> None:
    gens = [
        gen(KEY, "ami-current", 1),
        gen("b" * 32, "ami-1", 10),
        gen("c" * 32, "ami-2", 20),
        gen("d" * 32, "ami-3", 30),
        gen("e" * 32, "ami-4", 40),
        gen("b" * 32, "ami-eu", 10, region="eu-west-1"),
    ]
    current = {("aws", "us-east-1"): KEY, ("aws", "eu-west-1"): "b" * 32}

    doomed = bake.retention(gens, current, keep=2, in_use={"ami-3"})

    assert [g.image_id for g in doomed] == ["ami-4", "ami-2"]
    assert bake.retention(gens, current, keep=5, in_use=()) == []
    # The current key is kept even when it is not the newest (a rollback to an older recipe).
    rollback = {("aws", "us-east-1"): "e" * 32, ("aws", "eu-west-1"): "b" * 32}
    assert "ami-4" not in [g.image_id for g in bake.retention(gens, rollback, keep=1, in_use=())]
    everything = bake.retention(gens, current, keep=2, in_use={"ami-3"}, deleting=True)
    assert sorted(g.image_id for g in everything) == ["ami-1", "ami-2", "ami-4", "ami-current", "ami-eu"]


def test_generations_are_recorded_once() -> None:
    done = target("Available", image_id="ami-new", finished_at=NOW)

    once = bake.add_generation([], done)
    assert bake.add_generation(once, done) == once
    assert once == [
        BakedGeneration(credential="aws", region="us-east-1", bake_key=KEY, image_id="ami-new", created_at=NOW)
    ]
    assert bake.add_generation([], target("Snapshotting", image_id="ami-x")) == []


def test_stray_builders_are_old_unreferenced_builders_only() -> None:
    tags = {ImageOwnerTags.ROLE: ImageOwnerTags.BUILDER}

    def vm(pid: str, age: float, role: bool = True) -> CloudNode:
        return CloudNode(
            provider_id=pid, name=pid, state=NodeState.RUNNING, tags=tags if role else {}, created_at=ago(age)
        )

    stray = bake.stray_builders(
        [vm("i-current", 900), vm("i-old", 900), vm("i-new", 10), vm("i-instance", 900, role=False)],
        {"i-current"},
        now=NOW,
    )

    assert [n.provider_id for n in stray] == ["i-old"]


def test_conditions_say_ready_building_or_degraded_with_reasons() -> None:
    baked = bake.bake_conditions([], [target("Available", image_id="a")], now=NOW, generation=3)
    ready = find_condition(baked.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason, baked.phase) == (ConditionStatus.TRUE, "Baked", "Baked")

    busy = bake.bake_conditions([], [target("Provisioning"), target("Available", region="eu")], now=NOW, generation=3)
    assert (find_condition(busy.conditions, "Building") or ready).status == ConditionStatus.TRUE
    assert (find_condition(busy.conditions, "Ready") or ready).reason == "Baking"

    failed = bake.bake_conditions(
        [],
        [target("Failed", reason=Reason.SNAPSHOT_FAILED.value, message="pending after 3601 s")],
        now=NOW,
        generation=3,
    )
    degraded = find_condition(failed.conditions, "Degraded")
    assert degraded is not None
    assert (degraded.status, degraded.reason) == (ConditionStatus.TRUE, "SnapshotFailed")
    not_ready = find_condition(failed.conditions, "Ready")
    assert not_ready is not None
    assert not_ready.reason == "SnapshotFailed"
    assert "pending after 3601 s" in not_ready.message
    assert failed.phase == "Failed"


def test_sharing_is_asked_until_status_records_every_account() -> None:
    available = target("Available", image_id="ami-new")

    assert bake.to_share(available, ["111111111111", "222222222222"]) == ["111111111111", "222222222222"]
    half = bake.shared(available, ["111111111111"])
    assert half.shared_with == ["111111111111"]
    assert bake.to_share(half, ["111111111111", "222222222222"]) == ["222222222222"]  # a crash in between
    assert bake.to_share(bake.shared(half, ["222222222222"]), ["222222222222", "111111111111"]) == []
    assert bake.to_share(target("Snapshotting", image_id="ami-new"), ["111111111111"]) == []  # not yet
    assert bake.to_share(available, None) == []
    assert bake.to_share(None, ["111111111111"]) == []
