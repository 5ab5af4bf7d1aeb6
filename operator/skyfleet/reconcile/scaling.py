"""Scaling decisions: a ScalingPolicy, the group's replicas and rung, the latest readings -> what the group becomes.

``decide`` is one pure function, evaluated once per evaluation period, and reads like the table of
rules in the docs:

1. Replicas outside [minReplicas, maxReplicas] move inside at once (the user's explicit bound).
2. Without metric rules the policy follows ``spec.replicas`` (kubectl scale, KEDA, an HPA), clamped.
3. A rule without a usable reading leaves everything as it is, and says why.
4. Target rules (HPA): desired = ceil(current x value / target), or ceil(value / averageValue);
   nothing moves within the tolerance; the largest desired over target rules is the recommendation.
   Recommendations are stabilized as HPA does: scaling up takes the lowest recommendation of the
   scale-up window, scaling down the highest of the scale-down window.
5. Constraint rules (SlipStream/CELAR): held for ``for``, a rule acts once (ScaleOut/ScaleIn by its
   step, SizeUp/SizeDown one rung) and its clock restarts, so "above 80% for 2m: add 2" adds two
   every two minutes while it holds. ``for`` is their stabilization; besides, none reverses a
   scaling of the other direction younger than that direction's window.
6. The largest of the stabilized target recommendation and the constraints' counts wins; then the
   max step per period, the bounds, scale-to-zero through one replica, and the cooldown after a
   size change (no scale-in, no size change) apply, in that order.

The function remembers nothing itself: what it needs from earlier evaluations is ``History``, which
it takes and returns (see ``History`` for what to persist).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from skyfleet.api.deployment import Deployment, DeploymentStatus, NodeGroup, Size
from skyfleet.api.scalingpolicy import (
    DEFAULT_PERIOD_SECONDS,
    DEFAULT_SCALE_DOWN_WINDOW_SECONDS,
    DEFAULT_SCALE_UP_WINDOW_SECONDS,
    DEFAULT_STEP,
    DEFAULT_TOLERANCE,
    DEFAULT_VERTICAL_COOLDOWN_SECONDS,
    HORIZONTAL_ACTIONS,
    DirectionBehavior,
    MetricRule,
    RuleStatus,
    ScalingPolicy,
    ScalingPolicySpec,
)
from skyfleet.reconcile.views import DEPLOYMENT_LABEL, GROUP_LABEL

__all__ = [
    "DATA_PROBLEMS",
    "Decision",
    "EffectiveGroup",
    "Event",
    "History",
    "Reading",
    "decide",
    "describe_size",
    "effective_deployment",
    "effective_group",
    "governed_status",
    "governing_policy",
    "initial_rung",
    "rule_statuses",
    "selector",
]

# Why a rule has no usable number, most severe first (a human must fix the first two; the others pass).
# QueryNotScoped: the query would read another namespace's series (reconcile.scaling_scope).
DATA_PROBLEMS = ("QueryNotScoped", "QueryInvalid", "MetricUnavailable", "NoData")


@dataclass(frozen=True)
class Reading:
    """The latest answer for one rule: a number, or the CamelCase reason there is none."""

    value: float | None
    at: datetime
    problem: str | None = None
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.problem is None and self.value is not None and math.isfinite(self.value)


@dataclass(frozen=True)
class Event:
    reason: str  # CamelCase: ScaledOut, ScaledIn, SizedUp, SizedDown, or a data problem
    message: str
    type: str = "Normal"  # or Warning


@dataclass(frozen=True)
class History:
    """What a decision needs from earlier evaluations; ``decide`` returns the next one, pruned.

    - ``recommendations``: (time, replicas) of target rules over the longest stabilization window.
    - ``holding``: since when each rule's condition has held ("<rule>>" above, "<rule><" below).
    - ``scale_events``: (time, change in replicas) over the longest max-step period and window.
    - ``last_size_change``: when the rung last moved (for the cooldown).
    - ``problem``: the data problem of the last evaluation, so its event is sent once, not every time.

    Losing it is safe: ``History.after_restart`` assumes the current replicas were recommended for
    the whole scale-down window and that no condition has held yet, so a restart can delay a
    change but never hasten one. ``last_size_change`` and the newest ``scale_events`` are in the
    policy's status (lastSizeChangeTime, lastScaleTime and lastDecision) for that reason.
    """

    recommendations: tuple[tuple[datetime, int], ...] = ()
    holding: tuple[tuple[str, datetime], ...] = ()
    scale_events: tuple[tuple[datetime, int], ...] = ()
    last_size_change: datetime | None = None
    problem: str | None = None

    @classmethod
    def after_restart(
        cls,
        current: int,
        now: datetime,
        *,
        last_scale: tuple[datetime, int] | None = None,
        last_size_change: datetime | None = None,
    ) -> History:
        """A conservative history for a policy whose memory was lost (new operator, failover)."""
        return cls(
            recommendations=((now, current),),
            scale_events=(last_scale,) if last_scale else (),
            last_size_change=last_size_change,
        )

    def holding_since(self, key: str) -> datetime | None:
        return dict(self.holding).get(key)


@dataclass(frozen=True)
class Decision:
    replicas: int
    rung: int | None
    reason: str  # CamelCase, for the condition and status.lastDecision
    message: str
    events: tuple[Event, ...]
    history: History

    @property
    def data_problem(self) -> bool:
        return self.reason in DATA_PROBLEMS


@dataclass(frozen=True)
class _Behavior:
    up_window: float
    down_window: float
    up_step: int | None
    up_period: float
    down_step: int | None
    down_period: float
    cooldown: float

    @classmethod
    def of(cls, spec: ScalingPolicySpec) -> _Behavior:
        b = spec.behavior
        up = b.scale_up if b and b.scale_up else DirectionBehavior()
        down = b.scale_down if b and b.scale_down else DirectionBehavior()
        return cls(
            up_window=_seconds(up.stabilization_window_seconds, DEFAULT_SCALE_UP_WINDOW_SECONDS),
            down_window=_seconds(down.stabilization_window_seconds, DEFAULT_SCALE_DOWN_WINDOW_SECONDS),
            up_step=up.max_step,
            up_period=_seconds(up.period_seconds, DEFAULT_PERIOD_SECONDS),
            down_step=down.max_step,
            down_period=_seconds(down.period_seconds, DEFAULT_PERIOD_SECONDS),
            cooldown=_seconds(b.vertical_cooldown_seconds if b else None, DEFAULT_VERTICAL_COOLDOWN_SECONDS),
        )

    @property
    def memory(self) -> float:
        """How far back any rule looks."""
        return max(self.up_window, self.down_window, self.up_period, self.down_period)


def _seconds(value: int | None, default: int) -> float:
    return float(default if value is None else value)


@dataclass
class _Evaluation:
    """Scratch state of one decision: the inputs, the clocks of held conditions, and why so far."""

    spec: ScalingPolicySpec
    behavior: _Behavior
    current: int
    rung: int | None
    now: datetime
    history: History
    holding: dict[str, datetime] = field(default_factory=dict)
    reason: str = "Steady"
    notes: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def since(self, seconds: float) -> datetime:
        return self.now - timedelta(seconds=seconds)

    def note(self, reason: str, message: str) -> None:
        """Record a step's conclusion; the last step that changed the outcome names the reason."""
        self.reason = reason
        self.notes.append(message)


@dataclass(frozen=True)
class _Wish:
    """What one rule (or the target rules together) asks for, and how to say it."""

    replicas: int
    reason: str
    message: str


def decide(
    spec: ScalingPolicySpec,
    current: int,
    rung: int | None,
    readings: Mapping[str, Reading],
    *,
    history: History,
    now: datetime,
) -> Decision:
    """The group's replicas and rung after this evaluation, why, the events to send, and the next history.

    ``current`` is the group's effective replicas now (what this policy decided last, or the
    group's own replicas before its first decision), not the count of running VMs: like HPA, the
    policy scales from what it asked for. ``rung`` is None when the policy has no size ladder.
    ``readings`` maps rule names to their latest reading; a rule without one counts as unavailable.
    """
    behavior = _Behavior.of(spec)
    history = _pruned(history, now, behavior.memory)
    ev = _Evaluation(spec, behavior, current, _valid_rung(spec, rung), now, history, dict(history.holding))
    low, high = spec.effective_min_replicas, spec.max_replicas

    if not low <= current <= high:
        target = min(max(current, low), high)
        ev.note("TooFewReplicas" if current < low else "TooManyReplicas", f"{current} is outside [{low}, {high}]")
        return _finish(ev, target, ev.rung)

    rules = spec.metrics or []
    if not rules:
        wanted = current if spec.replicas is None else spec.replicas
        target = min(max(wanted, low), high)
        ev.note(
            "FollowingReplicas", f"spec.replicas is {wanted}" + ("" if target == wanted else f", bounded to {target}")
        )
        return _finish(ev, _through_one(ev, target), ev.rung)

    problems = [(name, r) for name, r in _readings(rules, readings) if not r.usable]
    if problems:
        return _without_data(ev, problems)

    values = {rule.name: float(readings[rule.name].value or 0.0) for rule in rules}
    ev.holding = {k: t for k, t in ev.holding.items() if _rule_of(k) in values}
    wishes = [w for w in [_targets(ev, [r for r in rules if r.target], values)] if w is not None]
    counts, rung_move = _constraints(ev, [r for r in rules if r.constraint], values)
    wishes += counts
    if wishes:
        winner = max(wishes, key=lambda w: w.replicas)
        ev.note(winner.reason, winner.message)
        target = winner.replicas
    else:
        target = current
    if target == current and ev.pending and ev.reason in ("Steady", "WithinTolerance"):
        ev.note("ConditionPending", "; ".join(ev.pending))
    target = _no_reversal(ev, target)
    target = _rate_limited(ev, target)
    if not low <= target <= high:
        target = min(max(target, low), high)
        ev.note("TooManyReplicas" if target == high else "TooFewReplicas", f"bounded to [{low}, {high}]")
    target = _through_one(ev, target)
    target, new_rung = _vertical(ev, target, rung_move)
    return _finish(ev, target, new_rung)


# -- the steps -------------------------------------------------------------------------------------


def _readings(rules: Sequence[MetricRule], readings: Mapping[str, Reading]) -> list[tuple[str, Reading]]:
    missing = Reading(value=None, at=datetime.min, problem="MetricUnavailable", detail="not evaluated")
    return [(rule.name, readings.get(rule.name, missing)) for rule in rules]


def _without_data(ev: _Evaluation, problems: list[tuple[str, Reading]]) -> Decision:
    """No scaling on missing data: replicas and rung stay, the reason says which rule lacks what."""
    reason = min((r.problem or "NoData" for _, r in problems), key=_severity)
    detail = "; ".join(f"{name}: {r.detail or r.problem or 'not a finite number'}" for name, r in problems)
    ev.note(reason, f"no change without data ({detail})")
    # Conditions of rules without data are no longer known to hold; the others keep their clocks.
    lacking = {name for name, _ in problems}
    ev.holding = {k: t for k, t in ev.holding.items() if _rule_of(k) not in lacking}
    events = () if ev.history.problem == reason else (Event(reason, ev.notes[-1], "Warning"),)
    history = replace(ev.history, holding=tuple(sorted(ev.holding.items())), problem=reason)
    return Decision(ev.current, ev.rung, ev.reason, "; ".join(ev.notes), events, history)


def _severity(problem: str) -> int:
    return DATA_PROBLEMS.index(problem) if problem in DATA_PROBLEMS else len(DATA_PROBLEMS)


def _targets(ev: _Evaluation, rules: Sequence[MetricRule], values: Mapping[str, float]) -> _Wish | None:
    """The stabilized recommendation of the target rules (None without target rules)."""
    if not rules:
        return None
    current = ev.current
    wishes: list[_Wish] = []
    for rule in rules:
        t = rule.target
        assert t is not None
        value = values[rule.name]
        tolerance = DEFAULT_TOLERANCE if t.tolerance is None else t.tolerance
        if t.average_value is not None:
            # The query measures the whole group, so per replica it is value / current.
            ratio = value / (t.average_value * current) if current else (math.inf if value > 0 else 1.0)
            raw = math.ceil(value / t.average_value)
            seen = f"{rule.name} is {value:g} for {current} replicas, target {t.average_value:g} each"
        else:
            assert t.value is not None
            ratio = value / t.value
            # From zero the formula stays at zero whatever the load: count from one replica.
            raw = math.ceil(max(current, 1) * ratio) if current or ratio > 1 else 0
            seen = f"{rule.name} is {value:g}, target {t.value:g}"
        if abs(ratio - 1) <= tolerance or raw == current:
            wishes.append(_Wish(current, "WithinTolerance", f"{seen} (within {tolerance:.0%})"))
            _release(ev, rule.name)
        elif not _held(ev, rule, ">" if raw > current else "<"):
            wishes.append(_Wish(current, "ConditionPending", f"{seen}; waiting for it to hold {rule.for_}"))
        else:
            wishes.append(_Wish(raw, "AboveTarget" if raw > current else "BelowTarget", f"{seen}: {raw} replicas"))
    # The largest wins; at equal counts a rule that wants a change explains it best.
    best = max(wishes, key=lambda w: (w.replicas, w.reason not in ("WithinTolerance", "ConditionPending")))
    low, high = ev.spec.effective_min_replicas, ev.spec.max_replicas
    if best.replicas > high:
        best = _Wish(high, "TooManyReplicas", f"{best.message}, bounded by maxReplicas {high}")
    elif best.replicas < low:
        best = _Wish(low, "TooFewReplicas", f"{best.message}, bounded by minReplicas {low}")
    return _stabilized(ev, best)


def _stabilized(ev: _Evaluation, wish: _Wish) -> _Wish:
    """HPA's stabilization: up to the lowest recommendation of the up window, down to the highest of the down one."""
    recs = (*ev.history.recommendations, (ev.now, wish.replicas))
    ev.history = replace(ev.history, recommendations=recs)
    b, current = ev.behavior, ev.current
    up = min(r for t, r in recs if t >= ev.since(b.up_window))
    down = max(r for t, r in recs if t >= ev.since(b.down_window))
    stabilized = up if up > current else down if down < current else current
    if stabilized == wish.replicas:
        return wish
    if wish.replicas > current:
        return _Wish(
            stabilized, "ScaleUpStabilized", f"{wish.message}; lowest of the last {b.up_window:g}s: {stabilized}"
        )
    return _Wish(
        stabilized, "ScaleDownStabilized", f"{wish.message}; highest of the last {b.down_window:g}s: {stabilized}"
    )


def _constraints(ev: _Evaluation, rules: Sequence[MetricRule], values: Mapping[str, float]) -> tuple[list[_Wish], int]:
    """Replica counts wanted by constraints that act now, and the rung move (+1, -1 or 0)."""
    counts: list[_Wish] = []
    moves: list[int] = []
    for rule in rules:
        c = rule.constraint
        assert c is not None
        value = values[rule.name]
        holds = value > c.above if c.above is not None else c.below is not None and value < c.below
        threshold = f"above {c.above:g}" if c.above is not None else f"below {c.below:g}"
        if not holds:
            _release(ev, rule.name)
            continue
        if not _held(ev, rule, "!"):
            if not counts and ev.reason == "Steady":
                ev.note(
                    "ConditionPending", f"{rule.name} is {value:g}, {threshold}; waiting for it to hold {rule.for_}"
                )
            continue
        said = f"{rule.name} is {value:g}, {threshold} for {rule.for_ or '0s'}"
        if c.action in HORIZONTAL_ACTIONS:
            step = c.step or DEFAULT_STEP
            count = ev.current + step if c.action == "ScaleOut" else max(ev.current - step, 0)
            counts.append(_Wish(count, "ConstraintHeld", f"{said}: {c.action} by {step}"))
        else:
            moves.append(1 if c.action == "SizeUp" else -1)
            ev.notes.append(f"{said}: {c.action}")
        # Acting restarts the clock: the next action needs the condition to hold for another `for`.
        ev.holding[_key(rule.name, "!")] = ev.now
    move = 1 if 1 in moves else -1 if moves else 0
    return counts, move


def _no_reversal(ev: _Evaluation, target: int) -> int:
    """No scale-in within the scale-down window of a scale-out, nor the reverse (constraints included)."""
    b = ev.behavior
    if target < ev.current:
        last_out = _last_scale(ev, up=True)
        if last_out is not None and last_out > ev.since(b.down_window):
            ev.note("ScaleDownStabilized", f"the group scaled out less than {b.down_window:g}s ago")
            return ev.current
    if target > ev.current:
        last_in = _last_scale(ev, up=False)
        if last_in is not None and last_in > ev.since(b.up_window):
            ev.note("ScaleUpStabilized", f"the group scaled in less than {b.up_window:g}s ago")
            return ev.current
    return target


def _rate_limited(ev: _Evaluation, target: int) -> int:
    """At most maxStep replicas added (removed) within periodSeconds, counting what was already done."""
    b, current = ev.behavior, ev.current
    if target > current and b.up_step is not None:
        added = sum(d for t, d in ev.history.scale_events if d > 0 and t > ev.since(b.up_period))
        limit = max(current - added + b.up_step, current)
        if target > limit:
            ev.note("ScaleUpLimited", f"at most {b.up_step} more per {b.up_period:g}s: {limit}")
            return limit
    if target < current and b.down_step is not None:
        removed = sum(-d for t, d in ev.history.scale_events if d < 0 and t > ev.since(b.down_period))
        limit = min(current + removed - b.down_step, current)
        if target < limit:
            ev.note("ScaleDownLimited", f"at most {b.down_step} fewer per {b.down_period:g}s: {limit}")
            return limit
    return target


def _through_one(ev: _Evaluation, target: int) -> int:
    if target == 0 and ev.current > 1:
        ev.note("ScaleToZeroThroughOne", "scaling to zero passes through one replica")
        return 1
    return target


def _vertical(ev: _Evaluation, target: int, rung_move: int) -> tuple[int, int | None]:
    """The rung move, and the cooldown after a size change: no scale-in and no further size change."""
    last = ev.history.last_size_change
    if last is not None and last > ev.since(ev.behavior.cooldown) and (target < ev.current or rung_move):
        ev.note("SizeChangeCooldown", f"the size changed less than {ev.behavior.cooldown:g}s ago")
        return max(target, ev.current), ev.rung
    if ev.rung is None or not rung_move or ev.spec.vertical is None:
        return target, ev.rung
    moved = min(max(ev.rung + rung_move, 0), len(ev.spec.vertical.sizes) - 1)
    if moved == ev.rung:
        ev.note("AtLargestSize" if rung_move > 0 else "AtSmallestSize", f"rung {ev.rung} ends the ladder")
    elif target == ev.current:
        ev.reason = "ConstraintHeld"
    return target, moved


def _finish(ev: _Evaluation, replicas: int, rung: int | None) -> Decision:
    events: list[Event] = []
    history = ev.history
    why = "; ".join(ev.notes)
    if replicas != ev.current:
        reason = "ScaledOut" if replicas > ev.current else "ScaledIn"
        events.append(Event(reason, f"{ev.current} -> {replicas} replicas: {why}"))
        history = replace(history, scale_events=(*history.scale_events, (ev.now, replicas - ev.current)))
    if rung is not None and ev.rung is not None and rung != ev.rung:
        reason = "SizedUp" if rung > ev.rung else "SizedDown"
        events.append(Event(reason, f"rung {ev.rung} -> {rung}: {why}"))
        history = replace(history, last_size_change=ev.now)
    history = replace(history, holding=tuple(sorted(ev.holding.items())), problem=None)
    return Decision(replicas, rung, ev.reason, why, tuple(events), history)


# -- helpers ---------------------------------------------------------------------------------------


def _key(rule: str, direction: str) -> str:
    return f"{rule}{direction}"


def _rule_of(key: str) -> str:
    return key[:-1]


def _held(ev: _Evaluation, rule: MetricRule, direction: str) -> bool:
    """Whether the rule's condition (in this direction) has held for its `for`; starts the clock if new."""
    for other in (">", "<", "!"):
        if other != direction:
            ev.holding.pop(_key(rule.name, other), None)
    key = _key(rule.name, direction)
    since = ev.holding.setdefault(key, ev.now)
    return (ev.now - since).total_seconds() >= rule.for_seconds


def _release(ev: _Evaluation, rule: str) -> None:
    for direction in (">", "<", "!"):
        ev.holding.pop(_key(rule, direction), None)


def _last_scale(ev: _Evaluation, *, up: bool) -> datetime | None:
    times = [t for t, d in ev.history.scale_events if d != 0 and (d > 0) == up]
    return max(times) if times else None


def _pruned(history: History, now: datetime, memory: float) -> History:
    """Forget what no window or period can look at any more."""
    horizon = now - timedelta(seconds=memory)
    recs = tuple((t, r) for t, r in history.recommendations if t >= horizon)
    events = tuple((t, d) for t, d in history.scale_events if t >= horizon)
    return replace(history, recommendations=recs, scale_events=events)


def _valid_rung(spec: ScalingPolicySpec, rung: int | None) -> int | None:
    if not spec.vertical:
        return None
    top = len(spec.vertical.sizes) - 1
    return 0 if rung is None else min(max(rung, 0), top)


# -- around the decision ---------------------------------------------------------------------------


def initial_rung(spec: ScalingPolicySpec, size: Size) -> int | None:
    """The rung a newly governed group starts on: its own size if the ladder has it, else the smallest."""
    if not spec.vertical:
        return None
    for index, rung in enumerate(spec.vertical.sizes):
        if rung == size:
            return index
    return 0


def selector(deployment: str, group: str) -> str:
    """The /scale label selector of a group's Instances (never empty)."""
    return f"{DEPLOYMENT_LABEL}={deployment},{GROUP_LABEL}={group}"


def describe_size(size: Size) -> str:
    """A short human summary for the Size printer column, e.g. 2cpu/4096MiB or ec2:t3.medium."""
    if size.cpu is not None and size.memory_mib is not None:
        text = f"{size.cpu}cpu/{size.memory_mib}MiB"
        return text + (f"/{size.disk_gib}GiB" if size.disk_gib else "")
    return ",".join(f"{provider}:{kind}" for provider, kind in sorted((size.instance_types or {}).items()))


@dataclass(frozen=True)
class EffectiveGroup:
    """A node group as the Deployment's planner should run it, and which policy (if any) decided that."""

    group: NodeGroup
    governed_by: str | None = None


def governing_policy(policies: Sequence[ScalingPolicy], deployment: str, group: str) -> ScalingPolicy | None:
    """The one policy that governs a group: the oldest (by creation, then name); the others are in Conflict."""
    candidates = [
        p
        for p in policies
        if p.spec.target.deployment == deployment
        and p.spec.target.group == group
        and p.metadata.deletion_timestamp is None
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda p: (p.metadata.creation_timestamp or datetime.max, p.metadata.name))


def effective_group(group: NodeGroup, policy: ScalingPolicy | None) -> EffectiveGroup:
    """The group with the replicas and size its governing policy decided, or as written without one.

    The policy's decision lives in its status (the Deployment's spec belongs to Git). Before the
    policy has decided anything the group runs as written. Bounds are applied again here, so a
    changed minReplicas/maxReplicas takes effect before the next evaluation; a rung beyond a
    shortened ladder means its last rung.
    """
    if policy is None or policy.status is None or policy.status.desired_replicas is None:
        return EffectiveGroup(group)
    spec, status = policy.spec, policy.status
    assert status.desired_replicas is not None
    replicas = min(max(status.desired_replicas, spec.effective_min_replicas), spec.max_replicas)
    size = group.size
    if spec.vertical and status.rung is not None:
        size = spec.vertical.sizes[min(status.rung, len(spec.vertical.sizes) - 1)]
    return EffectiveGroup(
        group.model_copy(update={"replicas": replicas, "size": size}), governed_by=policy.metadata.name
    )


def effective_deployment(
    deployment: Deployment, policies: Sequence[ScalingPolicy]
) -> tuple[Deployment, dict[str, EffectiveGroup]]:
    """The Deployment as its planner should run it: each group with its governing policy's decision.

    Returns the effective Deployment (never written anywhere: the stored spec stays the user's)
    and, per governed group, what the policy made of it.
    """
    governed: dict[str, EffectiveGroup] = {}
    groups: list[NodeGroup] = []
    for group in deployment.spec.node_groups:
        effective = effective_group(group, governing_policy(policies, deployment.metadata.name, group.name))
        if effective.governed_by is not None:
            governed[group.name] = effective
        groups.append(effective.group)
    if not governed:
        return deployment, governed
    spec = deployment.spec.model_copy(update={"node_groups": groups})
    return deployment.model_copy(update={"spec": spec}), governed


def governed_status(status: DeploymentStatus, governed: Mapping[str, EffectiveGroup]) -> DeploymentStatus:
    """The Deployment's status saying, per governed group, its effective replicas and which policy decided them."""
    if not governed or not status.groups:
        return status
    groups = []
    for group in status.groups:
        effective = governed.get(group.name)
        groups.append(
            group
            if effective is None
            else group.model_copy(
                update={"desired_replicas": effective.group.replicas, "scaling_policy": effective.governed_by}
            )
        )
    return status.model_copy(update={"groups": groups})


def rule_statuses(
    rules: Sequence[MetricRule], readings: Mapping[str, Reading], previous: Sequence[RuleStatus] | None
) -> list[RuleStatus] | None:
    """The last value of every rule, to four significant digits, with when it was read.

    A rule whose shown value (or reason) is unchanged keeps its entry and timestamp, so a steady
    metric makes no status write; a value that moves is written with the time it was read.
    """
    before = {r.name: r for r in previous or []}
    out: list[RuleStatus] = []
    for rule in rules:
        reading = readings.get(rule.name)
        if reading is None:
            continue
        value = float(f"{reading.value:.4g}") if reading.usable and reading.value is not None else None
        reason = None if reading.usable else (reading.problem or "NoData")
        old = before.get(rule.name)
        if old is not None and old.value == value and old.reason == reason:
            out.append(old)
            continue
        out.append(RuleStatus(name=rule.name, value=value, timestamp=reading.at, reason=reason))
    return out or None
