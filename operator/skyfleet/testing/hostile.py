"""Hostile manifests for every kind, and a runner that proves the operator copes with them.

A manifest starts valid (built from the API models' own schema: the CRD the API server enforces)
and takes up to three mutations: a field deleted, the wrong type, a value at or just past a bound,
huge and unicode strings, unknown fields, references to missing objects or to objects of another
namespace, dependsOn and parent cycles. hypothesis draws them from a seed, so a run is repeatable.

The runner (``run``) creates each manifest with kubectl in the served namespace, beside a healthy
Deployment, and classifies it:

* ``refused``: the API server (or kubectl) refused it and the message names the mutated field;
* ``reported``: admitted, and within the bound the object carries a Ready condition with a
  CamelCase reason (True when the mutations happened to leave it valid), and it deletes cleanly;
  where the spec alone decides the reason (a ScalingPolicy whose target does not exist is
  TargetNotFound, see ``expected_reasons``) a different one is the defect ``misreported``;
* ``removed``: admitted, then deleted by the operator itself (an Instance that names a Deployment
  which does not want it is scaled away, with an event on that Deployment);
* ``unhandled``: admitted objects of a kind the runner is told no controller serves (`controllers`);
  every kind has one now, so this stays empty unless a run leaves one out on purpose;
* a defect otherwise: refused without naming the field, no Ready condition in time, stuck in
  deletion, or, for the whole run, a traceback in the operator's log, the operator exiting, the
  healthy Deployment losing Ready or its VM.

Used by tests/e2e/test_hostile.py (a seeded subset) and bench/hostile.py (the long run).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from skyfleet.api.cloudcredential import CloudCredential
from skyfleet.api.common import API_VERSION, Resource
from skyfleet.api.crd import openapi_schema
from skyfleet.api.deployment import Deployment
from skyfleet.api.image import Image
from skyfleet.api.instance import Instance
from skyfleet.api.scalingpolicy import ScalingPolicy
from skyfleet.testing.manifests import deployment, node_group

KINDS: dict[str, type[Resource]] = {
    "CloudCredential": CloudCredential,
    "Image": Image,
    "Deployment": Deployment,
    "Instance": Instance,
    "ScalingPolicy": ScalingPolicy,
}
PLURAL = {name: f"{kind.crd.plural}.skyfleet.io" for name, kind in KINDS.items()}
SCHEMAS = {name: openapi_schema(kind) for name, kind in KINDS.items()}
SELF = "@self"  # replaced by the manifest's own name once it has one
# Fields whose admitted values make real VMs: kept small so the emulator is not what is measured.
COUNT_FIELDS = {"replicas", "minReplicas", "maxReplicas"}
MAX_ADMITTED_COUNT = 2
ODD_STRINGS = (
    "\U0001f680",
    "é",
    "\u202eevil",  # right-to-left override
    "a\u200bb",  # zero-width space
    "\uff46\uff55\uff4c\uff4c",  # fullwidth letters
    "a\nb",
    "../../etc/passwd",
    "${jndi:ldap://x}",
    "{{ groups.nowhere.addresses }}",
    "{{ raw }}",
    "{%",
    "' OR 1=1 --",
    "\\",
    "\x00",
    " ",
)


@dataclass(frozen=True)
class Context:
    """What the manifests may point at."""

    endpoint: str  # the emulator, reachable and allow-listed
    credential: str = "cloud"  # a verified CloudCredential of the namespace
    image: str = "xenial"  # a resolvable Image of the namespace
    secret: str = "cloud-keys"  # noqa: S105 - the name of the Secret behind the credential
    foreign: str = "elsewhere"  # objects of this name exist only in another namespace
    # A Deployment of the namespace whose group "app" wants 0 replicas: policies may govern it.
    target: str = "h-target"


@dataclass
class Manifest:
    kind: str
    doc: dict[str, Any]
    mutations: list[str] = field(default_factory=list)
    # Names a refusal must mention: the mutated fields (their last named path segment).
    fields: list[str] = field(default_factory=list)
    # The Ready reasons an admitted manifest may report (None: any CamelCase reason).
    reasons: frozenset[str] | None = None

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))


# --- valid bases -------------------------------------------------------------------------------

NAMES = st.from_regex(r"\A[a-z][a-z0-9]{0,6}\Z")


def _size(draw: st.DrawFn) -> dict[str, Any]:
    size: dict[str, Any] = {}
    if draw(st.booleans()):
        size["instanceTypes"] = {"ec2": draw(st.sampled_from(["t3.micro", "t3.small", "m5.large"]))}
    if not size or draw(st.booleans()):
        size["cpu"] = draw(st.integers(1, 4))
        size["memoryMiB"] = draw(st.sampled_from([512, 1024, 4096]))
    if draw(st.booleans()):
        size["diskGiB"] = draw(st.integers(1, 64))
    return size


@st.composite
def credential_base(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "provider": "ec2",
        "region": draw(st.sampled_from(["eu-central-1", "us-east-1", "eu-west-1"])),
        "secretRef": {"name": draw(st.sampled_from([ctx.secret, "missing-keys"]))},
        "endpoint": {"url": ctx.endpoint},
    }
    if draw(st.booleans()):
        spec["limits"] = {
            "requestsPerSecond": draw(st.sampled_from([0.5, 2.0, 10.0])),
            "burst": draw(st.integers(1, 10)),
            "maxConcurrency": draw(st.integers(1, 8)),
            "maxInstances": draw(st.integers(0, 20)),
        }
    if draw(st.booleans()):
        spec["verifyIntervalSeconds"] = draw(st.sampled_from([60, 300, 900]))
    if draw(st.booleans()):
        spec["orphans"] = {"delete": draw(st.booleans()), "gracePeriodSeconds": draw(st.integers(30, 600))}
    if draw(st.booleans()):
        spec["parameters"] = {"vpc": draw(st.sampled_from(["vpc-1", "default"]))}
    return {"kind": "CloudCredential", "spec": spec}


@st.composite
def image_base(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    clouds: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 2))):
        source: dict[str, Any] = (
            {"provider": "ec2"} if draw(st.booleans()) else {"credential": draw(st.sampled_from([ctx.credential]))}
        )
        if draw(st.booleans()):
            source["id"] = draw(st.sampled_from(["ami-785db401", "ami-00000000", "ami-1"]))
        else:
            source["lookup"] = {"namePattern": draw(st.sampled_from(["ubuntu/*", "*"])), "owner": "099720109477"}
        clouds.append(source)
    spec: dict[str, Any] = {"clouds": clouds}
    if draw(st.booleans()):
        spec["loginUser"] = "ubuntu"
    if draw(st.booleans()):
        spec["recipe"] = {
            "packages": ["curl"],
            "files": [{"path": "/etc/motd", "content": "hello\n", "permissions": "0644"}],
            "scripts": ["#!/bin/sh\ntrue\n"],
        }
    return {"kind": "Image", "spec": spec}


@st.composite
def group_base(draw: st.DrawFn, ctx: Context, name: str) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": name,
        "replicas": draw(st.integers(0, MAX_ADMITTED_COUNT)),
        "imageRef": draw(st.sampled_from([ctx.image, ctx.image, "missing-image"])),
        "size": _size(draw),
        "placement": {"targets": [{"credential": draw(st.sampled_from([ctx.credential, "missing-cred"]))}]},
    }
    if draw(st.booleans()):
        group["userData"] = draw(st.sampled_from(["#!/bin/sh\necho {{ instance }}\n", "#cloud-config\n{}\n"]))
    if draw(st.booleans()):
        group["driftPolicy"] = draw(st.sampled_from(["Recreate", "Report"]))
    if draw(st.booleans()):
        group["rollout"] = {"maxSurge": draw(st.integers(0, 2)), "maxUnavailable": 1}
    if draw(st.booleans()):
        group["maxProvisioningFailures"] = draw(st.integers(0, 3))
    return group


@st.composite
def deployment_base(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    groups = [draw(group_base(ctx, n)) for n in names]
    spec: dict[str, Any] = {"nodeGroups": groups}
    if draw(st.booleans()):
        spec["deletionPolicy"] = "Delete"
    if draw(st.booleans()):
        spec["paused"] = draw(st.booleans())
    return {"kind": "Deployment", "spec": spec}


@st.composite
def instance_base(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "deployment": draw(st.sampled_from(["missing-deploy", "shop"])),
        "group": "app",
        "credential": draw(st.sampled_from([ctx.credential, "missing-cred"])),
        "imageRef": draw(st.sampled_from([ctx.image, "missing-image"])),
        "templateHash": "abc123",
        "size": _size(draw),
    }
    if draw(st.booleans()):
        spec["region"] = "eu-central-1"
    if draw(st.booleans()):
        spec["imageId"] = "ami-785db401"
    if draw(st.booleans()):
        spec["instanceType"] = "t3.micro"
    if draw(st.booleans()):
        spec["userData"] = "#!/bin/sh\ntrue\n"
    return {"kind": "Instance", "spec": spec}


TARGET_GROUP = "app"
# Shared by every draw: a manifest takes deep copies, or one's mutation would show up in the next.
POLICY_SIZES = ({"cpu": 1, "memoryMiB": 512}, {"cpu": 2, "memoryMiB": 1024}, {"instanceTypes": {"ec2": "m5.large"}})


@st.composite
def policy_base(draw: st.DrawFn, ctx: Context) -> dict[str, Any]:
    """A valid policy: mostly for ``ctx.target`` (which exists, so it governs it or reports a
    Conflict with a sibling), sometimes for a Deployment that does not exist."""
    spec: dict[str, Any] = {
        "target": {"deployment": draw(st.sampled_from(["missing-deploy", ctx.target, ctx.target])), "group": "app"},
        "maxReplicas": draw(st.integers(1, MAX_ADMITTED_COUNT)),
    }
    if draw(st.booleans()):
        spec["minReplicas"] = draw(st.integers(0, 1))
    if draw(st.booleans()):
        spec["replicas"] = draw(st.integers(0, MAX_ADMITTED_COUNT))
    if draw(st.booleans()):
        spec["metrics"] = [
            {"name": "cpu", "query": "avg(rate(cpu[1m]))", "target": {"averageValue": 0.5}},
            {"name": "q", "query": "sum(queue)", "constraint": {"above": 100.0, "action": "ScaleOut"}, "for": "1m"},
        ]
        if draw(st.booleans()):
            # Nothing listens there: every query fails (MetricUnavailable). Without it the operator's
            # own Prometheus is used, and the harness runs without one (PrometheusNotConfigured).
            spec["prometheus"] = {"url": "http://127.0.0.1:9/"}
            if draw(st.booleans()):
                spec["prometheus"]["bearerTokenSecretRef"] = {"name": draw(st.sampled_from([ctx.secret, "no-token"]))}
        if draw(st.booleans()):
            spec["vertical"] = {"sizes": copy.deepcopy(list(POLICY_SIZES[: draw(st.integers(2, 3))]))}
            spec["metrics"].append(
                {"name": "mem", "query": "max(mem)", "constraint": {"below": 0.2, "action": "SizeDown"}, "for": "90s"}
            )
    if draw(st.booleans()):
        spec["behavior"] = {
            "scaleDown": {"stabilizationWindowSeconds": 60, "maxStep": 1, "periodSeconds": 60},
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "verticalCooldownSeconds": draw(st.sampled_from([0, 300])),
        }
    return {"kind": "ScalingPolicy", "spec": spec}


def target_deployment(ctx: Context) -> dict[str, Any]:
    """The Deployment ScalingPolicies may govern: its group wants no VM until a policy says so."""
    return deployment(ctx.target, node_group(TARGET_GROUP, replicas=0, image=ctx.image, credential=ctx.credential))


BASES: dict[str, Callable[[Context], st.SearchStrategy[dict[str, Any]]]] = {
    "CloudCredential": credential_base,
    "Image": image_base,
    "Deployment": deployment_base,
    "Instance": instance_base,
    "ScalingPolicy": policy_base,
}


# --- mutations ---------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((*prefix, index))
            out.extend(_paths(value, (*prefix, index)))
    return out


def _schema_at(schema: dict[str, Any], path: Path_) -> dict[str, Any]:
    node = schema
    for step in path:
        if isinstance(step, int):
            node = node.get("items") or {}
        else:
            props = node.get("properties") or {}
            node = (
                props.get(step)
                or (node.get("additionalProperties") if isinstance(node.get("additionalProperties"), dict) else {})
                or {}
            )
    return node


def _get(doc: Any, path: Path_) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _set(doc: Any, path: Path_, value: Any) -> None:
    _get(doc, path[:-1])[path[-1]] = value


def _delete(doc: Any, path: Path_) -> None:
    parent = _get(doc, path[:-1])
    del parent[path[-1]]


def _field_name(path: Path_) -> str:
    for step in reversed(path):
        if isinstance(step, str):
            return step
    return ""


def _wrong_type(draw: st.DrawFn, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    choices: list[Any] = [None, True, 7, -1.5, "seven", [], {}, ["x"], {"a": 1}]
    if kind == "integer":
        choices = ["3", 1.5, True, None, [], {}]
    elif kind == "number":
        choices = ["0.5", True, None, []]
    elif kind == "string":
        choices = [7, True, None, [], {"a": "b"}]
    elif kind == "boolean":
        choices = ["true", "yes", 1, None]
    elif kind == "array":
        choices = ["x", 1, {"a": 1}, None]
    elif kind == "object":
        choices = ["x", 1, ["a"], None]
    return draw(st.sampled_from(choices))


def _boundary(draw: st.DrawFn, schema: dict[str, Any], key: str) -> Any:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        values: list[Any] = [-1, 0, 2**31, 2**63 - 1, -(2**63)]
        if lo is not None:
            values += [lo - 1, lo]
        if hi is not None:
            values += [hi + 1] + ([hi] if key not in COUNT_FIELDS else [])
        if kind == "number":
            values += [1e308, -0.0, 1e-300]
        value = draw(st.sampled_from(values))
        if key in COUNT_FIELDS and isinstance(value, int) and 0 <= value <= (hi or 0):
            value = min(value, MAX_ADMITTED_COUNT)
        return value
    if kind == "string":
        limit = int(schema.get("maxLength", 64))
        values = ["", "x" * limit, "x" * (limit + 1), "Upper_Case!"]
        if "enum" in schema:
            values += ["NotAnEnumValue", str(schema["enum"][0]).lower()]
        return draw(st.sampled_from(values))
    if kind == "array":
        limit = int(schema.get("maxItems", 4))
        items = schema.get("items") or {}
        filler: Any = "x" if items.get("type") == "string" else {}
        return draw(st.sampled_from([[], [filler] * (limit + 1)]))
    if kind == "object":
        return draw(st.sampled_from([{}, {"unknownField": 1}]))
    return None


def _odd_string(draw: st.DrawFn, schema: dict[str, Any]) -> str:
    limit = int(schema.get("maxLength", 100_000))
    strategy = st.one_of(
        st.sampled_from(ODD_STRINGS),
        st.text(min_size=1, max_size=min(limit, 40)),
        st.sampled_from(["\U0001f680" * min(limit, 16000), "é" * min(limit, 5000), "x" * 100_000]),
    )
    return draw(strategy)


REFERENCE_FIELDS = ("credential", "imageRef", "parent", "deployment", "name")


def _rules(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy's rules, made a valid list of one constraint rule when a mutation removed them."""
    rules = spec.get("metrics")
    if not (isinstance(rules, list) and rules and all(isinstance(r, dict) for r in rules)):
        rules = [{"name": "q", "query": "sum(queue)", "constraint": {"above": 1.0, "action": "ScaleOut"}}]
        spec["metrics"] = rules
    return rules


BAD_DURATIONS = ("5x", "1d", "90", "2h", "1h1s", "-1m", "1.5m", "", "9999999s", "1m 2s")
BAD_QUERIES = (
    "sum(",
    'up{namespace="other"}',
    '{__name__=~".+"}',
    "vector(1) or vector(2)",
    "1/0",
    "",
    "x" * 4097,
    "{{ raw }}",
)
BAD_URLS = ("ftp://127.0.0.1/", "http://", "http://a b/", "127.0.0.1:9090", "http://x/?q=1")
FORBIDDEN_URLS = ("http://169.254.169.254/", "http://10.0.0.1:9090/", "https://metadata.google.internal/")


def _policy_mutation(draw: st.DrawFn, manifest: Manifest, ctx: Context) -> bool:  # noqa: PLR0912, PLR0915 - one table of cases
    """A mutation only a ScalingPolicy has: its target, bounds, rules, durations, source, ladder.
    False when an earlier mutation left no spec to apply it to."""
    spec = manifest.doc.get("spec")
    if not isinstance(spec, dict):
        return False
    case = draw(
        st.sampled_from(
            [
                "target-missing",
                "target-foreign",
                "target-group",
                "target-shape",
                "min-over-max",
                "duration",
                "query",
                "above-and-below",
                "step-on-size",
                "size-without-ladder",
                "one-rung",
                "duplicate-rule",
                "period-without-step",
                "forbidden-url",
                "bad-url",
                "missing-token",
                "too-many-rules",
                "target-and-constraint",
                "replicas-over-max",
                "scale-to-zero",
            ]
        )
    )
    note, named = case, case
    if case.startswith("target-"):
        target = spec.get("target")
        if not isinstance(target, dict):
            target = spec["target"] = {"deployment": ctx.target, "group": TARGET_GROUP}
        if case == "target-group":
            target["group"] = draw(st.sampled_from(["nogroup", "App", "a" * 64]))
            named, note = "group", f"target.group={target['group'][:20]}"
        else:
            value = {"target-missing": "does-not-exist", "target-foreign": ctx.foreign}.get(
                case, draw(st.sampled_from(["Bad_Name", "", "a" * 64, ctx.foreign + "/x"]))
            )
            target["deployment"] = value
            named, note = "deployment", f"target.deployment={value[:20]}"
    elif case == "min-over-max":
        top = spec.get("maxReplicas")
        top = top if isinstance(top, int) and not isinstance(top, bool) else 1
        spec["maxReplicas"], spec["minReplicas"] = top, top + 1
        named = "minReplicas"
    elif case in ("replicas-over-max", "scale-to-zero"):
        # Admitted: replicas is the scaler's wish, clamped to the bounds (zero only with minReplicas 0).
        top = spec.get("maxReplicas")
        top = top if isinstance(top, int) and not isinstance(top, bool) and 1 <= top < MAX_ADMITTED_COUNT else 1
        spec["maxReplicas"] = top
        if case == "scale-to-zero":
            spec["minReplicas"], spec["replicas"] = 0, 0
        else:
            spec["replicas"] = top + 1
        named = "replicas"
    elif case == "duration":
        rule = draw(st.sampled_from(_rules(spec)))
        rule["for"] = draw(st.sampled_from(BAD_DURATIONS))
        named, note = "for", f"for={rule['for']!r}"
    elif case == "query":
        rule = draw(st.sampled_from(_rules(spec)))
        rule["query"] = draw(st.sampled_from(BAD_QUERIES))
        named, note = "query", f"query={rule['query'][:20]!r}"
    elif case in ("above-and-below", "step-on-size", "size-without-ladder"):
        rule = _rules(spec)[0]
        rule.pop("target", None)
        if case == "above-and-below":
            rule["constraint"] = {"above": 1.0, "below": 0.5, "action": "ScaleOut"}
            named = "above"
        elif case == "step-on-size":
            rule["constraint"] = {"above": 1.0, "action": "SizeUp", "step": 2}
            spec["vertical"] = {"sizes": copy.deepcopy(list(POLICY_SIZES[:2]))}
            named = "step"
        else:
            rule["constraint"] = {"above": 1.0, "action": draw(st.sampled_from(["SizeUp", "SizeDown"]))}
            spec.pop("vertical", None)
            named = "vertical"
    elif case == "one-rung":
        spec["vertical"] = {"sizes": [copy.deepcopy(POLICY_SIZES[0])]}
        named = "sizes"
    elif case == "duplicate-rule":
        rules = _rules(spec)
        rules.append(copy.deepcopy(rules[0]))
        named = "metrics"
    elif case == "too-many-rules":
        rules = _rules(spec)
        spec["metrics"] = [{**copy.deepcopy(rules[0]), "name": f"r{i}"} for i in range(9)]
        named = "metrics"
    elif case == "target-and-constraint":
        rule = _rules(spec)[0]
        rule["target"] = {"value": 1.0}
        rule["constraint"] = {"above": 1.0, "action": "ScaleOut"}
        named = "constraint"
    elif case == "period-without-step":
        behavior = spec.get("behavior")
        if not isinstance(behavior, dict):
            behavior = spec["behavior"] = {}
        behavior["scaleUp"] = {"periodSeconds": 60}
        named = "periodSeconds"
    else:
        _rules(spec)
        source = spec.get("prometheus")
        if not isinstance(source, dict):
            source = spec["prometheus"] = {"url": "http://127.0.0.1:9/"}
        if case == "forbidden-url":
            source["url"] = draw(st.sampled_from(FORBIDDEN_URLS))
            named, note = "url", f"prometheus.url={source['url']}"
        elif case == "bad-url":
            source["url"] = draw(st.sampled_from(BAD_URLS))
            named, note = "url", f"prometheus.url={source['url']!r}"
        else:
            source["bearerTokenSecretRef"] = {"name": "does-not-exist", "key": "token"}
            named = "bearerTokenSecretRef"
    manifest.mutations.append(note)
    manifest.fields.append(named)
    return True


def expected_reasons(manifest: Manifest, ctx: Context) -> frozenset[str] | None:  # noqa: PLR0911 - one case each
    """The Ready reasons an admitted ScalingPolicy may report, where its spec decides them: a target
    that is not ``ctx.target``'s group is TargetNotFound whatever else it says; with rules, a
    forbidden Prometheus URL is EndpointNotAllowed and no URL at all (the harness's operator has no
    --prometheus-url) PrometheusNotConfigured, unless a sibling governs the group (Conflict)."""
    spec = manifest.doc.get("spec")
    if manifest.kind != "ScalingPolicy" or not isinstance(spec, dict):
        return None
    target = spec.get("target")
    if not isinstance(target, dict):
        return None
    if target.get("deployment") != ctx.target or target.get("group") != TARGET_GROUP:
        return frozenset({"TargetNotFound"})
    if not (isinstance(spec.get("metrics"), list) and spec["metrics"]):
        return None
    source = spec.get("prometheus")
    if source is None:
        return frozenset({"PrometheusNotConfigured", "Conflict"})
    if isinstance(source, dict) and source.get("url") in FORBIDDEN_URLS:
        return frozenset({"EndpointNotAllowed", "Conflict"})
    return None


@st.composite
def mutate(draw: st.DrawFn, manifest: Manifest, ctx: Context) -> None:  # noqa: PLR0911, PLR0912, PLR0915 - one table of cases
    doc = manifest.doc
    schema = SCHEMAS[manifest.kind]
    ops = ["delete", "type", "boundary", "string", "unknown", "reference", "cycle", "name"]
    if manifest.kind == "ScalingPolicy":
        # Most of a policy's meaning is in relations the generic mutations do not reach, and most
        # generic ones are refused at admission: without this weight few policies reach the loop.
        ops += ["policy"] * 8
    op = draw(st.sampled_from(ops))
    if op == "policy":
        if _policy_mutation(draw, manifest, ctx):
            return
        op = "reference"
    paths = [p for p in _paths(doc) if p and p[0] in ("spec", "metadata")]
    if op == "name":
        value = draw(
            st.sampled_from(
                ["Upper", "a" * 254, "\U0001f680", "", "a_b", "a" * 41 if manifest.kind == "Deployment" else "a..b"]
            )
        )
        doc.setdefault("metadata", {})["name"] = value
        manifest.mutations.append(f"metadata.name={value[:20]!r}")
        manifest.fields.append("name")
        return
    spec = doc.get("spec")
    if op == "cycle" and isinstance(spec, dict):
        groups = spec.get("nodeGroups")
        if manifest.kind == "Deployment" and not (
            isinstance(groups, list)
            and groups
            and all(isinstance(g, dict) and isinstance(g.get("name"), str) for g in groups)
        ):
            op = "reference"
    if op == "cycle" and isinstance(spec, dict):
        if manifest.kind == "Image":
            spec["parent"] = SELF
            manifest.mutations.append("parent=self")
            manifest.fields.append("parent")
            return
        if manifest.kind == "Deployment":
            groups = spec["nodeGroups"]
            while len(groups) < 3:
                groups.append({**copy.deepcopy(groups[0]), "name": f"{groups[0]['name'][:10]}x{len(groups)}"})
            length = draw(st.integers(2, 3))
            for i in range(length):
                groups[i]["dependsOn"] = [groups[(i + 1) % length]["name"]]
            manifest.mutations.append(f"dependsOn cycle of {length}")
            manifest.fields.append("dependsOn")
            return
    if op == "cycle":
        op = "reference"
    if op == "reference":
        refs = [p for p in paths if isinstance(p[-1], str) and p[-1] in REFERENCE_FIELDS and p[:2] != ("metadata",)]
        refs = [p for p in refs if isinstance(_get(doc, p), str) and p != ("metadata", "name")]
        if refs:
            path = draw(st.sampled_from(refs))
            value = draw(st.sampled_from([ctx.foreign, "does-not-exist", f"other-ns/{ctx.foreign}", SELF]))
            _set(doc, path, value)
            manifest.mutations.append(f"{'.'.join(map(str, path))}->{value}")
            manifest.fields.append(_field_name(path))
            return
        op = "delete"
    if op == "unknown":
        containers = [p for p in paths if isinstance(_get(doc, p), dict)] or [("spec",)]
        path = draw(st.sampled_from(containers))
        _get(doc, path)["surpriseField"] = "x"
        manifest.mutations.append(f"{'.'.join(map(str, path))}.surpriseField")
        manifest.fields.append("surpriseField")
        return
    candidates = [p for p in paths if p[0] == "spec"]
    if not candidates:
        return
    path = draw(st.sampled_from(candidates))
    node_schema = _schema_at(schema, path)
    where = ".".join(map(str, path))
    if op == "delete":
        _delete(doc, path)
        manifest.mutations.append(f"delete {where}")
    elif op == "type":
        _set(doc, path, _wrong_type(draw, node_schema))
        manifest.mutations.append(f"wrong type at {where}")
    elif op == "boundary":
        value = _boundary(draw, node_schema, _field_name(path))
        _set(doc, path, value)
        manifest.mutations.append(f"boundary {where}={str(value)[:20]}")
    else:
        _set(doc, path, _odd_string(draw, node_schema))
        manifest.mutations.append(f"odd string at {where}")
    manifest.fields.append(_field_name(path))


@st.composite
def manifests(draw: st.DrawFn, ctx: Context, kind: str) -> Manifest:
    body = draw(BASES[kind](ctx))
    manifest = Manifest(kind, {"apiVersion": API_VERSION, "metadata": {}, **body})
    for _ in range(draw(st.integers(1, 3))):
        draw(mutate(manifest, ctx))
    return manifest


def generate(count: int, seed_: int, ctx: Context) -> list[Manifest]:
    """``count`` manifests drawn by hypothesis from ``seed_``, every kind in turn: the same list
    every time."""
    per_kind: dict[str, list[Manifest]] = {}
    for offset, kind in enumerate(KINDS):
        want = (count + len(KINDS) - 1 - offset) // len(KINDS)
        out: list[Manifest] = []
        round_ = 0
        while len(out) < want:
            out += _draw(manifests(ctx, kind), want - len(out), seed_ * 1000 + offset * 100 + round_)
            round_ += 1
        per_kind[kind] = out[:want]
    ordered: list[Manifest] = []
    for i in range(max(len(v) for v in per_kind.values())):
        ordered += [per_kind[kind][i] for kind in KINDS if i < len(per_kind[kind])]
    for index, m in enumerate(ordered[:count]):
        meta = m.doc.setdefault("metadata", {})
        if "name" not in meta:
            meta["name"] = f"h{index:04d}-{m.kind.lower()[:6]}"
        _replace_self(m.doc, meta["name"])
        m.reasons = expected_reasons(m, ctx)
    return ordered[:count]


def _draw(strategy: st.SearchStrategy[Manifest], count: int, seed_: int) -> list[Manifest]:
    """Up to ``count`` examples of ``strategy``, generated (never shrunk) from ``seed_``."""
    out: list[Manifest] = []

    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @seed(seed_)
    @given(strategy)
    def collect(m: Manifest) -> None:
        out.append(m)

    collect()
    return out


def _replace_self(node: Any, name: str) -> None:
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in list(items):
        if value == SELF:
            node[key] = name
        else:
            _replace_self(value, name)


# --- the runner --------------------------------------------------------------------------------

HANDLED = ("refused", "reported", "removed", "unhandled")
REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Outcome:
    manifest: Manifest
    verdict: str  # refused, reported, removed, unhandled, or a defect: refused-unnamed, unreported, misreported, stuck
    detail: str = ""


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> Counter[str]:
        return Counter(o.verdict for o in self.outcomes)

    def defect_outcomes(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.verdict not in HANDLED]

    def summary(self) -> str:
        lines = [f"{len(self.outcomes)} manifests in {self.seconds:.0f} s: {dict(sorted(self.counts().items()))}"]
        by_kind = Counter((o.manifest.kind, o.verdict) for o in self.outcomes)
        lines += [f"  {k:16} {v:16} {n}" for (k, v), n in sorted(by_kind.items())]
        reasons = Counter((o.manifest.kind, o.detail) for o in self.outcomes if o.verdict == "reported")
        for kind in KINDS:
            seen = {d: n for (k, d), n in sorted(reasons.items()) if k == kind}
            if seen:
                lines.append(f"  {kind} reported: {seen}")
        for o in self.defect_outcomes():
            lines.append(
                f"DEFECT {o.verdict}: {o.manifest.kind} {o.manifest.name[:40]!r} {o.manifest.mutations}: {o.detail}"
            )
        lines += [f"DEFECT {d}" for d in self.defects]
        return "\n".join(lines)


@dataclass
class Runner:
    kubectl: Path
    env: dict[str, str]
    namespace: str
    operator_log: Callable[[], str]
    operator_alive: Callable[[], bool]
    healthy: str = "shop"  # a Ready Deployment that must stay Ready, its VM unchanged
    report_timeout: float = 90.0
    controllers: frozenset[str] = frozenset({"CloudCredential", "Image", "Deployment", "Instance", "ScalingPolicy"})

    def kube(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.kubectl), "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=180,
            check=False,
        )

    def _objects(self, kind: str) -> dict[str, dict[str, Any]]:
        proc = self.kube("get", PLURAL[kind], "-o", "json")
        if proc.returncode != 0:
            return {}
        return {o["metadata"]["name"]: o for o in json.loads(proc.stdout)["items"]}

    def _healthy_state(self) -> tuple[str | None, str | None]:
        objs = self._objects("Deployment")
        ready = _ready(objs.get(self.healthy))
        vm = (self._objects("Instance").get(f"{self.healthy}-app-0") or {}).get("status", {}).get("providerId")
        return (ready[0] if ready else None), vm

    def run(self, manifests: list[Manifest], batch: int = 50, log: Callable[[str], None] = print) -> Report:
        report = Report()
        started = time.monotonic()
        status, vm = self._healthy_state()
        if status != "True" or not vm:
            report.defects.append(f"healthy Deployment {self.healthy!r} not Ready before the run")
            return report
        seen_tracebacks = self.operator_log().count(TRACEBACK)
        for first in range(0, len(manifests), batch):
            chunk = manifests[first : first + batch]
            outcomes = self._batch(chunk)
            report.outcomes.extend(outcomes)
            text = self.operator_log()
            if text.count(TRACEBACK) > seen_tracebacks:
                at = text.find(TRACEBACK, _nth(text, TRACEBACK, seen_tracebacks))
                report.defects.append(f"traceback in the operator log (batch at {first}): {text[at : at + 1500]}")
                seen_tracebacks = text.count(TRACEBACK)
            if not self.operator_alive():
                report.defects.append(f"operator exited during the batch at {first}")
                break
            now_status, now_vm = self._healthy_state()
            if now_status != "True" or now_vm != vm:
                report.defects.append(f"healthy Deployment changed after batch {first}: Ready={now_status} vm={now_vm}")
            log(f"{first + len(chunk)}/{len(manifests)}: {dict(sorted(report.counts().items()))}")
        report.seconds = time.monotonic() - started
        return report

    def _batch(self, chunk: list[Manifest]) -> list[Outcome]:  # noqa: PLR0912 - create, wait, delete, classify
        outcomes: dict[int, Outcome] = {}
        admitted: list[tuple[int, Manifest]] = []
        for i, m in enumerate(chunk):
            proc = self.kube("create", "-f", "-", input=json.dumps(m.doc))
            if proc.returncode != 0:
                message = proc.stderr
                named = not m.fields or any(f and f in message for f in m.fields)
                outcomes[i] = Outcome(m, "refused" if named else "refused-unnamed", message.strip()[:400])
            else:
                admitted.append((i, m))
        deadline = time.monotonic() + self.report_timeout
        pending = dict(admitted)
        seen: dict[int, str] = {}  # the last CamelCase Ready of each admitted manifest
        while pending and time.monotonic() < deadline:
            live = {kind: self._objects(kind) for kind in {m.kind for m in pending.values()}}
            for i, m in list(pending.items()):
                if m.kind not in self.controllers:
                    outcomes[i] = Outcome(m, "unhandled", "no controller for this kind")
                    del pending[i]
                    continue
                if m.name not in live[m.kind]:
                    # Gone before we looked: the operator deleted it (an Instance naming a Deployment
                    # that does not want it is scaled away), which a user sees as an event.
                    outcomes[i] = Outcome(m, "removed", "deleted by the operator")
                    del pending[i]
                    continue
                cond = _ready(live[m.kind].get(m.name))
                if cond and REASON.match(cond[1] or ""):
                    seen[i] = f"Ready={cond[0]} {cond[1]}"
                    # A reason the spec rules out may still be on its way to the right one: wait.
                    if m.reasons is None or cond[1] in m.reasons:
                        outcomes[i] = Outcome(m, "reported", seen[i])
                        del pending[i]
            if pending:
                time.sleep(1.0)
        for i, m in pending.items():
            if i in seen:
                outcomes[i] = Outcome(m, "misreported", f"{seen[i]}, expected one of {sorted(m.reasons or ())}")
                continue
            obj = self._objects(m.kind).get(m.name)
            outcomes[i] = Outcome(m, "unreported", json.dumps((obj or {}).get("status"))[:300])
        # Every admitted object must also go away again: no finalizer left hanging on bad input.
        for kind in {m.kind for _, m in admitted}:
            names = [m.name for _, m in admitted if m.kind == kind]
            self.kube("delete", PLURAL[kind], *names, "--wait=false", "--ignore-not-found")
        deadline = time.monotonic() + self.report_timeout
        left = {(m.kind, m.name): i for i, m in admitted}
        while left and time.monotonic() < deadline:
            live_names = {kind: set(self._objects(kind)) for kind in {k for k, _ in left}}
            left = {key: i for key, i in left.items() if key[1] in live_names[key[0]]}
            if left:
                time.sleep(1.0)
        for (_kind, _name), i in left.items():
            if outcomes[i].verdict in HANDLED:
                outcomes[i] = Outcome(chunk[i], "stuck", "still there after delete: " + outcomes[i].detail)
        return [outcomes[i] for i in range(len(chunk))]


def _nth(text: str, needle: str, n: int) -> int:
    at = -1
    for _ in range(n):
        at = text.find(needle, at + 1)
    return max(at + 1, 0)


def _ready(obj: dict[str, Any] | None) -> tuple[str, str | None] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status")), c.get("reason")
    return None
