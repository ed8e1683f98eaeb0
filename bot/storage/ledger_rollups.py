"""`/stats` from the ledger's rollups: the window cut into what the rollups hold and what the raw
rows must give, and the parts put back together (both backends; decision 0016).

A window [since, until) is read as

    raw head [since, h1) + hours [h1, d1) + days [d1, d2) + hours [d2, h2) + raw tail [h2, until)

with h1/h2 the first and last whole hour inside it and d1/d2 the whole days inside [h1, h2)
(d1 = d2 = h2 when there is none). The rollups (`ledger_rollups`, `ledger_histograms`: one row
per period x agent x model, hourly and daily) are kept by the database with every write of the
ledger; the raw edges are at most two hours of rows.

Exact, as the raw rows give them: calls, errors, fallbacks, tokens, cost, unpriced; turns and
ratings too, as long as no turn's calls for one agent x model lie in two periods with a whole
empty period between them (a turn lasts seconds; each period stores its distinct turns and how
many of them it shares with the period before, and the sum over consecutive periods subtracts
those). Percentiles come from log-bucketed histograms, `BUCKETS_PER_DOUBLING` (8) buckets per
doubling: the figure is the geometric middle of the bucket the nearest-rank value falls in, so
within 2^(1/16) - 1 = 4.4 % of it. A group whose answered calls all lie in the raw edges gets
the exact nearest-rank value.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.storage.ledger_models import CallStats
from bot.storage.timeutil import as_utc, iso_utc

HOUR = 3600
DAY = 86400
BUCKETS_PER_DOUBLING = 8
# Below this a latency is counted as this (a log needs a positive value).
FLOOR_MS = 0.01
# The same nudge in Python, SQLite and PostgreSQL: a value on a bucket's edge (16 ms) lands in
# the same bucket whichever log the engine has.
EPSILON = 1e-9
LATENCY, FIRST_TOKEN = 0, 1


def bucket(value: float) -> int:
    return math.floor(BUCKETS_PER_DOUBLING * math.log2(max(value, FLOOR_MS)) + EPSILON)


def representative(index: int) -> float:
    """The bucket's geometric middle: within 4.4 % of any value in it."""
    return float(2 ** ((index + 0.5) / BUCKETS_PER_DOUBLING))


@dataclass(frozen=True, slots=True)
class Periods:
    """Epoch seconds of the window's cuts (see the module's docstring)."""

    since: datetime
    until: datetime
    h1: int
    d1: int
    d2: int
    h2: int

    @property
    def h1_at(self) -> str:
        return iso_utc(datetime.fromtimestamp(self.h1, UTC))

    @property
    def h2_at(self) -> str:
        return iso_utc(datetime.fromtimestamp(self.h2, UTC))

    def params(self) -> dict[str, Any]:
        return {
            "since": iso_utc(self.since),
            "until": iso_utc(self.until),
            "h1_at": self.h1_at,
            "h2_at": self.h2_at,
            "h1": self.h1,
            "d1": self.d1,
            "d2": self.d2,
            "h2": self.h2,
        }


def periods(since: datetime, until: datetime) -> Periods | None:
    """The cuts of [since, until); None when it holds no whole hour (read it all raw)."""
    start = as_utc(since).timestamp()
    end = as_utc(until).timestamp()
    h1 = math.ceil(start / HOUR) * HOUR
    h2 = math.floor(end / HOUR) * HOUR
    if h1 >= h2:
        return None
    d1 = math.ceil(h1 / DAY) * DAY
    d2 = math.floor(h2 / DAY) * DAY
    if d1 >= d2:
        d1 = d2 = h2
    return Periods(as_utc(since), as_utc(until), h1, d1, d2, h2)


def series_period(bucket_seconds: int) -> int:
    """The rollup period a chart with buckets of `bucket_seconds` (whole hours) reads."""
    return DAY if bucket_seconds % DAY == 0 else HOUR


def prune_cutoff(before: datetime) -> int:
    """Retention deletes whole days (epoch seconds of the day `before` falls in): a rollup
    period is either kept whole or gone with its rows."""
    return math.floor(as_utc(before).timestamp() / DAY) * DAY


def nearest_rank(q: float, n: int) -> int:
    # The smallest rank r with r >= q * n, as the raw SQL picks it (and percentile_disc).
    return max(1, math.ceil(q * n))


def exact_percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


def histogram_percentile(counts: Mapping[int, int], q: float) -> float | None:
    total = sum(counts.values())
    if total == 0:
        return None
    rank = nearest_rank(q, total)
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return representative(index)
    raise AssertionError("unreachable: the ranks add up to the total")


def _int(row: Mapping[str, Any], key: str) -> int:
    value = row.get(key)
    return int(value) if isinstance(value, int | float) else 0


class _Group:
    __slots__ = ("cost", "counts", "hist", "values")

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.cost = 0.0
        self.hist: dict[int, dict[int, int]] = {
            LATENCY: defaultdict(int),
            FIRST_TOKEN: defaultdict(int),
        }
        self.values: dict[int, list[float]] = {LATENCY: [], FIRST_TOKEN: []}

    def add(self, row: Mapping[str, Any]) -> None:
        for key in (
            "calls",
            "errors",
            "fallbacks",
            "prompt_tokens",
            "completion_tokens",
            "unpriced",
            "turns",
            "up",
            "rated",
        ):
            self.counts[key] += _int(row, key)
        self.cost += float(row.get("cost_usd") or 0.0)

    def percentile(self, kind: int, q: float) -> float | None:
        if not self.hist[kind]:
            return exact_percentile(self.values[kind], q)
        merged = dict(self.hist[kind])
        for value in self.values[kind]:
            index = bucket(value)
            merged[index] = merged.get(index, 0) + 1
        return histogram_percentile(merged, q)

    def stats(self, agent: str, model: str | None) -> CallStats:
        c = self.counts
        return CallStats(
            agent=agent,
            model=model,
            calls=c["calls"],
            turns=c["turns"],
            errors=c["errors"],
            fallbacks=c["fallbacks"],
            prompt_tokens=c["prompt_tokens"],
            completion_tokens=c["completion_tokens"],
            cost_usd=self.cost,
            unpriced=c["unpriced"],
            p50_ms=self.percentile(LATENCY, 0.5),
            p95_ms=self.percentile(LATENCY, 0.95),
            ttft_p50_ms=self.percentile(FIRST_TOKEN, 0.5),
            ratings_up=c["up"],
            ratings=c["rated"],
        )


def combine(
    sums: Iterable[Mapping[str, Any]],
    histogram: Iterable[Mapping[str, Any]],
    edge_values: Iterable[Mapping[str, Any]],
) -> list[CallStats]:
    """The `/stats` rows from the parts the database gave.

    `sums`: per (agent, grp) with grp the model or '' for the agent as a whole, additive figures
    of the rolled periods and of the raw edges (two rows per group, or one); `histogram`: per
    (agent, model, kind, bucket) the rolled counts `n`; `edge_values`: per answered call in the
    raw edges, (agent, model, latency_ms, ttft_ms). Ordered as the raw query orders them.
    """
    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    for row in sums:
        groups[str(row["agent"]), str(row["grp"])].add(row)
    for row in histogram:
        agent, model = str(row["agent"]), str(row["model"])
        kind, index, n = int(row["kind"]), int(row["bucket"]), int(row["n"])
        for key in ((agent, model), (agent, "")):
            groups[key].hist[kind][index] += n
    for row in edge_values:
        agent, model = str(row["agent"]), str(row["model"])
        for key in ((agent, model), (agent, "")):
            groups[key].values[LATENCY].append(float(row["latency_ms"]))
            if row.get("ttft_ms") is not None:
                groups[key].values[FIRST_TOKEN].append(float(row["ttft_ms"]))
    rows = [
        group.stats(agent, grp or None)
        for (agent, grp), group in groups.items()
        if group.counts["calls"] > 0
    ]
    rows.sort(key=lambda r: (r.agent, r.model is not None, -r.calls, r.model or ""))
    return rows


# --- the rollups' changes for one batch of calls (SQLite; InsForge's ledger_add does the same
# in SQL) ---

LEVELS = (HOUR, DAY)
# The columns of a rollup row after (g, p, agent, grp), in order.
ROLLUP_FIGURES = (
    "calls",
    "errors",
    "fallbacks",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "unpriced",
    "turns",
    "turns_cont",
    "rated",
    "rated_up",
    "rated_cont",
    "rated_up_cont",
)
_CALLS, _ERRORS, _FALLBACKS, _PROMPT, _COMPLETION, _COST, _UNPRICED = range(7)
_TURNS, _TURNS_CONT, _RATED, _RATED_UP, _RATED_CONT, _RATED_UP_CONT = range(7, 13)

Key = tuple[int, int, str, str]  # g, p, agent, grp
Presence = tuple[int, int, str, str, int]  # g, p, agent, grp, turn


@dataclass(frozen=True, slots=True)
class StoredCall:
    """What the rollups need of a call: `t` its unix second (as the databases floor it)."""

    turn_id: int | None
    agent: str
    model: str
    t: int
    ok: bool
    attempt: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    unpriced: bool = False
    latency_ms: float = 0.0
    ttft_ms: float | None = None


def _places(call: StoredCall) -> Iterable[tuple[int, int, str]]:
    for g in LEVELS:
        p = call.t // g * g
        yield g, p, call.model
        yield g, p, ""


def rollup_changes(
    stored: Iterable[StoredCall],
    before: Iterable[StoredCall],
    ratings: Mapping[int, tuple[int, int]],
) -> tuple[dict[Key, list[float]], dict[tuple[int, int, str, str, int, int], int]]:
    """What to add to the rollups for the calls a batch `stored`, given the calls of the same
    turns the database held `before` it and the turns' `ratings` (n, up): per rollup row the
    figures (ROLLUP_FIGURES' order), per histogram row (g, p, agent, model, kind, bucket) n."""
    rows: dict[Key, list[float]] = defaultdict(lambda: [0] * len(ROLLUP_FIGURES))
    counts: dict[tuple[int, int, str, str, int, int], int] = defaultdict(int)
    old_any: set[Presence] = set()
    old_ok: set[Presence] = set()
    for call in before:
        if call.turn_id is None:
            continue
        for g, p, grp in _places(call):
            old_any.add((g, p, call.agent, grp, call.turn_id))
            if call.ok:
                old_ok.add((g, p, call.agent, grp, call.turn_id))
    new_any: set[Presence] = set()
    new_ok: set[Presence] = set()
    for call in stored:
        for g, p, grp in _places(call):
            row = rows[g, p, call.agent, grp]
            row[_CALLS] += 1
            row[_ERRORS] += not call.ok
            row[_FALLBACKS] += call.attempt > 0
            row[_PROMPT] += call.prompt_tokens
            row[_COMPLETION] += call.completion_tokens
            row[_COST] += call.cost_usd or 0.0
            row[_UNPRICED] += call.unpriced and call.ok
            if call.turn_id is not None:
                new_any.add((g, p, call.agent, grp, call.turn_id))
                if call.ok:
                    new_ok.add((g, p, call.agent, grp, call.turn_id))
            if call.ok and grp:
                counts[g, p, call.agent, grp, LATENCY, bucket(call.latency_ms)] += 1
                if call.ttft_ms is not None:
                    counts[g, p, call.agent, grp, FIRST_TOKEN, bucket(call.ttft_ms)] += 1
    _presence(rows, old_any, new_any, (_TURNS, _TURNS_CONT), None, ratings)
    _presence(rows, old_ok, new_ok, (_RATED, _RATED_CONT), (_RATED_UP, _RATED_UP_CONT), ratings)
    return rows, counts


def _presence(
    rows: dict[Key, list[float]],
    old: set[Presence],
    new: set[Presence],
    count: tuple[int, int],
    up: tuple[int, int] | None,
    ratings: Mapping[int, tuple[int, int]],
) -> None:
    """A turn newly in a period adds to it (1, or its ratings: `count`'s and `up`'s first
    column); a pair of consecutive periods that both hold the turn now and did not before adds
    to the later one's overlap (their second column)."""
    after = old | new
    appeared = new - old
    for column in (0, 1):
        if column == 0:
            changed = appeared
        else:
            # the later period of each pair a newly present turn may complete
            changed = set()
            for g, p, agent, grp, turn in appeared:
                for later in (p, p + g):
                    earlier = (g, later - g, agent, grp, turn)
                    now = (g, later, agent, grp, turn)
                    if earlier in after and now in after and not (earlier in old and now in old):
                        changed.add(now)
        for g, p, agent, grp, turn in changed:
            n, ups = (1, 0) if up is None else ratings.get(turn, (0, 0))
            row = rows[g, p, agent, grp]
            row[count[column]] += n
            if up is not None:
                row[up[column]] += ups
