"""The call ledger over SQLite: batched inserts, the rollups brought up to them off the write
(`roll_up`, decision 0016), `/stats` from the rollups and the raw edges of its window, the raw
aggregates in SQL (window functions for the percentiles, nearest rank) for the rest; long reads,
the roll-up and the pruning off the event loop's thread."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.storage.ledger_models import CallStats, LedgerCall, SeriesPoint, TrialCall, UserCost
from bot.storage.ledger_rollups import (
    HOUR,
    ROLLUP_FIGURES,
    StoredCall,
    combine,
    histogram_percentile,
    periods,
    prune_cutoff,
    rollup_changes,
    series_period,
)
from bot.storage.models import utcnow
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.sqlite.rollup_schema import ADD_SQL
from bot.storage.timeutil import as_utc, iso_utc

COLUMNS = (
    "call_id, at, turn_id, chat_id, user_id, pipeline, agent, role, level, spec, model, "
    "provider, attempt, fallback, outcome, latency_ms, ttft_ms, prompt_tokens, "
    "completion_tokens, cost_usd, cost_source, config_version, trial_id, trial_arm"
)
_WIDTH = COLUMNS.count(",") + 1
_ROW = "(" + ", ".join("?" * _WIDTH) + ")"
# Rows per INSERT: under SQLite's 32766 bound parameters.
CHUNK = 500


def _values(call: LedgerCall) -> tuple[object, ...]:
    return (
        call.call_id,
        iso_utc(call.at),
        call.turn_id,
        call.chat_id,
        call.user_id,
        call.pipeline,
        call.agent,
        call.role,
        call.level,
        call.spec,
        call.model,
        call.provider,
        call.attempt,
        int(call.fallback),
        call.outcome,
        call.latency_ms,
        call.ttft_ms,
        call.prompt_tokens,
        call.completion_tokens,
        call.cost_usd,
        call.cost_source,
        call.config_version,
        call.trial_id,
        call.trial_arm,
    )


# `grp` is the model, or NULL for the agent over all its models: every call is counted twice
# (once per grouping) so one pass makes both kinds of rows.
_STATS_BASE = """
WITH base AS (
    SELECT agent, model, turn_id, outcome, attempt, latency_ms, ttft_ms, prompt_tokens,
        completion_tokens, cost_usd, cost_source
    FROM ledger_calls
    WHERE at >= :since AND at < :until
        AND (:agent IS NULL OR agent = :agent)
        AND (:vmin IS NULL OR config_version >= :vmin)
        AND (:vmax IS NULL OR config_version < :vmax)
),
"""
# A trial's figures: the same aggregates with the arm in the model's place (`/trial`).
_TRIAL_BASE = """
WITH base AS (
    SELECT agent, trial_arm AS model, turn_id, outcome, attempt, latency_ms, ttft_ms,
        prompt_tokens, completion_tokens, cost_usd, cost_source
    FROM ledger_calls
    WHERE trial_id = :trial AND trial_arm IS NOT NULL
),
"""
_STATS_REST = """g AS (
    SELECT agent, model AS grp, turn_id, outcome, attempt, latency_ms, ttft_ms, prompt_tokens,
        completion_tokens, cost_usd, cost_source FROM base
    UNION ALL
    SELECT agent, NULL, turn_id, outcome, attempt, latency_ms, ttft_ms, prompt_tokens,
        completion_tokens, cost_usd, cost_source FROM base
),
agg AS (
    SELECT agent, grp, COUNT(*) AS calls, COUNT(DISTINCT turn_id) AS turns,
        SUM(outcome <> 'ok') AS errors, SUM(attempt > 0) AS fallbacks,
        SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens,
        TOTAL(cost_usd) AS cost_usd,
        SUM(cost_source = 'unpriced' AND outcome = 'ok') AS unpriced
    FROM g GROUP BY agent, grp
),
lat AS (
    SELECT agent, grp, latency_ms,
        ROW_NUMBER() OVER (PARTITION BY agent, grp ORDER BY latency_ms) AS rn,
        COUNT(*) OVER (PARTITION BY agent, grp) AS n
    FROM g WHERE outcome = 'ok'
),
latp AS (
    SELECT agent, grp, MIN(CASE WHEN rn >= 0.5 * n THEN latency_ms END) AS p50,
        MIN(CASE WHEN rn >= 0.95 * n THEN latency_ms END) AS p95
    FROM lat GROUP BY agent, grp
),
ttft AS (
    SELECT agent, grp, ttft_ms,
        ROW_NUMBER() OVER (PARTITION BY agent, grp ORDER BY ttft_ms) AS rn,
        COUNT(*) OVER (PARTITION BY agent, grp) AS n
    FROM g WHERE outcome = 'ok' AND ttft_ms IS NOT NULL
),
ttftp AS (
    SELECT agent, grp, MIN(CASE WHEN rn >= 0.5 * n THEN ttft_ms END) AS p50
    FROM ttft GROUP BY agent, grp
),
served AS (
    SELECT DISTINCT agent, grp, turn_id FROM g WHERE outcome = 'ok' AND turn_id IS NOT NULL
),
rated AS (
    SELECT s.agent, s.grp, SUM(r.up) AS up, COUNT(*) AS n
    FROM served s JOIN ledger_ratings r ON r.turn_id = s.turn_id
    GROUP BY s.agent, s.grp
)
SELECT a.agent, a.grp, a.calls, a.turns, a.errors, a.fallbacks, a.prompt_tokens,
    a.completion_tokens, a.cost_usd, a.unpriced, l.p50, l.p95, t.p50 AS ttft_p50,
    COALESCE(r.up, 0) AS up, COALESCE(r.n, 0) AS rated
FROM agg a
LEFT JOIN latp l ON l.agent = a.agent AND l.grp IS a.grp
LEFT JOIN ttftp t ON t.agent = a.agent AND t.grp IS a.grp
LEFT JOIN rated r ON r.agent = a.agent AND r.grp IS a.grp
ORDER BY a.agent, a.grp IS NOT NULL, a.calls DESC, a.grp
"""
STATS_SQL = _STATS_BASE + _STATS_REST
TRIAL_STATS_SQL = _TRIAL_BASE + _STATS_REST

SERIES_SQL = """
WITH base AS (
    SELECT CAST((julianday(at) - julianday(:since)) * 86400.0 / :bucket AS INTEGER) AS b,
        model, turn_id, outcome, latency_ms, cost_usd
    FROM ledger_calls WHERE agent = :agent AND at >= :since AND at < :until
),
lat AS (
    SELECT b, model, latency_ms,
        ROW_NUMBER() OVER (PARTITION BY b, model ORDER BY latency_ms) AS rn,
        COUNT(*) OVER (PARTITION BY b, model) AS n
    FROM base WHERE outcome = 'ok'
),
latp AS (
    SELECT b, model, MIN(CASE WHEN rn >= 0.95 * n THEN latency_ms END) AS p95
    FROM lat GROUP BY b, model
),
agg AS (
    SELECT b, model, TOTAL(cost_usd) AS cost, COUNT(DISTINCT turn_id) AS turns
    FROM base GROUP BY b, model
)
SELECT a.b, a.model, l.p95, a.cost, a.turns FROM agg a
LEFT JOIN latp l ON l.b = a.b AND l.model = a.model
ORDER BY a.b, a.model
"""


# The rolled periods of a window (bot/storage/ledger_rollups.py): `w` counts the row's figures,
# `c` subtracts the turns (and their ratings) it shares with the period before, except at the
# first period of the span; the daily span's first day takes its overlap from the hourly row.
ROLLED_SQL = """
SELECT agent, grp, SUM(w * calls) AS calls, SUM(w * errors) AS errors,
    SUM(w * fallbacks) AS fallbacks, SUM(w * prompt_tokens) AS prompt_tokens,
    SUM(w * completion_tokens) AS completion_tokens, TOTAL(w * cost_usd) AS cost_usd,
    SUM(w * unpriced) AS unpriced, SUM(w * turns - c * turns_cont) AS turns,
    SUM(w * rated_up - c * rated_up_cont) AS up, SUM(w * rated - c * rated_cont) AS rated
FROM (
    SELECT *, 1 AS w, p > :h1 AS c FROM ledger_rollups
        WHERE g = 3600 AND p >= :h1 AND p < :d1 {agent}
    UNION ALL SELECT *, 1, p > :d1 FROM ledger_rollups
        WHERE g = 86400 AND p >= :d1 AND p < :d2 {agent}
    UNION ALL SELECT *, 1, 1 FROM ledger_rollups
        WHERE g = 3600 AND p >= :d2 AND p < :h2 {agent}
    UNION ALL SELECT *, 0, 1 FROM ledger_rollups
        WHERE g = 3600 AND p = :d1 AND :d1 > :h1 AND :d1 < :d2 {agent}
)
GROUP BY agent, grp
"""
HISTOGRAM_SQL = """
SELECT agent, model, kind, bucket, SUM(n) AS n FROM (
    SELECT agent, model, kind, bucket, n FROM ledger_histograms
        WHERE g = 3600 AND p >= :h1 AND p < :d1 {agent}
    UNION ALL SELECT agent, model, kind, bucket, n FROM ledger_histograms
        WHERE g = 86400 AND p >= :d1 AND p < :d2 {agent}
    UNION ALL SELECT agent, model, kind, bucket, n FROM ledger_histograms
        WHERE g = 3600 AND p >= :d2 AND p < :h2 {agent}
)
GROUP BY agent, model, kind, bucket
"""
_EDGE = "((at >= :since AND at < :h1_at) OR (at >= :h2_at AND at < :until)) {agent}"
# The raw edges: a turn (and its ratings) counts here only when the rolled span lacks it.
EDGE_SQL = f"""
WITH edge AS (
    SELECT agent, model, turn_id, outcome, attempt, prompt_tokens, completion_tokens,
        cost_usd, cost_source
    FROM ledger_calls WHERE {_EDGE}
),
k AS MATERIALIZED (
    SELECT e.*,
        e.turn_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_calls c
            WHERE c.turn_id = e.turn_id AND c.agent = e.agent
                AND (e.grp = '' OR c.model = e.grp) AND c.at >= :h1_at AND c.at < :h2_at)
            AS fresh,
        e.outcome = 'ok' AND e.turn_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ledger_calls c
            WHERE c.turn_id = e.turn_id AND c.agent = e.agent AND c.outcome = 'ok'
                AND (e.grp = '' OR c.model = e.grp) AND c.at >= :h1_at AND c.at < :h2_at)
            AS served
    FROM (SELECT *, model AS grp FROM edge UNION ALL SELECT *, '' FROM edge) e
),
agg AS (
    SELECT agent, grp, COUNT(*) AS calls, SUM(outcome <> 'ok') AS errors,
        SUM(attempt > 0) AS fallbacks, SUM(prompt_tokens) AS prompt_tokens,
        SUM(completion_tokens) AS completion_tokens, TOTAL(cost_usd) AS cost_usd,
        SUM(cost_source = 'unpriced' AND outcome = 'ok') AS unpriced,
        COUNT(DISTINCT CASE WHEN fresh THEN turn_id END) AS turns
    FROM k GROUP BY agent, grp
),
rated AS (
    SELECT s.agent, s.grp, SUM(r.up) AS up, COUNT(*) AS rated
    FROM (SELECT DISTINCT agent, grp, turn_id FROM k WHERE served) s
    JOIN ledger_ratings r ON r.turn_id = s.turn_id
    GROUP BY s.agent, s.grp
)
SELECT a.*, COALESCE(r.up, 0) AS up, COALESCE(r.rated, 0) AS rated
FROM agg a LEFT JOIN rated r ON r.agent = a.agent AND r.grp = a.grp
"""
EDGE_VALUES_SQL = f"""
SELECT agent, model, latency_ms, ttft_ms FROM ledger_calls WHERE outcome = 'ok' AND {_EDGE}
"""
# The chart from the rollups: buckets of whole days (daily rows) or whole hours (hourly rows)
# from `base`, the period `since` falls in.
SERIES_ROLLED_SQL = """
SELECT (p - :base) / :bucket AS b, grp AS model, TOTAL(cost_usd) AS cost,
    SUM(turns - CASE WHEN (p - :base) % :bucket = 0 THEN 0 ELSE turns_cont END) AS turns
FROM ledger_rollups
WHERE g = :g AND p >= :base AND p < :end AND agent = :agent AND grp <> ''
GROUP BY 1, 2
ORDER BY 1, 2
"""
SERIES_HISTOGRAM_SQL = """
SELECT (p - :base) / :bucket AS b, model, bucket, SUM(n) AS n
FROM ledger_histograms
WHERE g = :g AND p >= :base AND p < :end AND agent = :agent AND kind = 0
GROUP BY 1, 2, 3
"""


def with_agent(sql: str, agent: str | None) -> str:
    return sql.replace("{agent}", "" if agent is None else "AND agent = :agent")


def rolled_series(
    sums: list[dict[str, Any]], counts: list[dict[str, Any]], base: int, bucket_seconds: int
) -> list[SeriesPoint]:
    """The chart's points from the hourly rollups' rows (both backends)."""
    histograms: dict[tuple[int, str], dict[int, int]] = {}
    for row in counts:
        key = (int(row["b"]), str(row["model"]))
        histograms.setdefault(key, {})[int(row["bucket"])] = int(row["n"])
    return [
        SeriesPoint(
            bucket=datetime.fromtimestamp(base + int(row["b"]) * bucket_seconds, UTC),
            model=str(row["model"]),
            p95_ms=histogram_percentile(
                histograms.get((int(row["b"]), str(row["model"])), {}), 0.95
            ),
            cost_usd=float(row["cost"] or 0.0),
            turns=int(row["turns"] or 0),
        )
        for row in sorted(sums, key=lambda r: (int(r["b"]), str(r["model"])))
    ]


def stats_row(row: sqlite3.Row | dict[str, object]) -> CallStats:
    def number(key: str) -> float | None:
        value = row[key]
        return float(value) if isinstance(value, int | float) else None

    def count(key: str) -> int:
        value = row[key]
        return int(value) if isinstance(value, int | float) else 0

    grp = row["grp"]
    return CallStats(
        agent=str(row["agent"]),
        model=str(grp) if grp is not None else None,
        calls=count("calls"),
        turns=count("turns"),
        errors=count("errors"),
        fallbacks=count("fallbacks"),
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        cost_usd=number("cost_usd") or 0.0,
        unpriced=count("unpriced"),
        p50_ms=number("p50"),
        p95_ms=number("p95"),
        ttft_p50_ms=number("ttft_p50"),
        ratings_up=count("up"),
        ratings=count("rated"),
    )


_ROLLUP_UPSERT = (
    "INSERT INTO ledger_rollups (g, p, agent, grp, "
    + ", ".join(ROLLUP_FIGURES)
    + ") VALUES ("
    + ", ".join("?" * (4 + len(ROLLUP_FIGURES)))
    + f") ON CONFLICT (g, p, agent, grp) DO UPDATE SET {ADD_SQL}"
)
_HISTOGRAM_UPSERT = (
    "INSERT INTO ledger_histograms (g, p, agent, model, kind, bucket, n) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (g, p, agent, model, kind, bucket) DO UPDATE SET n = n + excluded.n"
)


# Calls per roll-up transaction: a backlog goes in bounded steps.
ROLL_UP_LIMIT = 20_000
_CALL_FIGURES = (
    "turn_id, agent, model, unixepoch(at), outcome = 'ok', attempt, prompt_tokens, "
    "completion_tokens, cost_usd, cost_source = 'unpriced', latency_ms, ttft_ms"
)


def _stored(row: sqlite3.Row | tuple[Any, ...]) -> StoredCall:
    return StoredCall(
        turn_id=row[0],
        agent=row[1],
        model=row[2],
        t=int(row[3]),
        ok=bool(row[4]),
        attempt=int(row[5]),
        prompt_tokens=int(row[6]),
        completion_tokens=int(row[7]),
        cost_usd=row[8],
        unpriced=bool(row[9]),
        latency_ms=float(row[10]),
        ttft_ms=row[11],
    )


def _roll_up(conn: sqlite3.Connection) -> int:
    """Add the next calls past the mark to the rollups, and move the mark (one transaction);
    how many calls."""
    conn.execute("INSERT OR IGNORE INTO ledger_rollup_state (id, rolled_id) VALUES (1, 0)")
    (last,) = conn.execute("SELECT rolled_id FROM ledger_rollup_state").fetchone()
    rows = conn.execute(
        f"SELECT {_CALL_FIGURES}, id FROM ledger_calls WHERE id > ? ORDER BY id LIMIT ?",
        (last, ROLL_UP_LIMIT),
    ).fetchall()
    if not rows:
        return 0
    new = [_stored(row) for row in rows]
    turns = sorted({call.turn_id for call in new if call.turn_id is not None})
    before: list[StoredCall] = []
    ratings: dict[int, tuple[int, int]] = {}
    for start in range(0, len(turns), CHUNK):
        some = turns[start : start + CHUNK]
        marks = ", ".join("?" * len(some))
        before.extend(
            _stored(row)
            for row in conn.execute(
                f"SELECT {_CALL_FIGURES} FROM ledger_calls WHERE turn_id IN ({marks}) AND id <= ?",
                [*some, last],
            )
        )
        for turn, n, up in conn.execute(
            "SELECT turn_id, COUNT(*), SUM(up) FROM ledger_ratings "
            f"WHERE turn_id IN ({marks}) GROUP BY turn_id",
            some,
        ):
            ratings[int(turn)] = (int(n), int(up or 0))
    changes, counts = rollup_changes(new, before, ratings)
    conn.executemany(_ROLLUP_UPSERT, [(*key, *figures) for key, figures in changes.items()])
    conn.executemany(_HISTOGRAM_UPSERT, [(*key, n) for key, n in counts.items()])
    conn.execute("UPDATE ledger_rollup_state SET rolled_id = ?", (int(rows[-1][-1]),))
    return len(rows)


class SQLiteLedgerRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def add_many(self, calls: Sequence[LedgerCall]) -> None:
        for start in range(0, len(calls), CHUNK):
            chunk = calls[start : start + CHUNK]
            params: list[object] = []
            for call in chunk:
                params.extend(_values(call))
            await self._db.write(
                f"INSERT OR IGNORE INTO ledger_calls ({COLUMNS}) VALUES "
                + ", ".join([_ROW] * len(chunk)),
                params,
                action="write the call ledger",
            )

    async def roll_up(self) -> int:
        total = 0
        while True:
            done = await self._db.transaction(_roll_up, action="roll up the call ledger")
            total += done
            if done < ROLL_UP_LIMIT:
                return total

    async def prune(self, before: datetime) -> int:
        # Whole days go, so that no rollup is left counting rows that are gone.
        day = prune_cutoff(before)
        cutoff = iso_utc(datetime.fromtimestamp(day, UTC))

        def delete(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM ledger_calls WHERE at < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM ledger_ratings WHERE at < ?", (cutoff,))
            conn.execute("DELETE FROM ledger_rollups WHERE p < ?", (day,))
            conn.execute("DELETE FROM ledger_histograms WHERE p < ?", (day,))
            # Ids come back after the newest rows are deleted: the mark must not be above them.
            conn.execute(
                "UPDATE ledger_rollup_state SET rolled_id = "
                "MIN(rolled_id, (SELECT COALESCE(MAX(id), 0) FROM ledger_calls))"
            )
            return int(gone)

        return await self._db.transaction(delete, action="prune the call ledger")

    async def rate(self, turn_id: int, user_id: int, chat_id: int | None, up: bool) -> None:
        await self._db.write(
            "INSERT INTO ledger_ratings (turn_id, user_id, chat_id, up, at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (turn_id, user_id) DO UPDATE SET up = excluded.up, at = excluded.at",
            (turn_id, user_id, chat_id, int(up), iso_utc(utcnow())),
            action="store a rating",
        )

    async def stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        exact: bool = False,
    ) -> builtins.list[CallStats]:
        cuts = periods(since, until)
        if cuts is not None and not exact and versions == (None, None):
            await self.roll_up()
            params = cuts.params() | {"agent": agent}
            parts = []
            for sql in (ROLLED_SQL, EDGE_SQL, HISTOGRAM_SQL, EDGE_VALUES_SQL):
                parts.append(
                    await self._db.read_aside(
                        with_agent(sql, agent), params, action="read the call ledger's figures"
                    )
                )
            rolled, edge, histogram, values = ([dict(row) for row in rows] for rows in parts)
            return combine(rolled + edge, histogram, values)
        rows = await self._db.read_aside(
            STATS_SQL,
            {
                "since": iso_utc(since),
                "until": iso_utc(until),
                "agent": agent,
                "vmin": versions[0],
                "vmax": versions[1],
            },
            action="read the call ledger's figures",
        )
        return [stats_row(row) for row in rows]

    async def trial_stats(self, trial_id: int) -> builtins.list[CallStats]:
        rows = await self._db.read_aside(
            TRIAL_STATS_SQL, {"trial": trial_id}, action="read a trial's figures"
        )
        return [stats_row(row) for row in rows if row["grp"] is not None]

    async def trial_calls(
        self,
        trial_id: int,
        arm: str,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[TrialCall]:
        rows = await self._db.read_aside(
            "SELECT at, turn_id, outcome, latency_ms, cost_usd, user_id FROM ledger_calls "
            "WHERE trial_id = :trial AND trial_arm = :arm "
            "AND (:since IS NULL OR at >= :since) AND (:until IS NULL OR at <= :until) "
            "ORDER BY at DESC, id DESC LIMIT :limit",
            {
                "trial": trial_id,
                "arm": arm,
                "since": iso_utc(since) if since is not None else None,
                "until": iso_utc(until) if until is not None else None,
                "limit": limit,
            },
            action="read a trial's calls",
        )
        return [
            TrialCall(
                at=as_utc(datetime.fromisoformat(row[0])),
                turn_id=row[1],
                outcome=str(row[2]),
                latency_ms=float(row[3]),
                cost_usd=float(row[4]) if row[4] is not None else None,
                user_id=row[5],
            )
            for row in rows
        ]

    async def trial_call_count(self, trial_id: int, arm: str) -> int:
        rows = await self._db.read(
            "SELECT count(*) FROM ledger_calls WHERE trial_id = ? AND trial_arm = ?",
            (trial_id, arm),
            action="count a trial's calls",
        )
        return int(rows[0][0])

    async def trial_nth_call(self, trial_id: int, arm: str, n: int) -> datetime | None:
        rows = await self._db.read(
            "SELECT at FROM ledger_calls WHERE trial_id = ? AND trial_arm = ? "
            "ORDER BY at, id LIMIT 1 OFFSET ?",
            (trial_id, arm, n - 1),
            action="read a trial's calls",
        )
        return as_utc(datetime.fromisoformat(rows[0][0])) if rows else None

    async def series(
        self, agent: str, since: datetime, until: datetime, bucket_seconds: int
    ) -> builtins.list[SeriesPoint]:
        if bucket_seconds % HOUR == 0:
            return await self._rolled_series(agent, since, until, bucket_seconds)
        rows = await self._db.read_aside(
            SERIES_SQL,
            {
                "agent": agent,
                "since": iso_utc(since),
                "until": iso_utc(until),
                "bucket": bucket_seconds,
            },
            action="read the call ledger's series",
        )
        return [
            SeriesPoint(
                bucket=since + timedelta(seconds=int(row[0]) * bucket_seconds),
                model=str(row[1]),
                p95_ms=float(row[2]) if row[2] is not None else None,
                cost_usd=float(row[3] or 0.0),
                turns=int(row[4] or 0),
            )
            for row in rows
        ]

    async def _rolled_series(
        self, agent: str, since: datetime, until: datetime, bucket_seconds: int
    ) -> builtins.list[SeriesPoint]:
        await self.roll_up()
        g = series_period(bucket_seconds)
        base = int(since.timestamp()) // g * g
        params = {
            "g": g,
            "agent": agent,
            "base": base,
            "end": until.timestamp(),
            "bucket": bucket_seconds,
        }
        sums = await self._db.read_aside(
            SERIES_ROLLED_SQL, params, action="read the call ledger's series"
        )
        counts = await self._db.read_aside(
            SERIES_HISTOGRAM_SQL, params, action="read the call ledger's series"
        )
        return rolled_series(
            [dict(row) for row in sums], [dict(row) for row in counts], base, bucket_seconds
        )

    async def user_cost(self, user_id: int, since: datetime) -> UserCost:
        rows = await self._db.read(
            "SELECT TOTAL(cost_usd), COUNT(*), "
            "COALESCE(SUM(cost_source = 'unpriced' AND outcome = 'ok'), 0) "
            "FROM ledger_calls WHERE user_id = ? AND at >= ?",
            (user_id, iso_utc(since)),
            action="read the user's costs",
        )
        cost, calls, unpriced = rows[0]
        return UserCost(float(cost or 0.0), int(calls or 0), int(unpriced or 0))

    async def claim_report(self, change_id: int, agent: str) -> bool:
        rows = await self._db.write(
            "INSERT INTO ledger_reports (change_id, agent, at) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING change_id",
            (change_id, agent, iso_utc(utcnow())),
            action="take a change report",
        )
        return bool(rows)

    async def reported(self, since_change_id: int) -> set[tuple[int, str]]:
        rows = await self._db.read(
            "SELECT change_id, agent FROM ledger_reports WHERE change_id >= ?",
            (since_change_id,),
            action="read the change reports",
        )
        return {(int(row[0]), str(row[1])) for row in rows}
