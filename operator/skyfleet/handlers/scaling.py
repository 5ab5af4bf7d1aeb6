"""ScalingPolicy: evaluate each policy every scaling period and publish its decision in its own status.

The policy never writes the Deployment (Git owns its spec): the group's effective replicas and
rung live in ``status.desiredReplicas`` and ``status.rung``, and the Deployment's loop reads them
through ``effective_group``. A change of size therefore goes through the group's ordinary rollout
(maxSurge/maxUnavailable), and deleting the policy returns the group to its spec.

Each policy runs in its own daemon, so a slow Prometheus delays only the policies that query it.
What ``decide`` remembers between evaluations (``History``) is kept in that daemon's memory; after
a restart it is rebuilt conservatively from status (``History.after_restart``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import kopf
from pydantic import ValidationError

from skyfleet.api.common import ConditionStatus
from skyfleet.api.scalingpolicy import (
    DEFAULT_TOKEN_KEY,
    MetricRule,
    ScalingDecision,
    ScalingPolicy,
    ScalingPolicyStatus,
)
from skyfleet.connectors.endpoints import EndpointPolicy
from skyfleet.handlers.context import GROUP, VERSION, Context, ctx_of
from skyfleet.handlers.context import now as utcnow
from skyfleet.handlers.indexes import Lookup, by_deployment, inline_index
from skyfleet.handlers.loop import LoopSpec, run_loop
from skyfleet.handlers.status import write_status
from skyfleet.metricsources import PrometheusClient, QueryError, Sample
from skyfleet.reconcile.conditions import find_condition, set_condition
from skyfleet.reconcile.messages import error_message, safe_message
from skyfleet.reconcile.scaling import (
    DATA_PROBLEMS,
    Decision,
    History,
    Reading,
    decide,
    describe_size,
    governing_policy,
    initial_rung,
    rule_statuses,
    selector,
)
from skyfleet.reconcile.scaling_scope import QueryNotScoped, same_server, scope_query
from skyfleet.reconcile.views import GroupView

__all__ = ["Sources", "evaluate_loop", "scaling_policies"]

MEMO_KEY = "scaling_sources"
DIRECTIONS = {"ScaledOut": "out", "ScaledIn": "in", "SizedUp": "up", "SizedDown": "down"}


@dataclass
class Sources:
    """The Prometheus clients of this operator: one for its own URL, one for URLs tenants chose.

    The operator's own Prometheus is shared by every namespace, so what goes there is confined to
    the policy's namespace (``tenant_label``): see ``skyfleet.reconcile.scaling_scope``.
    """

    default_url: str | None
    endpoints: EndpointPolicy
    trusted: PrometheusClient
    tenant: PrometheusClient
    tenant_label: str = "namespace"

    @classmethod
    def of(cls, ctx: Context) -> Sources:
        endpoints = EndpointPolicy.parse(ctx.settings.allowed_endpoints)
        return cls(
            default_url=ctx.settings.prometheus_url,
            endpoints=endpoints,
            trusted=PrometheusClient(),
            # A tenant's URL may name a host that resolves to the metadata service or the pod
            # network: every address it resolves to passes the cloud endpoints' rules first.
            tenant=PrometheusClient(address_check=endpoints.check_address),
            tenant_label=ctx.settings.prometheus_tenant_label,
        )

    async def close(self) -> None:
        await self.trusted.close()
        await self.tenant.close()


class SourceProblem(Exception):
    """The policy's queries cannot be sent at all; ``reason`` is CamelCase for the condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@kopf.on.startup()
async def open_sources(memo: Any, **_: Any) -> None:
    # The operator-level memo: every policy's daemon gets a shallow copy holding the same clients.
    memo[MEMO_KEY] = Sources.of(ctx_of(memo))


@kopf.on.cleanup()
async def close_sources(memo: Any, **_: Any) -> None:
    sources = memo.get(MEMO_KEY)
    if isinstance(sources, Sources):
        await sources.close()


@inline_index("scalingpolicies")
def scaling_policies(
    *, namespace: str | None, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], ScalingPolicy] | None:
    """Policies by (namespace, Deployment): the Deployment's loop reads its governing policies here."""
    try:
        policy = ScalingPolicy.model_validate(dict(body))
    except ValidationError:
        return None  # the CRD's schema admits only valid ones; a stale schema must not break indexing
    return {(namespace or "", policy.spec.target.deployment): policy}


@kopf.on.event(GROUP, VERSION, "scalingpolicies")
async def policy_changed(*, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Wake the governed Deployment (the index now holds the new status) and, on a spec edit, the policy."""
    ctx = ctx_of(memo)
    ctx.metrics.watch_event("scalingpolicies")
    target = (body.get("spec") or {}).get("target") or {}
    if target.get("deployment"):
        ctx.wake("deployment", namespace or "", str(target["deployment"]))
    # Only a spec change (kubectl scale, an edit) evaluates early; our own status writes do not,
    # or a constraint with for: 0s would act once per write instead of once per period.
    if body.get("metadata", {}).get("generation") != (body.get("status") or {}).get("observedGeneration"):
        ctx.wake("scalingpolicy", namespace or "", name)


@kopf.daemon(GROUP, VERSION, "scalingpolicies", id="evaluate", cancellation_timeout=2.0)
async def evaluate_loop(
    *,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    stopped: kopf.DaemonStopped,
    **kwargs: Any,
) -> None:
    assert namespace is not None  # every skyfleet.io kind is namespaced
    ctx = ctx_of(memo)
    sources = memo[MEMO_KEY]
    assert isinstance(sources, Sources)
    memory: list[History] = []  # this policy's History, in memory only

    async def once() -> None:
        await evaluate_once(
            ctx,
            sources,
            namespace=namespace,
            name=name,
            body=body,
            policies=kwargs["scaling_policies"],
            deployments=kwargs["deployments"],
            instances=by_deployment(kwargs),
            memory=memory,
        )

    # One broken policy must not stop the others: the loop reports it and tries next period.
    spec = LoopSpec("scalingpolicy", namespace, name, period=ctx.settings.scaling_period, error_event="EvaluationError")
    await run_loop(ctx, spec, body=body, stopped=stopped, logger=logger, once=once)


async def evaluate_once(
    ctx: Context,
    sources: Sources,
    *,
    namespace: str,
    name: str,
    body: kopf.Body,
    policies: kopf.Index[Any, Any],
    deployments: kopf.Index[Any, Any],
    instances: Lookup,
    memory: list[History],
) -> None:
    policy = ScalingPolicy.model_validate(dict(body))
    if policy.metadata.deletion_timestamp is not None:
        return
    target = policy.spec.target
    now = utcnow()
    old = policy.status or ScalingPolicyStatus()
    status = old.model_copy(deep=True)
    status.observed_generation = policy.metadata.generation or None
    status.selector = selector(target.deployment, target.group)
    status.replicas = sum(
        1 for v in instances.get((namespace, target.deployment), []) if v.group == target.group and not v.deleting
    )
    dep = next((d for d in deployments.get(namespace, []) if d.name == target.deployment), None)
    group = next((g for g in dep.groups if g.name == target.group), None) if dep is not None else None
    governing = governing_policy(list(policies.get((namespace, target.deployment), [])), *_target(policy))
    if group is None:
        what = f"Deployment {target.deployment}" + (f" has no node group {target.group}" if dep else " does not exist")
        _ready(status, policy, (False, "TargetNotFound", what), now)
        memory.clear()
    elif governing is not None and governing.metadata.name != name:
        message = (
            f"group {target.group} of Deployment {target.deployment} is governed by ScalingPolicy "
            f"{governing.metadata.name}; this policy does nothing while that one exists"
        )
        _ready(status, policy, (False, "Conflict", message), now)
        status.desired_replicas = status.rung = status.size = None
        memory.clear()
    else:
        await _govern(ctx, sources, policy, group, body=body, status=status, memory=memory, now=now)
    old_raw = body.get("status")
    # The Ready reason is announced here (only TargetNotFound and Conflict), not by the writer.
    if await write_status(ctx, body, old_raw, status, announce=False) != dict(old_raw or {}):
        before = find_condition(old.conditions, "Ready")
        after = find_condition(status.conditions, "Ready")
        if after is not None and after.status == ConditionStatus.TRUE:
            ctx.announced.pop(("scalingpolicy", namespace, name), None)
        elif (
            after is not None
            and after.reason in ("TargetNotFound", "Conflict")
            and (before is None or before.reason != after.reason)
            and ctx.announce_once("scalingpolicy", namespace, name, after.reason)
        ):
            ctx.event(body, "Warning", after.reason, after.message)


def _ready(status: ScalingPolicyStatus, policy: ScalingPolicy, why: tuple[bool, str, str], now: datetime) -> None:
    ok, reason, message = why
    status.conditions = set_condition(
        status.conditions, "Ready", ok, reason, message, now=now, generation=policy.metadata.generation or None
    )


async def _govern(
    ctx: Context,
    sources: Sources,
    policy: ScalingPolicy,
    group: GroupView,
    *,
    body: kopf.Body,
    status: ScalingPolicyStatus,
    memory: list[History],
    now: datetime,
) -> None:
    """Evaluate the rules, decide, and put the decision into ``status``; send its events."""
    spec, old = policy.spec, policy.status or ScalingPolicyStatus()
    # Like HPA, a policy scales from what it decided last, not from the VMs that exist right now.
    if old.desired_replicas is not None:
        current = old.desired_replicas
    else:
        current = 1 if group.replicas is None else group.replicas
    rung = old.rung if old.rung is not None else initial_rung(spec, group.size)
    history = memory[0] if memory else _after_restart(old, current, now)
    problem: SourceProblem | None = None
    try:
        readings = await _readings(ctx, sources, policy, now)
    except SourceProblem as exc:
        readings = {r.name: Reading(None, now, "MetricUnavailable", exc.message) for r in spec.metrics or []}
        problem = exc
    decision = decide(spec, current, rung, readings, history=history, now=now)
    for reading in readings.values():
        if reading.problem is not None and problem is None:
            ctx.metrics.metric_query_error(reading.problem)
    _record(status, policy, group, decision, before=(current, rung), now=now)
    status.metrics = rule_statuses(spec.metrics or [], readings, old.metrics)
    if problem is not None:
        _ready(status, policy, (False, problem.reason, problem.message), now)
    else:
        _ready(status, policy, (not decision.data_problem, decision.reason, decision.message or decision.reason), now)
    for e in decision.events:
        if problem is not None and e.reason in DATA_PROBLEMS:
            ctx.event(body, "Warning", problem.reason, problem.message)
        else:
            ctx.event(body, e.type, e.reason, e.message)
        if e.reason in DIRECTIONS:
            ctx.metrics.scaling_decision(DIRECTIONS[e.reason])
    memory[:] = [decision.history]


def _record(
    status: ScalingPolicyStatus,
    policy: ScalingPolicy,
    group: GroupView,
    decision: Decision,
    *,
    before: tuple[int, int | None],
    now: datetime,
) -> None:
    """The decision in status: the effective replicas and rung, and when and why they last changed."""
    current, rung = before
    spec = policy.spec
    status.desired_replicas = decision.replicas
    status.rung = decision.rung
    sizes = spec.vertical.sizes if spec.vertical else None
    status.size = describe_size(sizes[decision.rung] if sizes and decision.rung is not None else group.size)
    if decision.replicas == current and decision.rung == rung:
        return
    status.last_decision = ScalingDecision(
        time=now,
        previous_replicas=current,
        replicas=decision.replicas,
        previous_rung=rung,
        rung=decision.rung,
        reason=decision.reason,
        message=safe_message(decision.message),
    )
    if decision.replicas != current:
        status.last_scale_time = now
    if decision.rung != rung:
        status.last_size_change_time = now


def _target(policy: ScalingPolicy) -> tuple[str, str]:
    return policy.spec.target.deployment, policy.spec.target.group


def _after_restart(old: ScalingPolicyStatus, current: int, now: datetime) -> History:
    """A History for a policy this process has not evaluated yet, from what its status remembers."""
    if old.desired_replicas is None:
        return History()
    last = old.last_decision
    last_scale = None
    if old.last_scale_time is not None and last is not None and last.previous_replicas is not None:
        last_scale = (old.last_scale_time, last.replicas - last.previous_replicas)
    return History.after_restart(current, now, last_scale=last_scale, last_size_change=old.last_size_change_time)


async def _readings(ctx: Context, sources: Sources, policy: ScalingPolicy, now: datetime) -> dict[str, Reading]:
    """Every rule's query, sent at once to the policy's Prometheus; a rule's failure is its reading."""
    rules = policy.spec.metrics or []
    if not rules:
        return {}
    override = policy.spec.prometheus
    namespace = policy.metadata.namespace or ""
    if override is not None:
        try:
            sources.endpoints.check_url(override.url, what="Prometheus URL")
        except Exception as exc:
            raise SourceProblem("EndpointNotAllowed", error_message(exc)) from None
        url, client = override.url, sources.tenant
    elif sources.default_url:
        url, client = sources.default_url, sources.trusted
    else:
        raise SourceProblem(
            "PrometheusNotConfigured",
            "no Prometheus to query: the operator has no --prometheus-url and the policy no spec.prometheus.url",
        )
    token = None
    ref = override.bearer_token_secret_ref if override is not None else None
    if ref is not None:
        data = await ctx.kube.get_secret(namespace, ref.name)
        key = ref.key or DEFAULT_TOKEN_KEY
        if data is None or not data.get(key):
            raise SourceProblem("SecretNotFound", f"Secret {ref.name} with key {key} not found")
        token = data[key].strip()
    # The shared Prometheus (also when a policy names it as its own URL) sees only scoped queries.
    shared = override is None or same_server(override.url, sources.default_url)
    queries = _queries(rules, namespace, sources.tenant_label if shared else None, now)
    sent = [(name, q) for name, q in queries.items() if isinstance(q, str)]
    results = await asyncio.gather(*(client.query(url, q, bearer_token=token) for _, q in sent))
    answers = dict(zip((name for name, _ in sent), results, strict=True))
    readings: dict[str, Reading] = {}
    for rule in rules:
        refused = queries[rule.name]
        if isinstance(refused, Reading):
            readings[rule.name] = refused
            continue
        result = answers[rule.name]
        if isinstance(result, Sample):
            readings[rule.name] = Reading(result.value, now)
        else:
            assert isinstance(result, QueryError)
            readings[rule.name] = Reading(None, now, result.reason, result.message)
    return readings


def _queries(rules: list[MetricRule], namespace: str, label: str | None, now: datetime) -> dict[str, str | Reading]:
    """Each rule's query as it is sent: confined to ``label="<namespace>"`` when ``label`` is given,
    or the reading that says why it is not sent at all."""
    queries: dict[str, str | Reading] = {}
    for rule in rules:
        try:
            queries[rule.name] = rule.query if label is None else scope_query(rule.query, namespace, label)
        except QueryNotScoped as exc:
            queries[rule.name] = Reading(None, now, "QueryNotScoped", safe_message(f"not sent: {exc}"))
    return queries
