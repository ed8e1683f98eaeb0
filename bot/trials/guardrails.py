"""The guardrails: is the candidate worse than the incumbent beyond chance, at this look?

    look = look_number(candidate_calls, min_calls)   # look k once the candidate has k * min calls
    for breach in decide(look, candidate, incumbent):  # `ArmData` of each arm's window
        stop the trial, tell the admins breach.guardrail and the figures

Three one-sided tests, each at `look_alpha(look)`:

- **error rate**: the candidate's errors among both arms' errors, given the arms' calls, is
  hypergeometric when the arms fail alike (Fisher's exact test): exact at 1 % error rates and
  a hundred calls, where a normal approximation is not.
- **p95 latency**: the answered calls' latencies of both arms are pooled and cut at the pool's
  95th percentile; the candidate's share of the calls above the cut is again hypergeometric
  when the arms are alike (a quantile test, Mood's median test moved to the 95th percentile).
  Exact under the null without any model of the latency distribution, and it tests the p95
  itself rather than the mean.
- **cost per turn**: each arm's turns' costs (the calls of the trial's agent in one turn,
  summed; turns with an unpriced answer left out), Welch's z on the means. Per-turn means of a
  hundred turns and more are close to normal; the A/A simulation measures what the skew of
  real costs leaves over (tests/services/test_trial_guardrails_simulation.py).

Looking often: the test runs again at every look (every `min` candidate calls), so its error
adds up over the looks. Look k spends `GUARDRAIL_ALPHA / (k (k + 1))`, which sums to
`GUARDRAIL_ALPHA` over all looks however long the trial runs (Bonferroni over a countable
schedule: no horizon, no independence needed). The three guardrails share `FAMILY_ALPHA` the
same way (a third each), so an A/A trial stops falsely at most 1.5 % of the time, whatever
its length. Decision 0017 has the choice and the measured figures.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bot.storage.ledger_models import TrialCall
from bot.trials.stats import hypergeom_tail, mean_and_variance, normal_tail

Guardrail = Literal["error rate", "p95 latency", "cost per turn"]
GUARDRAILS: tuple[Guardrail, ...] = ("error rate", "p95 latency", "cost per turn")

# Over a whole trial, all three guardrails and every look together (A/A: candidate = incumbent).
FAMILY_ALPHA = 0.015
GUARDRAIL_ALPHA = FAMILY_ALPHA / len(GUARDRAILS)
# The quantile the latency guardrail watches.
LATENCY_QUANTILE = 0.95
# Below these the arm has too little for a test of latency or cost: that guardrail waits.
MIN_LATENCIES = 20
MIN_TURNS = 10


def look_number(candidate_calls: int, min_calls: int) -> int:
    """Which look the candidate's calls have reached: 0 before `min_calls`, k at k * min_calls."""
    return candidate_calls // min_calls if min_calls > 0 else 0


def look_alpha(look: int) -> float:
    """The one-sided level of one guardrail at look `look` (1, 2, ...): sums to GUARDRAIL_ALPHA."""
    return GUARDRAIL_ALPHA / (look * (look + 1))


@dataclass(frozen=True, slots=True)
class ArmData:
    """One arm's window, as the tests need it: calls and errors, the answered calls' latencies
    (sorted), and its turns' costs as count, sum and sum of squares."""

    calls: int
    errors: int
    latencies: tuple[float, ...]
    turns: int
    cost_sum: float
    cost_squares: float

    @classmethod
    def of(cls, calls: Iterable[TrialCall]) -> ArmData:
        count = errors = 0
        latencies: list[float] = []
        turn_cost: dict[int, float] = {}
        unpriced: set[int] = set()
        for call in calls:
            count += 1
            ok = call.outcome == "ok"
            if ok:
                latencies.append(call.latency_ms)
            else:
                errors += 1
            if call.turn_id is None:
                continue
            if ok and call.cost_usd is None:
                unpriced.add(call.turn_id)  # its cost is not known: the turn is left out
            turn_cost[call.turn_id] = turn_cost.get(call.turn_id, 0.0) + (call.cost_usd or 0.0)
        costs = [cost for turn, cost in turn_cost.items() if turn not in unpriced]
        return cls(
            calls=count,
            errors=errors,
            latencies=tuple(sorted(latencies)),
            turns=len(costs),
            cost_sum=math.fsum(costs),
            cost_squares=math.fsum(cost * cost for cost in costs),
        )

    @property
    def cost_per_turn(self) -> float | None:
        return self.cost_sum / self.turns if self.turns else None


@dataclass(frozen=True, slots=True)
class Breach:
    """A guardrail the candidate failed at a look: its p-value under the level of that look."""

    guardrail: Guardrail
    p_value: float
    alpha: float
    look: int


def nearest_rank(ordered: tuple[float, ...] | list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def error_p(candidate: ArmData, incumbent: ArmData) -> float | None:
    """One-sided p that the candidate fails more often (Fisher's exact)."""
    if not candidate.calls or not incumbent.calls:
        return None
    return hypergeom_tail(
        candidate.errors,
        total=candidate.calls + incumbent.calls,
        marked=candidate.errors + incumbent.errors,
        drawn=candidate.calls,
    )


def latency_cut(candidate: ArmData, incumbent: ArmData) -> float | None:
    """The pooled p95 both arms are measured against."""
    if len(candidate.latencies) < MIN_LATENCIES or len(incumbent.latencies) < MIN_LATENCIES:
        return None
    # Both are sorted: the sort of their concatenation is a merge of two runs.
    return nearest_rank(sorted(candidate.latencies + incumbent.latencies), LATENCY_QUANTILE)


def above(ordered: tuple[float, ...], cut: float) -> int:
    return len(ordered) - bisect.bisect_right(ordered, cut)


def latency_p(candidate: ArmData, incumbent: ArmData) -> float | None:
    """One-sided p that more of the candidate's calls are slower than the pooled p95."""
    cut = latency_cut(candidate, incumbent)
    if cut is None:
        return None
    slow_candidate, slow_incumbent = (
        above(candidate.latencies, cut),
        above(incumbent.latencies, cut),
    )
    return hypergeom_tail(
        slow_candidate,
        total=len(candidate.latencies) + len(incumbent.latencies),
        marked=slow_candidate + slow_incumbent,
        drawn=len(candidate.latencies),
    )


def cost_p(candidate: ArmData, incumbent: ArmData) -> float | None:
    """One-sided p that the candidate's turns cost more on average (Welch's z)."""
    if candidate.turns < MIN_TURNS or incumbent.turns < MIN_TURNS:
        return None
    mean_c, var_c = mean_and_variance(candidate.turns, candidate.cost_sum, candidate.cost_squares)
    mean_i, var_i = mean_and_variance(incumbent.turns, incumbent.cost_sum, incumbent.cost_squares)
    se = math.sqrt(var_c / candidate.turns + var_i / incumbent.turns)
    if se == 0:
        return 0.0 if mean_c > mean_i else 1.0
    return normal_tail((mean_c - mean_i) / se)


def p_values(candidate: ArmData, incumbent: ArmData) -> dict[Guardrail, float | None]:
    return {
        "error rate": error_p(candidate, incumbent),
        "p95 latency": latency_p(candidate, incumbent),
        "cost per turn": cost_p(candidate, incumbent),
    }


def decide(look: int, candidate: ArmData, incumbent: ArmData) -> list[Breach]:
    """The guardrails the candidate fails at `look` (none: the trial goes on)."""
    if look < 1:
        return []
    alpha = look_alpha(look)
    return [
        Breach(guardrail, p, alpha, look)
        for guardrail, p in p_values(candidate, incumbent).items()
        if p is not None and p <= alpha
    ]
