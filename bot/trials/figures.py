"""A trial's figures as text, each with its n and a 95 % interval (`/trial`, the guardrails).

    figure_rows(candidate=ArmData, incumbent=ArmData, whole=per-arm CallStats)
    side_by_side(rows)          # aligned columns for a <pre> block

Latency quantiles carry the distribution-free order-statistic interval (`quantile_interval`),
the cost per turn Student's t over the turns, shares (errors, 👍) Wilson's interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bot.observatory.stats import MIN_RATINGS, usd, wilson
from bot.storage.ledger_models import CallStats
from bot.trials.guardrails import ArmData, nearest_rank
from bot.trials.stats import mean_interval, quantile_interval

Row = tuple[str, str, str]


def share_text(part: int, whole: int) -> str:
    """`3.1% (2/64, CI 0.9-10.7%)`, or `- (n=0)`."""
    if not whole:
        return "- (n=0)"
    low, high = wilson(part, whole)
    return f"{100 * part / whole:.1f}% ({part}/{whole}, CI {100 * low:.1f}-{100 * high:.1f}%)"


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


def quantile_text(data: ArmData, q: float) -> str:
    """`812 ms (CI 790-840, n=896)`; an end the sample cannot bound is `?`."""
    values = data.latencies
    if not values:
        return "- (n=0)"
    low, high = quantile_interval(values, q)
    return f"{nearest_rank(values, q):.0f} ms (CI {_ms(low)}-{_ms(high)}, n={len(values)})"


def cost_text(data: ArmData) -> str:
    if not data.turns:
        return "- (n=0)"
    mean = data.cost_sum / data.turns
    interval = mean_interval(data.turns, data.cost_sum, data.cost_squares)
    if interval is None:
        return f"{usd(mean)} (n={data.turns})"
    low, high = interval
    return f"{usd(mean)} (CI {usd(max(0.0, low))}-{usd(high)}, n={data.turns})"


def rating_text(stats: CallStats | None) -> str:
    if stats is None or not stats.ratings:
        return "- (n=0)"
    text = share_text(stats.ratings_up, stats.ratings)
    return text if stats.ratings >= MIN_RATINGS else text + " few"


def figure_rows(
    candidate: ArmData, incumbent: ArmData, whole: Mapping[str, CallStats] | None = None
) -> list[Row]:
    """The arms side by side. With `whole` (each arm's `CallStats` over the whole trial) calls,
    errors and 👍 are the trial's; without, the window's (a guardrail's look)."""
    data = {"incumbent": incumbent, "candidate": candidate}

    def calls(arm: str) -> str:
        if whole is not None:
            return str(whole[arm].calls) if arm in whole else "0"
        return str(data[arm].calls)

    def errors(arm: str) -> str:
        if whole is not None:
            stats = whole.get(arm)
            return share_text(stats.errors, stats.calls) if stats else "- (n=0)"
        return share_text(data[arm].errors, data[arm].calls)

    figures: list[tuple[str, Callable[[str], str]]] = [
        ("calls", calls),
        ("p50", lambda arm: quantile_text(data[arm], 0.5)),
        ("p95", lambda arm: quantile_text(data[arm], 0.95)),
        ("cost/turn", lambda arm: cost_text(data[arm])),
        ("errors", errors),
    ]
    if whole is not None:
        figures.append(("👍", lambda arm: rating_text(whole.get(arm))))
    # Judge scores (post-completion tasks, `kind=score`) join here as one more figure per arm.
    rows: list[Row] = [("", "incumbent", "candidate")]
    rows += [(name, figure("incumbent"), figure("candidate")) for name, figure in figures]
    return rows


def side_by_side(rows: list[Row]) -> list[str]:
    width = max(len(row[0]) for row in rows)
    middle = max(len(row[1]) for row in rows)
    return [f"  {name:<{width}}  {left:<{middle}}  {right}".rstrip() for name, left, right in rows]
