"""The guardrails: is the candidate worse than the incumbent beyond chance, at this look?

    look = look_number(candidate_calls, min_calls)   # look k once the candidate has k * min calls
    for breach in decide(look, candidate, incumbent):  # `ArmData` of each arm's window
        stop the trial, tell the admins breach.guardrail and the figures

Three one-sided tests, each at `look_alpha(look)`. Arms are dealt per user, and one user's
calls are alike (their long messages fail more, their answers are longer): a busy user on the
candidate's arm is not chance per call. So each guardrail is a ratio over the arm's users
(errors per call, slow calls per answered call, cost per turn), compared with a cluster-robust
standard error (each user one unit) against Student's t with the smaller arm's users - 1
degrees of freedom. Without it, an A/A simulation with 300 unlike users stopped 7-22 % of
trials falsely (decision 0017). Where an exact test over calls exists it must agree too, since
the per-user z is a normal approximation and 1 % error rates over 100 calls are small counts:

- **error rate**: Fisher's exact test (the candidate's errors among both arms' errors, given
  the arms' calls, is hypergeometric when the arms fail alike).
- **p95 latency**: the answered calls' latencies of both arms are pooled and cut at the pool's
  95th percentile; the share of calls above the cut is the figure (per user), and the
  candidate's count above the cut is again hypergeometric when the arms are alike (a quantile
  test, Mood's median test moved to the 95th percentile): no model of latencies, and it tests
  the tail itself rather than the mean.
- **cost per turn**: each user's turns' costs (the calls of the trial's agent in one turn,
  summed; turns with an unpriced answer left out) over their turns; the per-user test alone.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.storage.ledger_models import TrialCall
from bot.trials.stats import hypergeom_tail, normal_quantile, normal_tail, t_critical

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
    (sorted), its turns' costs as count, sum and sum of squares; and the same per user (users
    numbered 0..n-1 within the arm; `latency_users[i]` is whose `latencies[i]` is), since arms
    are dealt per user and one user's calls are alike."""

    calls: int
    errors: int
    latencies: tuple[float, ...]
    turns: int
    cost_sum: float
    cost_squares: float
    user_calls: tuple[int, ...] = ()
    user_errors: tuple[int, ...] = ()
    user_answered: tuple[int, ...] = ()
    latency_users: tuple[int, ...] = ()
    user_turns: tuple[int, ...] = ()
    user_cost: tuple[float, ...] = ()

    @classmethod
    def of(cls, calls: Iterable[TrialCall]) -> ArmData:
        users: dict[int | None, int] = {}
        user_calls: list[int] = []
        user_errors: list[int] = []
        user_answered: list[int] = []
        answered: list[tuple[float, int]] = []
        turn_cost: dict[int, float] = {}
        turn_user: dict[int, int] = {}
        unpriced: set[int] = set()
        count = errors = 0
        for call in calls:
            # A call without a user is a cluster of its own.
            key = call.user_id if call.user_id is not None else -1 - count
            user = users.setdefault(key, len(users))
            if user == len(user_calls):
                user_calls.append(0)
                user_errors.append(0)
                user_answered.append(0)
            count += 1
            user_calls[user] += 1
            ok = call.outcome == "ok"
            if ok:
                answered.append((call.latency_ms, user))
                user_answered[user] += 1
            else:
                errors += 1
                user_errors[user] += 1
            if call.turn_id is None:
                continue
            if ok and call.cost_usd is None:
                unpriced.add(call.turn_id)  # its cost is not known: the turn is left out
            turn_cost[call.turn_id] = turn_cost.get(call.turn_id, 0.0) + (call.cost_usd or 0.0)
            turn_user[call.turn_id] = user
        user_turns = [0] * len(user_calls)
        user_cost = [0.0] * len(user_calls)
        costs = []
        for turn, cost in turn_cost.items():
            if turn in unpriced:
                continue
            costs.append(cost)
            user_turns[turn_user[turn]] += 1
            user_cost[turn_user[turn]] += cost
        answered.sort()
        return cls(
            calls=count,
            errors=errors,
            latencies=tuple(latency for latency, _ in answered),
            turns=len(costs),
            cost_sum=math.fsum(costs),
            cost_squares=math.fsum(cost * cost for cost in costs),
            user_calls=tuple(user_calls),
            user_errors=tuple(user_errors),
            user_answered=tuple(user_answered),
            latency_users=tuple(user for _, user in answered),
            user_turns=tuple(user_turns),
            user_cost=tuple(user_cost),
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


@dataclass(frozen=True, slots=True)
class Ratio:
    """A ratio of sums over one arm's users (errors per call, slow calls per answered call, cost
    per turn) with its cluster-robust variance: each user's calls count as one unit."""

    value: float
    variance: float
    users: int


def ratio(numerators: Sequence[float], denominators: Sequence[int]) -> Ratio | None:
    pairs = [(y, n) for y, n in zip(numerators, denominators, strict=True) if n > 0]
    total = sum(n for _, n in pairs)
    if len(pairs) < 2 or total == 0:
        return None
    value = math.fsum(y for y, _ in pairs) / total
    spread = math.fsum((y - value * n) ** 2 for y, n in pairs)
    g = len(pairs)
    return Ratio(value, g / (g - 1) * spread / (total * total), g)


def cluster_z(candidate: Ratio, incumbent: Ratio) -> float:
    """The candidate's excess over the incumbent in standard errors (cluster-robust)."""
    se = math.sqrt(candidate.variance + incumbent.variance)
    difference = candidate.value - incumbent.value
    if se == 0:
        return math.inf if difference > 0 else -math.inf
    return difference / se


def beyond(z: float, candidate: Ratio, incumbent: Ratio, alpha: float) -> bool:
    """z past Student's t at `alpha` (one-sided), with the smaller arm's users - 1 degrees of
    freedom: a trial with few users on an arm needs a larger z."""
    df = min(candidate.users, incumbent.users) - 1
    return df >= 1 and z >= t_critical(df, z=normal_quantile(1 - alpha))


def error_p(candidate: ArmData, incumbent: ArmData) -> float | None:
    """One-sided p that the candidate fails more often (Fisher's exact, calls as units)."""
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


def slow_per_user(data: ArmData, cut: float) -> list[int]:
    slow = [0] * len(data.user_answered)
    for user in data.latency_users[bisect.bisect_right(data.latencies, cut) :]:
        slow[user] += 1
    return slow


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


def ratios(
    guardrail: Guardrail, candidate: ArmData, incumbent: ArmData
) -> tuple[Ratio, Ratio] | None:
    """The guardrail's figure per arm as a per-user ratio (None: too little to test)."""
    if guardrail == "error rate":
        pair = (
            ratio(candidate.user_errors, candidate.user_calls),
            ratio(incumbent.user_errors, incumbent.user_calls),
        )
    elif guardrail == "p95 latency":
        cut = latency_cut(candidate, incumbent)
        if cut is None:
            return None
        pair = (
            ratio(slow_per_user(candidate, cut), candidate.user_answered),
            ratio(slow_per_user(incumbent, cut), incumbent.user_answered),
        )
    else:
        if candidate.turns < MIN_TURNS or incumbent.turns < MIN_TURNS:
            return None
        pair = (
            ratio(candidate.user_cost, candidate.user_turns),
            ratio(incumbent.user_cost, incumbent.user_turns),
        )
    first, second = pair
    return (first, second) if first is not None and second is not None else None


def exact_p(guardrail: Guardrail, candidate: ArmData, incumbent: ArmData) -> float | None:
    """The exact test over calls, where there is one (errors, latency): it keeps the level at
    small counts, where the normal approximation of the per-user test does not."""
    if guardrail == "error rate":
        return error_p(candidate, incumbent)
    if guardrail == "p95 latency":
        return latency_p(candidate, incumbent)
    return None


def decide(look: int, candidate: ArmData, incumbent: ArmData) -> list[Breach]:
    """The guardrails the candidate fails at `look` (none: the trial goes on). A guardrail
    fails when the per-user test is past its level and, for errors and latency, the exact test
    over calls too."""
    if look < 1:
        return []
    alpha = look_alpha(look)
    breaches = []
    for guardrail in GUARDRAILS:
        arms = ratios(guardrail, candidate, incumbent)
        if arms is None:
            continue
        z = cluster_z(*arms)
        if not beyond(z, *arms, alpha):
            continue
        exact = exact_p(guardrail, candidate, incumbent)
        if exact is not None and exact > alpha:
            continue
        p = max(normal_tail(z), exact if exact is not None else 0.0)
        breaches.append(Breach(guardrail, p, alpha, look))
    return breaches
