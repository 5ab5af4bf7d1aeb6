"""Benchmark: stability of the scaling decision on a seeded noisy load trace.

A 10,000-sample load trace (one sample per evaluation period, default 15 s, so about 42 hours) is
replayed through ``skyfleet.reconcile.scaling.decide``. The trace is a daily wave with random
plateaus (load steps that last minutes to an hour), Gaussian noise of 15% and rare one-sample
spikes of 2x. Replicas follow each decision at once, so only the decision is measured.

Variants, each on the same trace:

* policy      - a target rule (averageValue 50 per replica, 10% tolerance) with HPA's default
                behaviour: 0 s scale-up window, 300 s scale-down window
* naive       - the same rule with both windows at 0 s (HPA's formula without stabilization)
* constraints - SlipStream-style rules on utilisation (above 0.8 for 60 s: +2; below 0.4 for
                120 s: -1), default windows
* oracle      - ceil(noiseless load / 50) every sample: the smallest fleet that is never over
                target, knowing the true load (a lower bound on cost, not a policy)

Reported per variant: scalings, direction reversals inside the stabilization window (a scale-in
less than 300 s after a scale-out, or a scale-out less than 0 s after a scale-in: the default
windows, applied to every variant alike; the goal is 0), reversals within 300 s in either direction, the share of time
the true per-replica load is above the target (and above target + tolerance), the mean replicas
(cost), and the decision's cost in microseconds.

Run:  .venv/bin/python bench/scaling.py [--samples 10000] [--period 15] [--seed 7]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from skyfleet.api.scalingpolicy import ScalingPolicySpec
from skyfleet.reconcile.scaling import History, Reading, decide

TARGET = 50.0  # requests per second per replica
TOLERANCE = 0.1
CAPACITY = 62.5  # requests per second one replica serves at utilisation 1.0 (target = 80%)
MIN_REPLICAS, MAX_REPLICAS = 1, 60
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Reversals are counted against HPA's default windows, the policy's, for every variant alike.
UP_WINDOW, DOWN_WINDOW = 0.0, 300.0


def trace(samples: int, period: float, seed: int) -> tuple[list[float], list[float]]:
    """(true load, observed load) per sample; observed is what Prometheus would report."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible trace, not a secret
    true: list[float] = []
    observed: list[float] = []
    plateau, plateau_left = 0.0, 0
    for i in range(samples):
        t = i * period
        if plateau_left <= 0:
            plateau = rng.choice([0.0, 0.0, 150.0, -150.0, 400.0])
            plateau_left = rng.randint(int(300 / period), int(3600 / period))
        plateau_left -= 1
        base = max(20.0, 600 + 450 * math.sin(2 * math.pi * t / 86400) + plateau)
        noisy = base * (1 + rng.gauss(0, 0.15))
        if rng.random() < 0.01:
            noisy *= 2
        true.append(base)
        observed.append(max(0.0, noisy))
    return true, observed


def policy(variant: str) -> ScalingPolicySpec:
    doc: dict[str, Any] = {
        "target": {"deployment": "bench", "group": "web"},
        "minReplicas": MIN_REPLICAS,
        "maxReplicas": MAX_REPLICAS,
    }
    if variant in ("policy", "naive"):
        doc["metrics"] = [{"name": "rps", "query": "sum(rate(x[1m]))", "target": {"averageValue": TARGET}}]
    if variant == "naive":
        doc["behavior"] = {"scaleUp": {"stabilizationWindowSeconds": 0}, "scaleDown": {"stabilizationWindowSeconds": 0}}
    if variant == "constraints":
        doc["metrics"] = [
            {"name": "hot", "query": "u", "for": "60s", "constraint": {"above": 0.8, "action": "ScaleOut", "step": 2}},
            {"name": "cold", "query": "u", "for": "120s", "constraint": {"below": 0.4, "action": "ScaleIn"}},
        ]
    return ScalingPolicySpec.model_validate(doc)


@dataclass
class Outcome:
    variant: str
    replicas: list[int]
    scalings: int
    reversals_in_window: int
    reversals_300s: int
    above_target: float
    above_tolerance: float
    mean_replicas: float
    micros_per_decision: float


def replay(variant: str, true: list[float], observed: list[float], period: float) -> Outcome:
    spec = policy(variant)
    current, history = 1, History()
    replicas: list[int] = []
    spent = 0.0
    for i, value in enumerate(observed):
        now = T0 + timedelta(seconds=i * period)
        if variant == "constraints":
            readings = {name: Reading(value / (current * CAPACITY), now) for name in ("hot", "cold")}
        else:
            readings = {"rps": Reading(value, now)}
        started = time.perf_counter()
        decision = decide(spec, current, None, readings, history=history, now=now)
        spent += time.perf_counter() - started
        current, history = decision.replicas, decision.history
        replicas.append(current)
    return summarize(variant, replicas, true, period, spent)


def oracle(true: list[float], period: float) -> Outcome:
    replicas = [min(max(math.ceil(load / TARGET), MIN_REPLICAS), MAX_REPLICAS) for load in true]
    return summarize("oracle", replicas, true, period, 0.0)


def summarize(variant: str, replicas: list[int], true: list[float], period: float, spent: float) -> Outcome:
    scalings: list[tuple[float, int]] = []  # (time, direction)
    previous = 1
    for i, r in enumerate(replicas):
        if r != previous:
            scalings.append((i * period, 1 if r > previous else -1))
        previous = r
    in_window = within_300 = 0
    for (t_prev, d_prev), (t, d) in itertools.pairwise(scalings):
        if d == d_prev:
            continue
        window = DOWN_WINDOW if d < 0 else UP_WINDOW
        in_window += t - t_prev < window
        within_300 += t - t_prev < 300
    per_replica = [load / r for load, r in zip(true, replicas, strict=True)]
    return Outcome(
        variant=variant,
        replicas=replicas,
        scalings=len(scalings),
        reversals_in_window=in_window,
        reversals_300s=within_300,
        above_target=sum(p > TARGET for p in per_replica) / len(per_replica),
        above_tolerance=sum(p > TARGET * (1 + TOLERANCE) for p in per_replica) / len(per_replica),
        mean_replicas=sum(replicas) / len(replicas),
        micros_per_decision=spent / len(replicas) * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--period", type=float, default=15.0, help="seconds between evaluations")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    true, observed = trace(args.samples, args.period, args.seed)
    outcomes = [replay(v, true, observed, args.period) for v in ("policy", "naive", "constraints")]
    outcomes.append(oracle(true, args.period))
    hours = args.samples * args.period / 3600
    print(f"{args.samples} samples every {args.period:g} s ({hours:.1f} h), seed {args.seed}")
    print()
    print(
        "| variant | scalings | reversals in window | reversals < 300 s | time above target | "
        "above target + 10% | mean replicas | µs per decision |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        cost = f"{o.micros_per_decision:.0f}" if o.micros_per_decision else ""
        print(
            f"| {o.variant} | {o.scalings} | {o.reversals_in_window} | {o.reversals_300s} | "
            f"{o.above_target:.1%} | {o.above_tolerance:.1%} | {o.mean_replicas:.2f} | {cost} |"
        )


if __name__ == "__main__":
    main()
