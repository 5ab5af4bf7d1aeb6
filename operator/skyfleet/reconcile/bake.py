"""Baking decisions: what the bake loop does next for one Image on one credential and region.

A bake is Packer's loop (launch a builder -> let the recipe run -> image the stopped builder ->
delete the builder, always) with one twist: every step is decided from the Image's status and
what the cloud shows now, never from memory. The handler persists the status ``next_step``
returns *before* it makes the cloud call the step names, so a crash at any point resumes:

* a builder launched but not recorded is adopted by its owner tags (``builder_uid`` is
  deterministic per Image, target, bake key and attempt);
* an image requested but not recorded is found by its bake key (``ImageOwnerTags.lookup``);
* a builder is deleted on success, failure, timeout, key change and Image deletion alike.

Nothing here does I/O: the handler observes (describe the builder, get the image, look the
bake key up) and executes one ``Step`` at a time.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import yaml

from skyfleet.api.common import Condition
from skyfleet.api.deployment import Size
from skyfleet.api.image import BakedGeneration, BakeTarget, ImageBuild, ImageStatus, Recipe
from skyfleet.contract import BakedImage, CloudNode, CreateRequest, ImageOwnerTags, ImageState, NodeState, OwnerTags
from skyfleet.reconcile.conditions import set_condition
from skyfleet.reconcile.userdata import combine, recipe_to_cloud_config

__all__ = [
    "DEFAULT_KEEP",
    "DEFAULT_SNAPSHOT_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "BootSource",
    "Do",
    "Observed",
    "Reason",
    "Step",
    "add_generation",
    "bake_conditions",
    "bake_key",
    "boot_source",
    "boot_user_data",
    "builder_deleted",
    "builder_owner",
    "builder_request",
    "builder_uid",
    "builder_user_data",
    "failure",
    "failure_line",
    "image_deleted",
    "image_name",
    "image_requested",
    "is_builder",
    "launched",
    "next_step",
    "recipe_failed",
    "record_available",
    "retention",
    "shared",
    "stray_builders",
    "to_share",
    "user_data_problem",
]

DEFAULT_TIMEOUT = 1800
DEFAULT_KEEP = 2
# How long an image may stay pending before the bake is SnapshotFailed: EC2 takes minutes for
# a small AMI; an hour is past anything healthy (Packer's waiter gives up far sooner, #8415).
DEFAULT_SNAPSHOT_TIMEOUT = 3600
KEY_LENGTH = 32
# A Failed bake is tried again with the same key after this backoff (doubling per attempt, up
# to the cap), at most MAX_ATTEMPTS times: quota frees up and mirrors come back, but a broken
# recipe must not launch builders forever.
RETRY_BACKOFF = 600
RETRY_BACKOFF_CAP = 6 * 3600
MAX_ATTEMPTS = 5
# Clouds list new things late (EC2 describes a fresh instance or AMI as not found for a while):
# a builder or image missing this soon after it was made is not yet a failure.
VISIBILITY_GRACE = 120.0
# The line the builder prints on its console when the recipe failed (see builder_user_data).
FAILURE_MARKER = "skyfleet-bake: recipe failed"
_BUILDER_NAMESPACE = uuid.UUID("c4f0f6a2-6d1e-4d39-9c55-0b7d3c1f5e21")
_UNSAFE = re.compile(r"[^a-z0-9-]+")


class Reason(enum.StrEnum):
    """Condition and BakeTarget reasons, CamelCase for machines."""

    BUILDER_FAILED = "BuilderFailed"
    BUILD_TIMEOUT = "BuildTimeout"
    SNAPSHOT_FAILED = "SnapshotFailed"
    UNSUPPORTED_PROVIDER = "UnsupportedProvider"
    QUOTA_EXCEEDED = "QuotaExceeded"
    INVALID_RECIPE = "InvalidRecipe"


class Do(enum.StrEnum):
    """What the handler executes after persisting ``Step.status``."""

    NOTHING = "Nothing"
    REUSE = "Reuse"  # an image with this bake key exists: recorded, no cloud write
    LAUNCH_BUILDER = "LaunchBuilder"  # connector.create(builder_request(...)); adopts a lost launch
    WAIT_BUILDER = "WaitBuilder"
    SNAPSHOT = "Snapshot"  # connector.create_image(...); adopts an image made by a lost call
    COPY_IMAGE = "CopyImage"  # connector.copy_image(...) from the source region's image
    WAIT_IMAGE = "WaitImage"
    DELETE_BUILDER = "DeleteBuilder"  # connector.destroy(builder_id, builder owner tags)
    DELETE_IMAGE = "DeleteImage"  # connector.deregister_image(image_id, owner): a partial image


@dataclass(frozen=True)
class Observed:
    """What the handler saw in the cloud just now, for one target.

    The handler must look up every id the target's status names, every pass: None means the
    cloud says it does not exist (an Available target whose image is None is baked again).

    ``builder``: the describe() of ``status.builder_id`` (None: gone or never made).
    ``image``: the get_image() of ``status.image_id``, with the owner tags (None: gone).
    ``existing``: find_images(lookup of the desired key), the best one (None: no such image).
    ``recipe_failed``: the builder's console shows ``FAILURE_MARKER``; ``failure_line`` is
    that line as ``failure_line()`` rebuilds it (never other console text).
    ``supported``: the connector's ``capabilities.bake`` (``image_copy`` for copy targets).
    """

    builder: CloudNode | None = None
    image: BakedImage | None = None
    existing: BakedImage | None = None
    recipe_failed: bool = False
    failure_line: str | None = None
    supported: bool = True


@dataclass(frozen=True)
class Step:
    """Persist ``status`` (when not None) first, then execute ``action``; look again after ``requeue``."""

    action: Do
    status: BakeTarget | None
    requeue: float | None = None
    # For DELETE_BUILDER / DELETE_IMAGE: which one (the status may already have moved on).
    builder_id: str | None = None
    image_id: str | None = None


# -- the bake key, the builder and its user data --------------------------------------------


def builder_user_data(recipe: Recipe | None) -> str:
    """The recipe as cloud-init for a builder: run once, then power off only on success.

    The recipe's scripts run as one ``set -e`` chain, so the first failing script fails the
    run (cloud-init's runcmd would run on and report only the last exit code). A unit started
    with systemd-run waits for cloud-init to finish: without errors it cleans cloud-init's
    per-instance state (the image must boot fresh) and powers off; with errors it prints
    ``FAILURE_MARKER`` on the console and leaves the builder running, which the bake loop
    reports as BuilderFailed (console output) or, where the cloud has none, BuildTimeout.
    """
    doc: dict[str, object] = {}
    rendered = recipe_to_cloud_config(recipe)
    if rendered is not None:
        loaded = yaml.safe_load(rendered)
        assert isinstance(loaded, dict)
        doc.update(loaded)
    runcmd = doc.pop("runcmd", None)
    scripts = [str(cmd[0]) for cmd in runcmd if isinstance(cmd, list) and cmd] if isinstance(runcmd, list) else []
    files = doc.setdefault("write_files", [])
    assert isinstance(files, list)
    files.append({"path": "/var/lib/skyfleet/bake-finish.sh", "content": _FINISH_SCRIPT, "permissions": "0755"})
    chain = "set -e; " + "; ".join(scripts) if scripts else "true"
    doc["runcmd"] = [
        # First the waiter, so that the recipe's chain is the last command and decides the
        # exit code cloud-init records for runcmd.
        [
            "sh",
            "-c",
            "systemd-run --unit=skyfleet-bake-finish /var/lib/skyfleet/bake-finish.sh "
            "|| nohup /var/lib/skyfleet/bake-finish.sh >/dev/null 2>&1 &",
        ],
        ["sh", "-c", chain],
    ]
    return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


_FINISH_SCRIPT = f"""#!/bin/sh
# Written by Skyfleet on a builder VM: power off once cloud-init finished without errors.
cloud-init status --wait >/dev/null 2>&1
rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]; then
  echo "skyfleet-bake: recipe succeeded, powering off" >/dev/console
  cloud-init clean --logs >/dev/null 2>&1 || true
  sync
  exec poweroff
fi
echo "{FAILURE_MARKER} (cloud-init status $rc)" >/dev/console
"""


def user_data_problem(user_data: str, limit: int | None, *, accepted: bool = True) -> str | None:
    """Why ``user_data`` cannot go to a provider accepting ``limit`` bytes, or none at all
    (``accepted`` false: the recipe could not run on the builder). None: it fits."""
    if not accepted:
        return "the provider takes no user data, so the builder could not run the recipe"
    size = len(user_data.encode())
    if limit is not None and size > limit:
        return f"the builder's user data is {size} bytes, the provider accepts at most {limit}"
    return None


def _builder_settings(build: ImageBuild, provider: str) -> dict[str, object]:
    size: Size = build.builder.size
    explicit = (size.instance_types or {}).get(provider)
    if explicit:
        return {"instanceType": explicit}
    return {"cpu": size.cpu, "memoryMiB": size.memory_mib, "diskGiB": size.disk_gib}


def bake_key(*, user_data: str, base_image_id: str, build: ImageBuild, provider: str) -> str:
    """What makes a baked image outdated: the builder's user data (the rendered recipe), the
    base image's native id and the builder size on this provider.

    The timeout, zone, subnet and keep/copy settings change how a bake runs, not what it
    makes, so changing them bakes nothing new. The same inputs give the same key in every
    process and version of Python (sorted JSON, SHA-256).
    """
    material = json.dumps(
        {"userData": user_data, "baseImage": base_image_id, "builder": _builder_settings(build, provider)},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:KEY_LENGTH]


def builder_uid(image_uid: str, credential: str, region: str, key: str, attempt: int) -> str:
    """The builder's stand-in for an Instance UID: owner tag and idempotency token of its launch.

    Deterministic, so a launch whose answer was lost is adopted; new per attempt, so a failed
    builder's token (EC2 remembers it) never answers for the next one. UUID-shaped, so it fits
    every provider's tag limits exactly as Instance UIDs do.
    """
    return str(uuid.uuid5(_BUILDER_NAMESPACE, f"{image_uid}/{credential}/{region}/{key}/{attempt}"))


def _safe(text: str, length: int) -> str:
    return _UNSAFE.sub("-", text.lower()).strip("-")[:length].strip("-")


def image_name(image: str, image_uid: str, key: str) -> str:
    """The native image's name: unique per Image and bake key, valid on every provider (GCE's
    rules are the strictest: lowercase letters, digits and dashes, at most 63, a letter first)."""
    return f"sf-{_safe(image, 32)}-{_safe(image_uid, 8)}-{key[:12]}"


def builder_request(
    *,
    owner: ImageOwnerTags,
    credential: str,
    region: str,
    attempt: int,
    base_image_id: str,
    size_id: str,
    user_data: str,
    zone: str | None = None,
    subnet: str | None = None,
) -> CreateRequest:
    """The builder VM: ours by the usual owner tags (so destroy checks them), and marked as a builder."""
    uid = builder_uid(owner.image_uid, credential, region, owner.bake_key, attempt)
    name = f"bake-{_safe(owner.image or 'image', 40)}-{owner.bake_key[:8]}-{attempt}"
    # The Image's own tags (which image, which bake) beside the owner tags, and the role.
    provenance = {k: v for k, v in owner.to_tags().items() if k not in OwnerTags.KEYS}
    return CreateRequest(
        name=name,
        image_id=base_image_id,
        size_id=size_id,
        owner=builder_owner(owner, credential, region, attempt),
        region=region,
        zone=zone,
        subnet=subnet,
        user_data=user_data,
        extra_tags={**provenance, ImageOwnerTags.ROLE: ImageOwnerTags.BUILDER},
        idempotency_token=uid,
    )


def builder_owner(owner: ImageOwnerTags, credential: str, region: str, attempt: int) -> OwnerTags:
    """What ``connector.destroy`` must see on a builder before deleting it."""
    uid = builder_uid(owner.image_uid, credential, region, owner.bake_key, attempt)
    return OwnerTags(cluster_id=owner.cluster_id, instance_uid=uid, namespace=owner.namespace)


def is_builder(tags: Mapping[str, str]) -> bool:
    """Builder VMs are not Instances: the orphan sweep must leave them to the bake loop."""
    return tags.get(ImageOwnerTags.ROLE) == ImageOwnerTags.BUILDER


def recipe_failed(console: str | None) -> bool:
    return console is not None and FAILURE_MARKER in console


def failure_line(console: str | None) -> str | None:
    """What of a failed builder's console may be shown: Skyfleet's own marker line, rebuilt.

    The console is the user's VM talking: their recipe's output, which may echo secrets from
    its files or scripts. Only the line ``builder_user_data`` prints is taken, and not as
    text: it is rebuilt from the marker and the cloud-init exit status (digits), so nothing
    the recipe printed, even on that line, reaches status, events or logs. None: no marker.
    """
    if not recipe_failed(console):
        return None
    assert console is not None
    codes = _FAILURE_LINE.findall(console)
    return f"{FAILURE_MARKER} (cloud-init status {codes[-1]})" if codes else FAILURE_MARKER


_FAILURE_LINE = re.compile(re.escape(FAILURE_MARKER) + r" \(cloud-init status (\d{1,3})\)")


def to_share(target: BakeTarget | None, share_with: Sequence[str] | None) -> list[str]:
    """Accounts ``target``'s image still has to be shared with: every ``shareWith`` account
    not recorded in ``sharedWith``, once the image is Available (after a crash or a failed
    call too: sharing is idempotent, so it is asked again until status records it)."""
    if target is None or target.phase != "Available" or not target.image_id or not share_with:
        return []
    done = set(target.shared_with or [])
    return sorted({a for a in share_with if a not in done})


def shared(target: BakeTarget, accounts: Sequence[str]) -> BakeTarget:
    return target.model_copy(update={"shared_with": sorted({*(target.shared_with or []), *accounts})})


# -- the state machine ----------------------------------------------------------------------


def _timeout(build: ImageBuild) -> float:
    return float(build.builder.timeout_seconds or DEFAULT_TIMEOUT)


def _failed(target: BakeTarget, reason: Reason, message: str, now: datetime) -> BakeTarget:
    return target.model_copy(
        update={"phase": "Failed", "reason": reason.value, "message": message[:1024], "finished_at": now}
    )


def record_available(target: BakeTarget, image: BakedImage, now: datetime) -> BakeTarget:
    return target.model_copy(
        update={"phase": "Available", "image_id": image.id, "finished_at": now, "reason": None, "message": None}
    )


# -- what the handler persists after a step's cloud call --------------------------------------


def launched(target: BakeTarget, builder: CloudNode) -> BakeTarget:
    """After LAUNCH_BUILDER: the builder's id, at once (destroy needs it on every path)."""
    return target.model_copy(update={"phase": "Provisioning", "builder_id": builder.provider_id})


def image_requested(target: BakeTarget, image: BakedImage) -> BakeTarget:
    """After SNAPSHOT or COPY_IMAGE: the image's id (maybe provisional, see get_image)."""
    return target.model_copy(update={"image_id": image.id})


def builder_deleted(target: BakeTarget) -> BakeTarget:
    return target.model_copy(update={"builder_id": None})


def image_deleted(target: BakeTarget) -> BakeTarget:
    return target.model_copy(update={"image_id": None})


def failure(target: BakeTarget, action: Do, outcome: str, message: str, now: datetime) -> BakeTarget | None:
    """A failed cloud call of ``action``, by the error's ``outcome`` (ConnectorError.outcome):
    the failed bake to record, or None to try again at the next pass (throttling, 5xx, resets,
    and everything else the connector already retried; the bake's own deadlines still hold)."""
    if outcome == "quota_exceeded":
        return _failed(target, Reason.QUOTA_EXCEEDED, message, now)
    if outcome == "unsupported":
        return _failed(target, Reason.UNSUPPORTED_PROVIDER, message, now)
    if outcome in ("invalid_request", "permanent", "invalid_credentials", "capacity_unavailable"):
        reason = Reason.BUILDER_FAILED if action is Do.LAUNCH_BUILDER else Reason.SNAPSHOT_FAILED
        return _failed(target, reason, message, now)
    return None


def add_generation(generations: Sequence[BakedGeneration], target: BakeTarget) -> list[BakedGeneration]:
    """Generations with ``target``'s available image recorded (once)."""
    out = list(generations)
    if target.phase != "Available" or target.image_id is None:
        return out
    if any((g.credential, g.region, g.image_id) == (target.credential, target.region, target.image_id) for g in out):
        return out
    out.append(
        BakedGeneration(
            credential=target.credential,
            region=target.region,
            bake_key=target.bake_key,
            image_id=target.image_id,
            created_at=target.finished_at,
        )
    )
    return out


def _cleanup(target: BakeTarget, obs: Observed) -> Step | None:
    """A builder to delete, or a partial image to deregister, before anything else happens."""
    if target.builder_id is not None:
        return Step(Do.DELETE_BUILDER, None, builder_id=target.builder_id)
    partial = obs.image is not None and obs.image.state is not ImageState.AVAILABLE
    if target.phase == "Failed" and target.image_id is not None and partial:
        return Step(Do.DELETE_IMAGE, None, image_id=target.image_id)
    return None


def _retry_at(target: BakeTarget) -> datetime | None:
    if target.finished_at is None or target.attempt >= MAX_ATTEMPTS:
        return None
    if target.reason == Reason.UNSUPPORTED_PROVIDER:
        return None
    backoff = min(RETRY_BACKOFF * 2 ** max(target.attempt - 1, 0), RETRY_BACKOFF_CAP)
    return target.finished_at + timedelta(seconds=backoff)


def next_step(  # noqa: PLR0911, PLR0912 - the decision table of one bake, case by case
    target: BakeTarget | None,
    obs: Observed,
    now: datetime,
    *,
    credential: str,
    region: str,
    key: str,
    build: ImageBuild,
    source: BakeTarget | None = None,
    deleting: bool = False,
    snapshot_timeout: float | None = None,
) -> Step:
    """The next step of the bake of ``key`` on ``credential``/``region``.

    ``target`` is what status says of this target (None: nothing yet). ``source`` is set for
    a copy target (``build.copyToRegions``): the bake of the same key in the source region.
    ``deleting``: the Image is going away; only clean-up steps are returned.
    ``snapshot_timeout``: how long an image may stay pending (None: the builder's
    ``snapshotTimeoutSeconds``, else ``DEFAULT_SNAPSHOT_TIMEOUT``).
    """
    where = _Where(credential, region, key, source, now)
    if deleting or (target is not None and target.bake_key != key):
        # The Image is going, or this is the bake of an older recipe or base image: delete its
        # builder and partial image; a key change then starts afresh.
        if target is None:
            return Step(Do.NOTHING, None)
        if target.builder_id is not None:
            return Step(Do.DELETE_BUILDER, None, builder_id=target.builder_id)
        if target.phase != "Available" and target.image_id is not None and obs.image is not None:
            return Step(Do.DELETE_IMAGE, None, image_id=target.image_id)
        if deleting:
            return Step(Do.NOTHING, None)
        target = None
    if target is None or (target.phase == "Available" and obs.image is None and target.builder_id is None):
        # Nothing of this key in status, or its image vanished: reuse what the cloud has first.
        return _start(where, (target.attempt if target is not None else 0) + 1, obs)
    if target.phase == "Launching":
        elapsed = _since(target.started_at, now)
        if elapsed > _timeout(build):
            return _fail(target, Reason.BUILD_TIMEOUT, f"no builder VM after {int(elapsed)} s", now)
        return Step(Do.LAUNCH_BUILDER, None)
    if target.phase == "Provisioning":
        return _provisioning(target, obs, now, _timeout(build))
    if target.phase == "Snapshotting":
        deadline = snapshot_timeout or float(build.builder.snapshot_timeout_seconds or DEFAULT_SNAPSHOT_TIMEOUT)
        return _snapshotting(target, obs, now, deadline)
    cleanup = _cleanup(target, obs)
    if cleanup is not None:
        return cleanup
    if target.phase == "Failed":
        retry = _retry_at(target)
        if retry is None:
            return Step(Do.NOTHING, None)
        if now < retry:
            return Step(Do.NOTHING, None, requeue=(retry - now).total_seconds())
        return _begin(where, target.attempt + 1)
    return Step(Do.NOTHING, None)


@dataclass(frozen=True)
class _Where:
    credential: str
    region: str
    key: str
    source: BakeTarget | None
    now: datetime

    def fresh(self, attempt: int) -> BakeTarget:
        return BakeTarget(
            credential=self.credential,
            region=self.region,
            phase="Launching",
            bake_key=self.key,
            attempt=attempt,
            source_region=self.source.region if self.source is not None else None,
            started_at=self.now,
        )


def _since(then: datetime | None, now: datetime) -> float:
    return (now - then).total_seconds() if then is not None else 0.0


def _fail(target: BakeTarget, reason: Reason, message: str, now: datetime) -> Step:
    return Step(Do.NOTHING, _failed(target, reason, message, now))


def _begin(where: _Where, attempt: int) -> Step:
    """Launch a builder, or for a copy target copy the source region's image."""
    fresh = where.fresh(attempt)
    if where.source is not None:
        return Step(Do.COPY_IMAGE, fresh.model_copy(update={"phase": "Snapshotting", "snapshot_started_at": where.now}))
    return Step(Do.LAUNCH_BUILDER, fresh)


def _start(where: _Where, attempt: int, obs: Observed) -> Step:
    now = where.now
    if not obs.supported:
        why = "copies images between regions" if where.source is not None else "makes images from a VM"
        return _fail(where.fresh(0), Reason.UNSUPPORTED_PROVIDER, f"the provider never {why}", now)
    existing = obs.existing
    if existing is not None:
        fresh = where.fresh(attempt - 1).model_copy(update={"image_id": existing.id, "snapshot_started_at": now})
        if existing.state is ImageState.AVAILABLE:
            return Step(Do.REUSE, record_available(fresh, existing, now))
        if existing.state is ImageState.PENDING:
            return Step(Do.WAIT_IMAGE, fresh.model_copy(update={"phase": "Snapshotting"}), requeue=10.0)
        # A failed image of this key: deregister it, then bake again.
        return Step(Do.DELETE_IMAGE, None, image_id=existing.id)
    source = where.source
    if source is not None and (source.phase != "Available" or source.bake_key != where.key or not source.image_id):
        return Step(Do.NOTHING, None, requeue=30.0)
    return _begin(where, attempt)


def _provisioning(target: BakeTarget, obs: Observed, now: datetime, timeout: float) -> Step:
    builder = obs.builder
    elapsed = _since(target.started_at, now)
    if builder is None and elapsed < VISIBILITY_GRACE:
        return Step(Do.WAIT_BUILDER, None, requeue=5.0)
    if builder is None or builder.state is NodeState.TERMINATED:
        return _fail(target, Reason.BUILDER_FAILED, "the builder VM disappeared", now)
    if builder.state is NodeState.STOPPED:
        return Step(Do.SNAPSHOT, target.model_copy(update={"phase": "Snapshotting", "snapshot_started_at": now}))
    if obs.recipe_failed:
        line = f": {obs.failure_line}" if obs.failure_line else ""
        return _fail(
            target,
            Reason.BUILDER_FAILED,
            f"the recipe failed on the builder{line} (the rest of its console stays in the cloud)",
            now,
        )
    if elapsed > timeout:
        return _fail(target, Reason.BUILD_TIMEOUT, f"the builder did not power off within {int(timeout)} s", now)
    return Step(Do.WAIT_BUILDER, None, requeue=min(30.0, max(1.0, timeout - elapsed)))


def _snapshotting(target: BakeTarget, obs: Observed, now: datetime, deadline: float) -> Step:  # noqa: PLR0911
    waited = _since(target.snapshot_started_at, now)
    image = obs.image
    if target.image_id is None:
        # Requested, answer not recorded: ask again (the connector finds it by key first).
        if waited > deadline:
            return _fail(target, Reason.SNAPSHOT_FAILED, f"no image after {int(waited)} s", now)
        return Step(Do.COPY_IMAGE if target.source_region else Do.SNAPSHOT, None)
    if image is None and waited < VISIBILITY_GRACE:
        return Step(Do.WAIT_IMAGE, None, requeue=5.0)
    if image is None:
        return _fail(target, Reason.SNAPSHOT_FAILED, "the image disappeared while pending", now)
    if image.state is ImageState.AVAILABLE:
        return Step(Do.NOTHING, record_available(target, image, now))
    if image.state is ImageState.FAILED:
        code = f" ({image.reason})" if image.reason else ""
        return _fail(target, Reason.SNAPSHOT_FAILED, f"the cloud failed the image{code}", now)
    if waited > deadline:
        return _fail(target, Reason.SNAPSHOT_FAILED, f"the image was still pending after {int(waited)} s", now)
    # A provider that names the image only once it exists (DigitalOcean) answers a new id.
    moved = target.model_copy(update={"image_id": image.id}) if image.id != target.image_id else None
    return Step(Do.WAIT_IMAGE, moved, requeue=min(60.0, max(5.0, waited / 4)))


# -- after the bake: which image VMs boot, and which old images go ---------------------------


@dataclass(frozen=True)
class BootSource:
    """What a VM on one credential and region boots from.

    ``image_id`` None means wait (``waiting`` says why); ``with_recipe`` says whether the
    recipe still belongs in its user data (only when the Image is not baked).
    """

    image_id: str | None
    bake_key: str | None
    with_recipe: bool
    waiting: str | None = None


def boot_source(
    status: ImageStatus | None, *, baked: bool, credential: str, region: str, base_image_id: str | None
) -> BootSource:
    """A baked Image boots its newest available generation, without the recipe; until its
    first bake is available, VMs wait (booting the base image would run the recipe at boot
    and then be replaced, paying twice). Unbaked Images boot the base image with the recipe.
    While a new generation bakes, the previous one keeps serving: Deployments roll to the new
    one through their rollout limits once it is available (its key goes into the template hash).
    """
    if not baked:
        return BootSource(base_image_id, None, with_recipe=True)
    target = next(
        (t for t in (status.bakes if status else None) or [] if (t.credential, t.region) == (credential, region)), None
    )
    if target is not None and target.phase == "Available" and target.image_id:
        return BootSource(target.image_id, target.bake_key, with_recipe=False)
    generations = [
        g for g in (status.generations if status else None) or [] if (g.credential, g.region) == (credential, region)
    ]
    if generations:
        newest = max(generations, key=_generation_order)
        return BootSource(newest.image_id, newest.bake_key, with_recipe=False)
    why = f"bake {target.phase}" if target is not None else "bake not started"
    if target is not None and target.phase == "Failed":
        why = f"bake failed: {target.reason}"
    return BootSource(
        None, None, with_recipe=False, waiting=f"waiting for the baked image on {credential}/{region} ({why})"
    )


def boot_user_data(cloud_config: str | None, script: str | None, source: BootSource) -> str | None:
    """A VM's user data: the recipe only when not booting a baked image; the group's own always."""
    return combine(cloud_config if source.with_recipe else None, script)


def _generation_order(g: BakedGeneration) -> tuple[float, str]:
    return (g.created_at.timestamp() if g.created_at else 0.0, g.image_id)


def retention(
    generations: Sequence[BakedGeneration],
    current: Mapping[tuple[str, str], str],
    *,
    keep: int,
    in_use: Iterable[str],
    deleting: bool = False,
) -> list[BakedGeneration]:
    """The generations to deregister: per credential and region, all but the newest ``keep``
    (the current key's always counts among them), and none an Instance still boots from.

    ``current`` maps (credential, region) to the key being served; ``deleting``: the Image is
    going away with ``deletionPolicy: Delete``, so every generation goes once unused.
    """
    used = set(in_use)
    doomed: list[BakedGeneration] = []
    by_target: dict[tuple[str, str], list[BakedGeneration]] = {}
    for g in generations:
        by_target.setdefault((g.credential, g.region), []).append(g)
    for target, gens in by_target.items():
        if deleting:
            doomed += [g for g in gens if g.image_id not in used]
            continue
        key = current.get(target)
        ranked = sorted(gens, key=lambda g: (g.bake_key != key, -_generation_order(g)[0], g.image_id))
        doomed += [g for g in ranked[max(keep, 1) :] if g.image_id not in used and g.bake_key != key]
    return sorted(doomed, key=lambda g: (g.credential, g.region, _generation_order(g)))


def stray_builders(
    builders: Sequence[CloudNode],
    referenced: Iterable[str],
    *,
    now: datetime,
    grace: float = 300.0,
) -> list[CloudNode]:
    """Builder VMs no bake refers to any more (a key change whose status write was lost, an
    Image whose finalizer was removed by hand): delete them once older than ``grace``, which
    covers a launch whose id is not recorded yet."""
    known = set(referenced)
    out = []
    for node in builders:
        if not is_builder(node.tags) or node.provider_id in known or node.state is NodeState.TERMINATED:
            continue
        age = (now - node.created_at).total_seconds() if node.created_at else grace + 1
        if age > grace:
            out.append(node)
    return out


# -- conditions ------------------------------------------------------------------------------


@dataclass
class BakeSummary:
    conditions: list[Condition] = field(default_factory=list)
    phase: str = "Baked"


def bake_conditions(
    conditions: Sequence[Condition], bakes: Sequence[BakeTarget], *, now: datetime, generation: int | None
) -> BakeSummary:
    """Ready / Building / Degraded for a baked Image, from its targets."""
    building = [t for t in bakes if t.phase in ("Launching", "Provisioning", "Snapshotting")]
    failed = [t for t in bakes if t.phase == "Failed"]
    ready = bool(bakes) and all(t.phase == "Available" for t in bakes)
    conds = list(conditions)
    names = ", ".join(f"{t.credential}/{t.region}" for t in (failed or building)[:5])
    if ready:
        conds = set_condition(
            conds,
            "Ready",
            True,
            "Baked",
            f"baked on {len(bakes)} credential/region pairs",
            now=now,
            generation=generation,
        )
    elif failed:
        reason = failed[0].reason or Reason.BUILDER_FAILED.value
        message = f"{names}: {failed[0].message or reason}"
        conds = set_condition(conds, "Ready", False, reason, message, now=now, generation=generation)
    else:
        conds = set_condition(
            conds, "Ready", False, "Baking", f"baking on {names or 'no target yet'}", now=now, generation=generation
        )
    if building:
        conds = set_condition(conds, "Building", True, "Baking", f"baking on {names}", now=now, generation=generation)
    else:
        conds = set_condition(conds, "Building", False, "Idle", "no bake in progress", now=now, generation=generation)
    if failed:
        reason = failed[0].reason or Reason.BUILDER_FAILED.value
        conds = set_condition(
            conds, "Degraded", True, reason, f"{len(failed)} bakes failed: {names}", now=now, generation=generation
        )
    else:
        conds = set_condition(conds, "Degraded", False, "AsExpected", "no bake failed", now=now, generation=generation)
    phase = "Baked" if ready else ("Failed" if failed and not building else "Baking")
    return BakeSummary(conds, phase)
