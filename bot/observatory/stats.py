"""`/stats [agent] [1h|24h|7d|30d]` and `/usage`: the ledger's figures as text.

    stats = LedgerStats(storage.ledger)
    text = await stats.report("coach", "24h")    # per agent, then per agent x model
    text = await stats.usage(user_id)            # the user's cost today and this month

Every figure is computed by the database (`LedgerRepo.stats`: the hourly and daily rollups and
the raw rows at the window's edges, decision 0016; percentiles within 4.4 %); this module only
words it. A 👍 share needs `MIN_RATINGS` ratings: below that the row says how many there are.
The share's interval is Wilson's (95 %), which stays inside [0, 1] and honest for small n.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bot.config import AGENT_NAMES
from bot.storage.ledger_models import CallStats
from bot.storage.repositories import LedgerRepo, ModelConfigHistoryRepo
from bot.storage.task_models import ScoreStats

WINDOWS: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_WINDOW = "24h"
MIN_RATINGS = 30
Z95 = 1.959963984540054

STATS_USAGE = (
    "Usage: /stats [agent] [1h|24h|7d|30d] (default: every agent, 24h)\n"
    "Agents: " + ", ".join(AGENT_NAMES)
)


class StatsArgsError(ValueError):
    """The arguments of `/stats` do not read; the message says how to write them."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    agent: str | None
    window: str

    @property
    def span(self) -> timedelta:
        return WINDOWS[self.window]


def parse_stats_args(text: str | None) -> StatsQuery:
    agent: str | None = None
    window = DEFAULT_WINDOW
    for word in (text or "").split():
        word = word.lower()
        if word in WINDOWS:
            window = word
        elif word in AGENT_NAMES and agent is None:
            agent = word
        else:
            raise StatsArgsError(f"I don't know {word!r}.\n{STATS_USAGE}")
    return StatsQuery(agent, window)


def wilson(up: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a share of `up` in `n` (0 <= up <= n, n > 0)."""
    p = up / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def usd(value: float) -> str:
    # Per-call costs are fractions of a cent: eight decimals keep them readable as figures.
    return f"${value:.6f}" if value >= 0.01 else f"${value:.8f}"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def rating_text(up: int, n: int) -> str:
    if n < MIN_RATINGS:
        return f"👍 {up} of {n} ratings (fewer than {MIN_RATINGS}: no share yet)"
    low, high = wilson(up, n)
    return f"👍 {100 * up / n:.0f}% of {n} ratings (95% CI {100 * low:.0f}-{100 * high:.0f}%)"


def short_rating(up: int, n: int) -> str:
    """The share as a change report's column shows it."""
    if n < MIN_RATINGS:
        return f"{up} of {n} (n < {MIN_RATINGS})"
    low, high = wilson(up, n)
    return f"{100 * up / n:.0f}% n={n} ({100 * low:.0f}-{100 * high:.0f}%)"


def cost_text(row: CallStats) -> str:
    per_turn = usd(row.cost_usd / row.turns) if row.turns else "-"
    text = f"cost {usd(row.cost_usd)}, {per_turn} per turn"
    if row.unpriced:
        text += f" ({row.unpriced} calls unpriced, not counted)"
    return text


def row_lines(row: CallStats) -> list[str]:
    """One agent's (or agent x model's) figures, as the lines `/stats` shows."""
    title = row.agent if row.model is None else f"  {row.agent} x {row.model}"
    indent = "    " if row.model is not None else "  "
    return [
        f"{title}: {row.calls} calls, {row.turns} turns",
        f"{indent}latency p50 {ms(row.p50_ms)}, p95 {ms(row.p95_ms)}; "
        f"first token p50 {ms(row.ttft_p50_ms)}",
        f"{indent}{cost_text(row)}",
        f"{indent}tokens {row.prompt_tokens} in, {row.completion_tokens} out; "
        f"errors {row.errors} ({percent(row.errors, row.calls)}); "
        f"fallbacks {row.fallbacks} ({percent(row.fallbacks, row.calls)})",
        f"{indent}{rating_text(row.ratings_up, row.ratings)}",
    ]


def format_stats(rows: list[CallStats], heading: str) -> str:
    if not rows:
        return f"{heading}\nNo model calls in this window."
    lines = [heading]
    for row in rows:
        if row.model is None and len(lines) > 1:
            lines.append("")
        lines.extend(row_lines(row))
    return "\n".join(lines)


class ScoreSource(Protocol):
    """The score tasks' results as figures (`TaskRepo.score_stats`)."""

    async def score_stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        trial_id: int | None = None,
    ) -> list[ScoreStats]: ...


def score_section(scores: Sequence[ScoreStats]) -> str:
    """The judge scores of the turns each agent x model answered (mean, 95 % interval, n)."""
    if not scores:
        return ""
    lines = ["", "Judge scores (score tasks, 0-1: mean, 95% CI, turns scored):"]
    lines += [f"  {s.agent} x {s.group}: {s.task} {s.text()}" for s in scores]
    return "\n".join(lines)


# Each window's chart step (seconds): 24 points, 30 for 30d (a day each, from the daily
# rollups); whole hours and days come from the rollups, 1h's 150 s from the raw rows.
CHART_STEPS: dict[str, int] = {"1h": 150, "24h": 3600, "7d": 7 * 3600, "30d": 86400}


class LedgerStats:
    def __init__(
        self,
        repo: LedgerRepo,
        history: ModelConfigHistoryRepo | None = None,
        pipelines: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.repo = repo
        self.history = history
        self.pipelines = pipelines or {}
        # The score tasks' results (`/task ... kind=score`), shown per agent x model.
        self.scores: ScoreSource | None = None

    async def chart(self, query: StatsQuery, *, now: datetime | None = None) -> bytes:
        """`/stats <agent>`'s PNG: p95 latency and cost per turn per model, changes marked."""
        from bot.observatory.chart import render_chart
        from bot.observatory.reports import agents_of

        assert query.agent is not None
        until = now or datetime.now(UTC)
        since = until - query.span
        bucket = CHART_STEPS[query.window]
        points = await self.repo.series(query.agent, since, until, bucket)
        changes: list[datetime] = []
        if self.history is not None:
            for line in await self.history.list(None, 200):
                if (
                    line.changed_at >= since
                    and not line.agent_name.startswith("catalog:")
                    and query.agent in agents_of(line.agent_name, self.pipelines)
                ):
                    changes.append(line.changed_at)
        return render_chart(query.agent, points, changes, since, until)

    async def figures(self, query: StatsQuery, *, now: datetime | None = None) -> list[CallStats]:
        until = now or datetime.now(UTC)
        # `until` a moment ahead: calls stamped this very second are in.
        return await self.repo.stats(
            until - query.span, until + timedelta(seconds=1), agent=query.agent
        )

    async def report(self, query: StatsQuery, *, now: datetime | None = None) -> str:
        rows = await self.figures(query, now=now)
        who = query.agent or "every agent"
        text = format_stats(rows, f"Model calls of {who}, last {query.window}:")
        if self.scores is None or not rows:
            return text
        until = now or datetime.now(UTC)
        scores = await self.scores.score_stats(
            until - query.span, until + timedelta(seconds=1), agent=query.agent
        )
        return text + score_section(scores)

    async def usage(self, user_id: int, *, now: datetime | None = None) -> str:
        moment = now or datetime.now(UTC)
        today = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = today.replace(day=1)
        day_cost = await self.repo.user_cost(user_id, today)
        month_cost = await self.repo.user_cost(user_id, month)
        lines = [
            f"Your model calls today (UTC): {day_cost.calls}, cost {usd(day_cost.cost_usd)}",
            f"This month: {month_cost.calls}, cost {usd(month_cost.cost_usd)}",
        ]
        if month_cost.unpriced:
            lines.append(
                f"({month_cost.unpriced} calls this month have no known price and are not counted.)"
            )
        return "\n".join(lines)
