"""The call ledger over SQLite: batched inserts, aggregates in SQL (window functions for the
percentiles, nearest rank), long reads and the pruning off the event loop's thread."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.storage.ledger_models import CallStats, LedgerCall, SeriesPoint, TrialCall, UserCost
from bot.storage.models import utcnow
from bot.storage.sqlite.database import SQLiteDatabase
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

    async def prune(self, before: datetime) -> int:
        cutoff = iso_utc(before)

        def delete(conn: sqlite3.Connection) -> int:
            gone = conn.execute("DELETE FROM ledger_calls WHERE at < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM ledger_ratings WHERE at < ?", (cutoff,))
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
    ) -> builtins.list[CallStats]:
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
