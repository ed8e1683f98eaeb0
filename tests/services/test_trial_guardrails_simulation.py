"""The guardrails over many simulated trials: the real decision function (`decide`), the real
looks schedule (`look_number`) and the real windows (`CANDIDATE_WINDOW`, `INCUMBENT_WINDOW`).

A simulated trial is 300 users dealt to the arms (each on the candidate with probability
`share`, as the hash deals them), some much busier than others, each with their own error
rate (one in ten fails five times as often), latency and cost, or all alike (`Users(alike)`);
calls fail, take log-normal latencies (~1.1 s, sigma 0.5) and cost log-normal amounts per turn
(sigma 0.8, skewed as token counts are). At every look the window the bot would read (the
calls up to the candidate's k * min-th) goes through `decide`.

- A/A (candidate = incumbent), a whole trial of ten looks (1,000 candidate calls at min=100):
  the false-stop rate is under 2 % with room to spare: its upper 99.9 % bound is (seeded runs).
  With users unlike each other a test over calls would fail this (7-22 %, decision 0017): the
  busy users of one arm are not chance per call.
- A candidate failing 10 % of calls against 1 %: the share of trials stopped by 100, 200 and
  300 candidate calls (the power, in decision 0017), above floors well below the measured power.
- A slower and a costlier candidate are stopped by their own guardrail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from bot.observatory.stats import wilson
from bot.trials.guardrails import ArmData, Guardrail, decide, look_number
from bot.trials.window import CANDIDATE_WINDOW, INCUMBENT_WINDOW

MIN_CALLS = 100
LOOKS = 10
# One-sided 99.9 %: a true rate at the bound is seen above it once in a thousand simulations.
Z999 = 3.09


@dataclass(frozen=True, slots=True)
class Arms:
    error_rate: float = 0.01
    latency_factor: float = 1.0
    cost_factor: float = 1.0


@dataclass(frozen=True, slots=True)
class Users:
    """Who sends the calls: `count` users, some much busier than others (log-normal weights),
    each with their own error rate, latency and cost (`alike=False`), dealt to the arms."""

    count: int = 300
    alike: bool = False


def _arm(user: np.ndarray, failed: np.ndarray, latency: np.ndarray, cost: np.ndarray) -> ArmData:
    # Each call its own turn; a failed call costs nothing (no usage is reported).
    spent = np.where(failed, 0.0, cost)
    _, index = np.unique(user, return_inverse=True)
    groups = int(index.max()) + 1 if len(index) else 0
    ok = ~failed

    def per_user(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(index, weights=weights, minlength=groups)

    order = np.argsort(latency[ok], kind="stable")
    return ArmData(
        calls=len(failed),
        errors=int(failed.sum()),
        latencies=tuple(latency[ok][order].tolist()),
        turns=len(failed),
        cost_sum=float(spent.sum()),
        cost_squares=float((spent * spent).sum()),
        user_calls=tuple(np.bincount(index, minlength=groups).tolist()),
        user_errors=tuple(
            np.bincount(index, weights=failed, minlength=groups).astype(int).tolist()
        ),
        user_answered=tuple(np.bincount(index, weights=ok, minlength=groups).astype(int).tolist()),
        latency_users=tuple(index[ok][order].tolist()),
        user_turns=tuple(np.bincount(index, minlength=groups).tolist()),
        user_cost=tuple(np.bincount(index, weights=spent, minlength=groups).tolist()),
    )


def simulate(
    rng: np.random.Generator,
    share: float,
    candidate: Arms,
    *,
    looks: int = LOOKS,
    users: Users = Users(),
) -> tuple[int, list[Guardrail]] | None:
    """The look that stopped the trial and the guardrails it failed, or None (never stopped)."""
    weight = rng.lognormal(0.0, 1.0, users.count)
    on_candidate_user = rng.random(users.count) < share
    if on_candidate_user.all() or not on_candidate_user.any():
        return None
    if users.alike:
        user_error = np.full(users.count, 0.01)
        user_latency = user_cost = np.ones(users.count)
    else:
        # One user in ten fails five times as often (long messages, say); the rest less.
        user_error = np.where(rng.random(users.count) < 0.1, 0.05, 0.0056)
        user_latency = rng.lognormal(0.0, 0.3, users.count)
        user_cost = rng.lognormal(0.0, 0.5, users.count)
    needed = looks * MIN_CALLS
    p = weight / weight.sum()
    size = int(needed / p[on_candidate_user].sum() * 1.3) + 200
    who = rng.choice(users.count, size, p=p)
    while on_candidate_user[who].sum() < needed:
        who = np.concatenate([who, rng.choice(users.count, size, p=p)])
    on_candidate = on_candidate_user[who]
    candidate_at = np.flatnonzero(on_candidate)[:needed]
    n = int(candidate_at[-1]) + 1
    who, on_candidate = who[:n], on_candidate[:n]
    incumbent_at = np.flatnonzero(~on_candidate)
    extra = np.where(on_candidate, candidate.error_rate - 0.01, 0.0)
    failed = rng.random(n) < np.clip(user_error[who] + extra, 0.0, 1.0)
    latency = (
        rng.lognormal(7.0, 0.5, n)
        * user_latency[who]
        * np.where(on_candidate, candidate.latency_factor, 1.0)
    )
    cost = (
        rng.lognormal(math.log(5e-4), 0.8, n)
        * user_cost[who]
        * np.where(on_candidate, candidate.cost_factor, 1.0)
    )
    # The looks the bot makes: wherever the candidate's call count reaches a new look number.
    numbers = [look_number(count, MIN_CALLS) for count in range(needed + 1)]
    for count in range(1, needed + 1):
        look = numbers[count]
        if look == numbers[count - 1]:
            continue
        cutoff = candidate_at[count - 1]
        window = candidate_at[max(0, count - CANDIDATE_WINDOW) : count]
        since = window[0] if count >= CANDIDATE_WINDOW else -1
        before = incumbent_at[(incumbent_at <= cutoff) & (incumbent_at >= since)]
        others = before[-INCUMBENT_WINDOW:]
        breaches = decide(
            look,
            _arm(who[window], failed[window], latency[window], cost[window]),
            _arm(who[others], failed[others], latency[others], cost[others]),
        )
        if breaches:
            return look, [breach.guardrail for breach in breaches]
    return None


def _stops(
    share: float,
    candidate: Arms,
    runs: int,
    seed: int,
    looks: int = LOOKS,
    users: Users = Users(),
) -> list[int]:
    rng = np.random.default_rng(seed)
    outcomes = [simulate(rng, share, candidate, looks=looks, users=users) for _ in range(runs)]
    return [outcome[0] for outcome in outcomes if outcome is not None]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("share", "alike", "runs"), [(0.10, False, 1500), (0.50, False, 1500), (0.10, True, 1500)]
)
def test_an_aa_trial_stops_falsely_in_under_2_percent_of_runs(
    share: float, alike: bool, runs: int
) -> None:
    stops = _stops(share, Arms(), runs, seed=15, users=Users(alike=alike))
    rate = len(stops) / runs
    _, upper = wilson(len(stops), runs, z=Z999)
    print(
        f"A/A share {share:.0%} alike={alike}: {len(stops)}/{runs} stopped "
        f"({rate:.2%}, 99.9% <= {upper:.2%})"
    )
    assert upper < 0.02


@pytest.mark.slow
@pytest.mark.parametrize(
    ("share", "floors"),
    # Stopped by 100, 200, 300 candidate calls. Measured over 1,000 runs (decision 0017):
    # 10 % 0.48 / 0.85 / 0.96, 25 % 0.48 / 0.90 / 0.99, 50 % 0.40 / 0.82 / 0.96 (users unlike).
    [(0.10, (0.35, 0.75, 0.90)), (0.25, (0.30, 0.70, 0.85)), (0.50, (0.25, 0.70, 0.85))],
)
def test_a_candidate_failing_10_percent_against_1_is_stopped_soon(
    share: float, floors: tuple[float, float, float]
) -> None:
    runs = 300
    stops = _stops(share, Arms(error_rate=0.10), runs, seed=16, looks=3)
    power = [sum(1 for look in stops if look <= k) / runs for k in (1, 2, 3)]
    print(f"power 10% vs 1%, share {share:.0%}, by 100/200/300 calls: {power}")
    for got, floor in zip(power, floors, strict=True):
        assert got >= floor


@pytest.mark.slow
@pytest.mark.parametrize(
    ("candidate", "guardrail"),
    [(Arms(latency_factor=1.5), "p95 latency"), (Arms(cost_factor=1.5), "cost per turn")],
)
def test_a_slower_or_costlier_candidate_is_stopped_by_its_guardrail(
    candidate: Arms, guardrail: Guardrail
) -> None:
    rng = np.random.default_rng(17)
    # Users alike: per-user latency and cost spread (unlike users) hide a 1.5x change far
    # longer (decision 0017: 24 % / 14 % by 300 calls at share 10 %).
    alike = Users(alike=True)
    outcomes = [simulate(rng, 0.10, candidate, looks=3, users=alike) for _ in range(100)]
    stopped = [outcome for outcome in outcomes if outcome is not None]
    # Measured 0.99 (latency) and 1.00 (cost) by 300 calls, 0.64 / 0.79 at the first look.
    assert len(stopped) >= 90
    assert all(guardrail in failed for _, failed in stopped)
