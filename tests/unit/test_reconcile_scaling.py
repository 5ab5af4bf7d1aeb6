"""Scaling decisions as tables: the HPA formula and tolerance, bounds, windows, step limits, `for`,
constraints and the size ladder, missing data, and the group a governing policy makes effective."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from skyfleet.api.deployment import Deployment, DeploymentStatus, GroupStatus, NodeGroup, Size
from skyfleet.api.scalingpolicy import RuleStatus, ScalingPolicy, ScalingPolicySpec, parse_duration
from skyfleet.reconcile.scaling import (
    Decision,
    History,
    Reading,
    decide,
    describe_size,
    effective_deployment,
    effective_group,
    governed_status,
    governing_policy,
    initial_rung,
    rule_statuses,
    selector,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SMALL = {"cpu": 1, "memoryMiB": 1024}
MEDIUM = {"cpu": 2, "memoryMiB": 4096}
LARGE = {"cpu": 4, "memoryMiB": 16384}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(*rules: dict[str, Any], **fields: Any) -> ScalingPolicySpec:
    doc: dict[str, Any] = {"target": {"deployment": "shop", "group": "web"}, "minReplicas": 1, "maxReplicas": 10}
    if rules:
        doc["metrics"] = list(rules)
    doc.update(fields)
    return ScalingPolicySpec.model_validate(doc)


def target(name: str = "load", for_: str | None = None, **target_fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "query": f"sum({name})", "target": target_fields}
    if for_:
        rule["for"] = for_
    return rule


def constraint(name: str, for_: str | None = None, **fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": name, "query": f"max({name})", "constraint": fields}
    if for_:
        rule["for"] = for_
    return rule


def windows(up: int = 0, down: int = 0, **more: Any) -> dict[str, Any]:
    return {"scaleUp": {"stabilizationWindowSeconds": up}, "scaleDown": {"stabilizationWindowSeconds": down}, **more}


def ok(value: float, when: datetime = T0) -> Reading:
    return Reading(value=value, at=when)


def once(policy: ScalingPolicySpec, current: int, values: dict[str, float], rung: int | None = None) -> Decision:
    return decide(policy, current, rung, {k: ok(v) for k, v in values.items()}, history=History(), now=T0)


class Run:
    """Evaluations of one policy over time, carrying replicas, rung and history as the handler would."""

    def __init__(self, policy: ScalingPolicySpec, current: int, rung: int | None = None) -> None:
        self.policy, self.current, self.rung, self.start = policy, current, rung, current
        self.history = History()
        self.decisions: list[tuple[float, Decision]] = []

    def step(self, seconds: float, **values: float) -> Decision:
        readings = {k: ok(v, at(seconds)) for k, v in values.items()}
        d = decide(self.policy, self.current, self.rung, readings, history=self.history, now=at(seconds))
        self.current, self.rung, self.history = d.replicas, d.rung, d.history
        self.decisions.append((seconds, d))
        return d

    def over(self, times: Sequence[float], **values: float) -> list[int]:
        return [self.step(t, **values).replicas for t in times]

    def changes(self) -> list[tuple[float, int]]:
        """(time, replicas) of every evaluation that changed the replicas."""
        out, last = [], self.start
        for t, d in self.decisions:
            if d.replicas != last:
                out.append((t, d.replicas))
            last = d.replicas
        return out


def every(start: float, stop: float, period: float = 15) -> list[float]:
    return [start + i * period for i in range(int((stop - start) / period) + 1)]


# -- one evaluation: the HPA formula, tolerance and bounds ------------------------------------------

# (case, policy, current replicas, readings, replicas decided, reason)
ONE_EVALUATION = [
    ("value above target", spec(target(value=0.5)), 4, {"load": 0.9}, 8, "AboveTarget"),
    ("value below target", spec(target(value=0.5), behavior=windows()), 4, {"load": 0.25}, 2, "BelowTarget"),
    ("inside the 10% tolerance", spec(target(value=0.5)), 4, {"load": 0.54}, 4, "WithinTolerance"),
    ("just outside the tolerance", spec(target(value=0.5)), 4, {"load": 0.56}, 5, "AboveTarget"),
    ("a wider tolerance", spec(target(value=0.5, tolerance=0.2)), 4, {"load": 0.56}, 4, "WithinTolerance"),
    ("no tolerance", spec(target(value=0.5, tolerance=0)), 4, {"load": 0.51}, 5, "AboveTarget"),
    ("averageValue: total / target", spec(target(averageValue=50)), 2, {"load": 250}, 5, "AboveTarget"),
    ("averageValue rounds up", spec(target(averageValue=50)), 2, {"load": 251}, 6, "AboveTarget"),
    ("averageValue down", spec(target(averageValue=50), behavior=windows()), 6, {"load": 100}, 2, "BelowTarget"),
    ("averageValue in tolerance", spec(target(averageValue=50)), 4, {"load": 215}, 4, "WithinTolerance"),
    ("bounded by maxReplicas", spec(target(value=0.5)), 4, {"load": 5}, 10, "TooManyReplicas"),
    (
        "bounded by minReplicas",
        spec(target(value=0.5), minReplicas=2, behavior=windows()),
        4,
        {"load": 0.01},
        2,
        "TooFewReplicas",
    ),
    (
        "largest of two targets wins",
        spec(target("cpu", value=0.5), target("rps", averageValue=100)),
        4,
        {"cpu": 0.75, "rps": 300},
        6,
        "AboveTarget",
    ),
    (
        "a target within tolerance does not hold back another",
        spec(target("cpu", value=0.5), target("rps", averageValue=100), behavior=windows()),
        4,
        {"cpu": 0.5, "rps": 900},
        9,
        "AboveTarget",
    ),
    ("from zero by averageValue", spec(target(averageValue=50), minReplicas=0), 0, {"load": 120}, 3, "AboveTarget"),
    ("from zero by value", spec(target(value=1), minReplicas=0), 0, {"load": 2.5}, 3, "AboveTarget"),
    (
        "no load at zero stays at zero",
        spec(target(averageValue=50), minReplicas=0),
        0,
        {"load": 0},
        0,
        "WithinTolerance",
    ),
    (
        "to zero passes through one",
        spec(target(averageValue=50), minReplicas=0, behavior=windows()),
        3,
        {"load": 0},
        1,
        "ScaleToZeroThroughOne",
    ),
    (
        "from one to zero",
        spec(target(averageValue=50), minReplicas=0, behavior=windows()),
        1,
        {"load": 0},
        0,
        "BelowTarget",
    ),
    (
        "below minReplicas moves up at once",
        spec(target(value=0.5), minReplicas=3),
        1,
        {"load": 0.5},
        3,
        "TooFewReplicas",
    ),
    ("above maxReplicas moves down at once", spec(target(value=0.5)), 14, {"load": 0.5}, 10, "TooManyReplicas"),
    ("no rules follow spec.replicas", spec(replicas=7), 3, {}, 7, "FollowingReplicas"),
    ("no rules, spec.replicas above max", spec(replicas=50), 3, {}, 10, "FollowingReplicas"),
    ("no rules, spec.replicas below min", spec(replicas=0, minReplicas=2), 3, {}, 2, "FollowingReplicas"),
    ("no rules, no spec.replicas: stay", spec(), 3, {}, 3, "FollowingReplicas"),
    ("no rules, to zero through one", spec(replicas=0, minReplicas=0), 5, {}, 1, "ScaleToZeroThroughOne"),
    ("no rules, from one to zero", spec(replicas=0, minReplicas=0), 1, {}, 0, "FollowingReplicas"),
    ("no rules ignore windows", spec(replicas=2, behavior=windows(down=600)), 8, {}, 2, "FollowingReplicas"),
]


@pytest.mark.parametrize(
    ("case", "policy", "current", "values", "replicas", "reason"), ONE_EVALUATION, ids=[c[0] for c in ONE_EVALUATION]
)
def test_one_evaluation(
    case: str, policy: ScalingPolicySpec, current: int, values: dict[str, float], replicas: int, reason: str
) -> None:
    decision = once(policy, current, values)
    assert (decision.replicas, decision.reason) == (replicas, reason), decision.message


def test_events_say_what_changed_and_why() -> None:
    out = once(spec(target(averageValue=50)), 2, {"load": 250})
    assert [(e.reason, e.type) for e in out.events] == [("ScaledOut", "Normal")]
    assert out.events[0].message.startswith("2 -> 5 replicas: load is 250 for 2 replicas, target 50 each")
    down = once(spec(target(averageValue=50), behavior=windows()), 6, {"load": 100})
    assert [e.reason for e in down.events] == ["ScaledIn"]
    assert once(spec(target(averageValue=50)), 4, {"load": 200}).events == ()


# -- over time: stabilization windows, step limits, `for` ----------------------------------------


def test_scale_up_is_immediate_by_default() -> None:
    run = Run(spec(target(averageValue=50)), 2)
    assert run.over([0, 15], load=100) == [2, 2]
    assert run.step(30, load=400).replicas == 8


def test_scale_down_waits_for_the_default_300s_window() -> None:
    run = Run(spec(target(averageValue=50)), 6)
    run.over([0], load=300)  # 6 recommended at t=0
    low = run.over(every(15, 600), load=100)  # 2 recommended from t=15 on
    assert run.changes() == [(315.0, 2)]  # t=0's recommendation left the window [15, 315]
    assert set(low[: every(15, 600).index(300) + 1]) == {6}
    held = [d for t, d in run.decisions if 15 <= t <= 300]
    assert {d.reason for d in held} == {"ScaleDownStabilized"}
    assert "highest of the last 300s: 6" in held[0].message


def test_scale_down_takes_the_highest_recommendation_of_the_window() -> None:
    run = Run(spec(target(averageValue=50), behavior=windows(down=60)), 8)
    run.step(0, load=400)  # 8
    run.step(15, load=300)  # 6
    run.step(30, load=200)  # 4
    run.over(every(45, 60), load=100)  # 2
    # At t=75 the window [15, 75] holds 6, 4, 2, 2: down to 6; at t=90 to 4; at t=105 to 2.
    assert run.step(75, load=100).replicas == 6
    assert run.step(90, load=100).replicas == 4
    assert run.step(105, load=100).replicas == 2


def test_scale_up_window_takes_the_lowest_recommendation() -> None:
    run = Run(spec(target(averageValue=50), behavior=windows(up=30)), 2)
    run.step(0, load=100)  # 2
    assert run.step(15, load=500).reason == "ScaleUpStabilized"  # window holds 2 and 10: lowest is 2
    assert run.current == 2
    run.step(30, load=500)
    assert run.step(45, load=500).replicas == 10  # [15, 45] holds only 10s


def test_noise_across_the_target_inside_the_window_causes_no_reversal() -> None:
    def run_with(down_window: int) -> Run:
        run = Run(spec(target(averageValue=50), behavior=windows(down=down_window)), 4)
        for i, t in enumerate(every(0, 1800)):
            run.step(t, load=300 if i % 3 == 0 else 150)  # recommends 6, 3, 3, 6, 3, 3, ...
        return run

    # The highest recommendation of any 120 s is 6: up once, never back down.
    assert run_with(120).changes() == [(0.0, 6)]
    # Without a window the same signal flaps on every swing (the baseline the window is for).
    assert len(run_with(0).changes()) > 50


def test_a_target_rule_does_not_undo_a_constraints_scale_out_inside_the_window() -> None:
    policy = spec(
        target(averageValue=50), constraint("queue", above=100, action="ScaleOut", step=4), behavior=windows(down=120)
    )
    run = Run(policy, 2)
    assert run.step(0, load=100, queue=500).replicas == 6
    held = run.step(15, load=100, queue=0)  # the target rule alone wants 2 again
    assert (held.replicas, held.reason) == (6, "ScaleDownStabilized")
    assert run.step(135, load=100, queue=0).replicas == 2


def test_max_step_per_period_counts_what_was_already_added() -> None:
    run = Run(spec(target(averageValue=10), behavior={"scaleUp": {"maxStep": 2, "periodSeconds": 60}}), 2)
    replicas = run.over(every(0, 180), load=100)
    # +2 at t=0; the period (t-60, t] holds that +2 until t=60, and so on.
    assert replicas == [4, 4, 4, 4, 6, 6, 6, 6, 8, 8, 8, 8, 10]
    assert run.decisions[1][1].reason == "ScaleUpLimited"


def test_max_step_down() -> None:
    policy = spec(
        target(averageValue=10), behavior=windows(down=0) | {"scaleDown": {"maxStep": 1, "periodSeconds": 30}}
    )
    run = Run(policy, 8)
    assert run.over(every(0, 90), load=10) == [7, 7, 6, 6, 5, 5, 4]


def test_for_delays_a_target_rule_and_restarts_when_it_stops_holding() -> None:
    run = Run(spec(target(averageValue=50, for_="1m")), 2)
    assert run.over([0, 15, 30, 45], load=200) == [2, 2, 2, 2]
    assert run.decisions[0][1].reason == "ConditionPending"
    run.step(50, load=100)  # back at target: the clock stops
    assert run.over([60, 90, 105], load=200) == [2, 2, 2]
    assert run.step(120, load=200).replicas == 4  # held since t=60


# -- constraints and the size ladder ---------------------------------------------------------------


def test_constraint_adds_its_step_every_time_it_has_held_for_its_duration() -> None:
    run = Run(spec(constraint("cpu", for_="2m", above=0.8, action="ScaleOut", step=2)), 2)
    run.over(every(0, 360), cpu=0.9)
    assert run.changes() == [(120.0, 4), (240.0, 6), (360.0, 8)]
    assert run.decisions[0][1].reason == "ConditionPending"
    assert run.decisions[8][1].reason == "ConstraintHeld"
    assert "cpu is 0.9, above 0.8 for 2m: ScaleOut by 2" in run.decisions[8][1].message


def test_constraint_below_threshold_scales_in_and_never_reverses_a_young_scale_out() -> None:
    policy = spec(
        constraint("hot", above=0.8, action="ScaleOut"),
        constraint("cold", below=0.2, action="ScaleIn", step=2),
        behavior=windows(down=120),
    )
    run = Run(policy, 4)
    assert run.step(0, hot=0.9, cold=0.5).replicas == 5
    blocked = run.step(60, hot=0.1, cold=0.1)
    assert (blocked.replicas, blocked.reason) == (5, "ScaleDownStabilized")
    assert run.step(121, hot=0.1, cold=0.1).replicas == 3


def test_targets_and_constraints_the_largest_wins() -> None:
    policy = spec(target(averageValue=50), constraint("queue", above=100, action="ScaleOut", step=3))
    both = once(policy, 4, {"load": 250, "queue": 500})
    assert (both.replicas, both.reason) == (7, "ConstraintHeld")  # 4 + 3 beats ceil(250 / 50) = 5
    target_wins = once(policy, 4, {"load": 450, "queue": 500})
    assert (target_wins.replicas, target_wins.reason) == (9, "AboveTarget")
    # A scale-in constraint cannot undercut a target rule that wants the current count.
    held = once(
        spec(target(averageValue=50), constraint("idle", below=1, action="ScaleIn")), 4, {"load": 200, "idle": 0}
    )
    assert held.replicas == 4


def test_size_up_one_rung_then_cooldown_then_top_of_the_ladder() -> None:
    policy = spec(
        constraint("latency", above=0.6, action="SizeUp"),
        vertical={"sizes": [SMALL, MEDIUM, LARGE]},
        behavior={"verticalCooldownSeconds": 300},
    )
    run = Run(policy, 3, rung=0)
    up = run.step(0, latency=0.9)
    assert (up.replicas, up.rung, up.reason) == (3, 1, "ConstraintHeld")
    assert [e.reason for e in up.events] == ["SizedUp"]
    cooling = run.step(120, latency=0.9)
    assert (cooling.rung, cooling.reason) == (1, "SizeChangeCooldown")
    assert run.step(300, latency=0.9).rung == 2
    top = run.step(700, latency=0.9)
    assert (top.rung, top.reason, top.events) == (2, "AtLargestSize", ())


def test_size_down_and_the_cooldown_blocks_scale_in_but_not_scale_out() -> None:
    policy = spec(
        target(averageValue=50),
        constraint("latency", below=0.1, action="SizeDown"),
        vertical={"sizes": [SMALL, MEDIUM]},
        behavior=windows(down=0),
    )
    run = Run(policy, 4, rung=1)
    down = run.step(0, load=200, latency=0.05)
    assert (down.rung, [e.reason for e in down.events]) == (0, ["SizedDown"])
    no_in = run.step(30, load=50, latency=0.5)
    assert (no_in.replicas, no_in.reason) == (4, "SizeChangeCooldown")
    assert run.step(60, load=400, latency=0.5).replicas == 8
    assert run.step(301, load=50, latency=0.5).replicas == 1


def test_size_up_and_down_at_once_size_up_wins() -> None:
    policy = spec(
        constraint("slow", above=0.6, action="SizeUp"),
        constraint("idle", below=0.1, action="SizeDown"),
        vertical={"sizes": [SMALL, MEDIUM]},
    )
    assert once(policy, 2, {"slow": 1, "idle": 0}, rung=0).rung == 1


def test_a_ladder_that_shrank_keeps_the_rung_on_it() -> None:
    policy = spec(constraint("slow", above=0.6, action="SizeUp"), vertical={"sizes": [SMALL, MEDIUM]})
    assert once(policy, 2, {"slow": 0}, rung=5).rung == 1
    assert once(policy, 2, {"slow": 0}, rung=None).rung == 0


# -- missing data ----------------------------------------------------------------------------------

PROBLEMS = [
    ("source down", {"load": Reading(None, T0, "MetricUnavailable", "cannot connect")}, "MetricUnavailable"),
    ("bad query", {"load": Reading(None, T0, "QueryInvalid", "the query returned 2 series")}, "QueryInvalid"),
    (
        "another namespace's series",
        {"load": Reading(None, T0, "QueryNotScoped", 'not sent: selector x{namespace="b"} ...')},
        "QueryNotScoped",
    ),
    ("empty result", {"load": Reading(None, T0, "NoData", "the query returned no series")}, "NoData"),
    ("never evaluated", {}, "MetricUnavailable"),
    ("not a finite number", {"load": Reading(float("nan"), T0)}, "NoData"),
]


@pytest.mark.parametrize(("case", "readings", "reason"), PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_no_scaling_without_data(case: str, readings: dict[str, Reading], reason: str) -> None:
    out = decide(spec(target(averageValue=50)), 4, None, readings, history=History(), now=T0)
    assert (out.replicas, out.reason, out.data_problem) == (4, reason, True)
    assert [(e.reason, e.type) for e in out.events] == [(reason, "Warning")]


def test_bounds_apply_even_without_data() -> None:
    # minReplicas/maxReplicas are the user's explicit word, not a metric's: no data needed to obey them.
    down = {"load": Reading(None, T0, "MetricUnavailable", "cannot connect")}
    out = decide(spec(target(averageValue=50), maxReplicas=5), 8, None, down, history=History(), now=T0)
    assert (out.replicas, out.reason) == (5, "TooManyReplicas")


def test_the_most_severe_problem_names_the_reason_and_the_event_is_sent_once() -> None:
    policy = spec(
        target("a", averageValue=50), target("b", averageValue=50), constraint("c", above=1, action="ScaleOut")
    )
    readings = {
        "a": Reading(None, T0, "NoData", "no series"),
        "b": Reading(None, T0, "QueryInvalid", "2 series"),
        "c": ok(0),
    }
    first = decide(policy, 4, None, readings, history=History(), now=T0)
    assert first.reason == "QueryInvalid"
    assert "a: no series" in first.message
    assert "b: 2 series" in first.message
    again = decide(policy, 4, None, readings, history=first.history, now=at(15))
    assert again.events == ()
    healed = decide(policy, 4, None, {"a": ok(200), "b": ok(200), "c": ok(0)}, history=again.history, now=at(30))
    assert healed.history.problem is None
    relapse = decide(policy, 4, None, readings, history=healed.history, now=at(45))
    assert [e.reason for e in relapse.events] == ["QueryInvalid"]


def test_a_query_refused_for_its_namespace_outranks_every_other_problem() -> None:
    policy = spec(target("a", averageValue=50), target("b", averageValue=50))
    readings = {
        "a": Reading(None, T0, "QueryInvalid", "2 series"),
        "b": Reading(None, T0, "QueryNotScoped", "not sent"),
    }
    out = decide(policy, 4, None, readings, history=History(), now=T0)
    assert (out.replicas, out.reason) == (4, "QueryNotScoped")


def test_data_gap_restarts_the_for_clock_of_that_rule_only() -> None:
    policy = spec(
        constraint("a", for_="1m", above=1, action="ScaleOut"), constraint("b", for_="1m", above=1, action="ScaleOut")
    )
    run = Run(policy, 2)
    run.step(0, a=5, b=5)
    gap = decide(policy, 2, None, {"a": Reading(None, at(30), "NoData"), "b": ok(5)}, history=run.history, now=at(30))
    run.history = gap.history
    out = run.step(60, a=5, b=5)
    assert out.replicas == 3  # b held since 0; a restarted at 60
    assert "b is 5, above 1 for 1m: ScaleOut" in out.message
    assert "a is 5, above 1; waiting" in out.message


# -- memory --------------------------------------------------------------------------------------


def test_history_stays_bounded() -> None:
    run = Run(spec(target(averageValue=50), behavior=windows(down=300)), 4)
    for i, t in enumerate(every(0, 86400)):
        run.step(t, load=150 + (i % 7) * 20)
    assert len(run.history.recommendations) <= 300 // 15 + 1
    assert len(run.history.scale_events) <= 300 // 15 + 1


def test_after_a_restart_scale_down_waits_a_full_window_and_scale_up_does_not() -> None:
    policy = spec(target(averageValue=50))
    forgotten = History.after_restart(6, T0)
    held = decide(policy, 6, None, {"load": ok(100)}, history=forgotten, now=at(15))
    assert (held.replicas, held.reason) == (6, "ScaleDownStabilized")
    up = decide(policy, 6, None, {"load": ok(500)}, history=forgotten, now=at(15))
    assert up.replicas == 10


def test_after_a_restart_a_recent_scale_out_still_blocks_a_reversal() -> None:
    policy = spec(constraint("cold", below=0.2, action="ScaleIn"), behavior=windows(down=120))
    forgotten = History.after_restart(5, at(60), last_scale=(at(0), 1))
    out = decide(policy, 5, None, {"cold": ok(0.1)}, history=forgotten, now=at(60))
    assert (out.replicas, out.reason) == (5, "ScaleDownStabilized")


# -- around the decision ---------------------------------------------------------------------------


def group(**fields: Any) -> NodeGroup:
    doc = {
        "name": "web",
        "replicas": 3,
        "imageRef": "ubuntu",
        "size": SMALL,
        "placement": {"targets": [{"credential": "aws"}]},
    }
    return NodeGroup.model_validate(doc | fields)


def policy_object(
    name: str = "shop-web", created: int = 0, status: dict[str, Any] | None = None, **fields: Any
) -> ScalingPolicy:
    doc: dict[str, Any] = {
        "metadata": {"name": name, "creationTimestamp": at(created).isoformat()},
        "spec": {
            "target": {"deployment": "shop", "group": "web"},
            "maxReplicas": 10,
            "vertical": {"sizes": [SMALL, MEDIUM]},
        }
        | fields,
    }
    if status is not None:
        doc["status"] = status
    return ScalingPolicy.model_validate(doc)


EFFECTIVE = [
    ("no policy: as written", None, 3, SMALL, None),
    ("policy not evaluated yet: as written", policy_object(), 3, SMALL, None),
    ("policy decided replicas", policy_object(status={"desiredReplicas": 6}), 6, SMALL, "shop-web"),
    ("and a rung", policy_object(status={"desiredReplicas": 6, "rung": 1}), 6, MEDIUM, "shop-web"),
    (
        "a rung beyond a shortened ladder",
        policy_object(status={"desiredReplicas": 2, "rung": 4}),
        2,
        MEDIUM,
        "shop-web",
    ),
    (
        "maxReplicas lowered since the decision",
        policy_object(status={"desiredReplicas": 9}, maxReplicas=5),
        5,
        SMALL,
        "shop-web",
    ),
    ("minReplicas raised since", policy_object(status={"desiredReplicas": 1}, minReplicas=2), 2, SMALL, "shop-web"),
    (
        "no ladder keeps the group's size",
        policy_object(status={"desiredReplicas": 4, "rung": 1}, vertical=None),
        4,
        SMALL,
        "shop-web",
    ),
    ("scaled to zero", policy_object(status={"desiredReplicas": 0}, minReplicas=0), 0, SMALL, "shop-web"),
]


@pytest.mark.parametrize(("case", "policy", "replicas", "size", "by"), EFFECTIVE, ids=[c[0] for c in EFFECTIVE])
def test_effective_group(
    case: str, policy: ScalingPolicy | None, replicas: int, size: dict[str, int], by: str | None
) -> None:
    written = group()
    effective = effective_group(written, policy)
    assert effective.group.replicas == replicas
    assert effective.group.size == Size.model_validate(size)
    assert effective.governed_by == by
    assert effective.group.placement == written.placement
    assert written.replicas == 3  # the Deployment's spec object is never changed


def test_the_oldest_policy_governs_and_the_others_are_in_conflict() -> None:
    first = policy_object("b-first", created=0)
    second = policy_object("a-second", created=10)
    tie = policy_object("a-tie", created=0)
    other = policy_object("db", created=-10, target={"deployment": "shop", "group": "db"})
    assert governing_policy([second, other, first], "shop", "web") is first
    assert governing_policy([first, tie], "shop", "web") is tie
    assert governing_policy([other], "shop", "web") is None
    leaving = policy_object("b-first", created=0)
    leaving.metadata.deletion_timestamp = at(20)
    assert governing_policy([leaving, second], "shop", "web") is second


def test_effective_deployment_applies_the_governing_policy_per_group_and_names_it_in_status() -> None:
    written = Deployment.model_validate(
        {
            "metadata": {"name": "shop"},
            "spec": {"nodeGroups": [group(name="db", replicas=1).to_api(), group().to_api()]},
        }
    )
    governing = policy_object("shop-web", created=0, status={"desiredReplicas": 7, "rung": 1})
    conflicting = policy_object("later", created=5, status={"desiredReplicas": 1})
    effective, governed = effective_deployment(written, [conflicting, governing])
    assert [(g.name, g.replicas, g.size) for g in effective.spec.node_groups] == [
        ("db", 1, Size.model_validate(SMALL)),
        ("web", 7, Size.model_validate(MEDIUM)),
    ]
    assert written.spec.node_groups[1].replicas == 3  # what Git wrote is untouched
    assert set(governed) == {"web"}
    status = governed_status(
        DeploymentStatus(groups=[GroupStatus(name="db", replicas=1), GroupStatus(name="web", replicas=5)]), governed
    )
    assert [(g.name, g.desired_replicas, g.scaling_policy) for g in status.groups or []] == [
        ("db", None, None),
        ("web", 7, "shop-web"),
    ]
    # Without any policy the Deployment and its status are exactly what they were.
    same, none = effective_deployment(written, [])
    assert same is written
    assert none == {}


def test_rule_statuses_keep_an_unchanged_value_and_its_time() -> None:
    rules = spec(target("load", averageValue=10), target("cpu", value=0.5)).metrics or []
    first = rule_statuses(rules, {"load": ok(123.456789, at(0)), "cpu": ok(0.5, at(0))}, None)
    assert first == [
        RuleStatus(name="load", value=123.5, timestamp=at(0)),
        RuleStatus(name="cpu", value=0.5, timestamp=at(0)),
    ]
    again = rule_statuses(rules, {"load": ok(123.4501, at(15)), "cpu": ok(0.6, at(15))}, first)
    assert again == [
        RuleStatus(name="load", value=123.5, timestamp=at(0)),  # same to 4 digits: no write
        RuleStatus(name="cpu", value=0.6, timestamp=at(15)),
    ]
    down = rule_statuses(
        rules, {"load": Reading(None, at(30), "MetricUnavailable", "cannot connect"), "cpu": ok(0.6, at(30))}, again
    )
    assert down is not None
    assert down[0] == RuleStatus(name="load", value=None, timestamp=at(30), reason="MetricUnavailable")
    assert rule_statuses([], {}, None) is None


def test_initial_rung_is_the_groups_own_size_when_the_ladder_has_it() -> None:
    policy = spec(vertical={"sizes": [SMALL, MEDIUM, LARGE]})
    assert initial_rung(policy, Size.model_validate(MEDIUM)) == 1
    assert initial_rung(policy, Size.model_validate({"cpu": 3, "memoryMiB": 2048})) == 0
    assert initial_rung(spec(), Size.model_validate(MEDIUM)) is None


def test_selector_and_size_summary() -> None:
    assert selector("shop", "web") == "skyfleet.io/deployment=shop,skyfleet.io/group=web"
    assert describe_size(Size.model_validate(MEDIUM)) == "2cpu/4096MiB"
    assert describe_size(Size.model_validate({"cpu": 2, "memoryMiB": 4096, "diskGiB": 40})) == "2cpu/4096MiB/40GiB"
    assert describe_size(Size.model_validate({"instanceTypes": {"ec2": "t3.medium", "gce": "e2-medium"}})) == (
        "ec2:t3.medium,gce:e2-medium"
    )


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("90s", 90), ("2m", 120), ("1h30m", 5400), ("1h0m5s", 3605)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
