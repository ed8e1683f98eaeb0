"""The guardrails over many simulated trials: the real decision function (`decide`), the real
looks schedule (`look_number`) and the real windows (`CANDIDATE_WINDOW`, `INCUMBENT_WINDOW`).

A simulated trial is a stream of calls, each on the candidate with probability `share`, each
failing with its arm's error rate, with log-normal latencies (~1.1 s, sigma 0.5) and log-normal
costs per turn (sigma 0.8, skewed as token counts are). At every look the window the bot would
read (the calls up to the candidate's k * min-th) goes through `decide`.

- A/A (candidate = incumbent), a whole trial of ten looks (1,000 candidate calls at min=100):
  the false-stop rate is under 2 % with room to spare: its upper 99.9 % bound is (seeded runs).
- A candidate failing 10 % of calls against 1 %: the share of trials stopped by 100, 200 and
  300 candidate calls (the power, in decision 0017), above floors far below the measured power.
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


def _arm(failed: np.ndarray, latency: np.ndarray, cost: np.ndarray) -> ArmData:
    # Each call its own turn; a failed call costs nothing (no usage is reported).
    spent = np.where(failed, 0.0, cost)
    return ArmData(
        calls=len(failed),
        errors=int(failed.sum()),
        latencies=tuple(np.sort(latency[~failed]).tolist()),
        turns=len(failed),
        cost_sum=float(spent.sum()),
        cost_squares=float((spent * spent).sum()),
    )


def simulate(
    rng: np.random.Generator, share: float, candidate: Arms, *, looks: int = LOOKS
) -> tuple[int, list[Guardrail]] | None:
    """The look that stopped the trial and the guardrails it failed, or None (never stopped)."""
    needed = looks * MIN_CALLS
    size = int(needed / share * 1.3) + 200
    on_candidate = rng.random(size) < share
    while on_candidate.sum() < needed:
        on_candidate = np.concatenate([on_candidate, rng.random(size) < share])
    candidate_at = np.flatnonzero(on_candidate)[:needed]
    n = int(candidate_at[-1]) + 1
    on_candidate = on_candidate[:n]
    incumbent_at = np.flatnonzero(~on_candidate)
    failed = rng.random(n) < np.where(on_candidate, candidate.error_rate, 0.01)
    latency = rng.lognormal(7.0, 0.5, n) * np.where(on_candidate, candidate.latency_factor, 1.0)
    cost = rng.lognormal(math.log(5e-4), 0.8, n) * np.where(on_candidate, candidate.cost_factor, 1)
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
            _arm(failed[window], latency[window], cost[window]),
            _arm(failed[others], latency[others], cost[others]),
        )
        if breaches:
            return look, [breach.guardrail for breach in breaches]
    return None


def _stops(share: float, candidate: Arms, runs: int, seed: int, looks: int = LOOKS) -> list[int]:
    rng = np.random.default_rng(seed)
    outcomes = [simulate(rng, share, candidate, looks=looks) for _ in range(runs)]
    return [outcome[0] for outcome in outcomes if outcome is not None]


@pytest.mark.slow
@pytest.mark.parametrize(("share", "runs"), [(0.10, 2000), (0.50, 2000)])
def test_an_aa_trial_stops_falsely_in_under_2_percent_of_runs(share: float, runs: int) -> None:
    stops = _stops(share, Arms(), runs, seed=15)
    rate = len(stops) / runs
    _, upper = wilson(len(stops), runs, z=Z999)
    print(f"A/A share {share:.0%}: {len(stops)}/{runs} stopped ({rate:.2%}, 99.9% <= {upper:.2%})")
    assert upper < 0.02
    # Not a guardrail that never fires: some A/A trials do stop, at the rate its levels allow.
    assert len(stops) > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("share", "floors"),
    # Stopped by 100, 200, 300 candidate calls. Measured over 2,000 runs (decision 0017):
    # 10 % 0.91 / 1.00 / 1.00, 25 % 0.81 / 0.99 / 1.00, 50 % 0.41 / 0.83 / 0.98.
    [(0.10, (0.80, 0.95, 0.95)), (0.25, (0.65, 0.90, 0.95)), (0.50, (0.25, 0.70, 0.90))],
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
    outcomes = [simulate(rng, 0.10, candidate, looks=3) for _ in range(100)]
    stopped = [outcome for outcome in outcomes if outcome is not None]
    # Measured 100 % by 300 calls, 89-94 % at the first look.
    assert len(stopped) >= 95
    assert all(guardrail in failed for _, failed in stopped)
