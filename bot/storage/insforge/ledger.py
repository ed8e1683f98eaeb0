"""The call ledger over InsForge: a batch is one `ignore-duplicates` upsert on `call_id` (safe to
repeat after a lost answer), the aggregates are the PostgreSQL functions of migrations 011 (raw
rows) and 016 (rollups, brought up to the rows by `ledger_roll_up`)."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.storage.insforge_client import InsForgeClient, Row
from bot.storage.ledger_models import CallStats, LedgerCall, SeriesPoint, TrialCall, UserCost
from bot.storage.ledger_rollups import HOUR, Periods, combine, periods, series_period
from bot.storage.models import utcnow
from bot.storage.sqlite.ledger import rolled_series, stats_row
from bot.storage.timeutil import as_utc, iso_utc

# Rows per request: a backlog written after an outage goes in bodies of bounded size.
CHUNK = 1000
# ledger_roll_up's step (migration 016).
ROLL_UP_LIMIT = 20_000


def ledger_row(call: LedgerCall) -> Row:
    return {
        "call_id": call.call_id,
        "at": iso_utc(call.at),
        "turn_id": call.turn_id,
        "chat_id": call.chat_id,
        "user_id": call.user_id,
        "pipeline": call.pipeline,
        "agent": call.agent,
        "role": call.role,
        "level": call.level,
        "spec": call.spec,
        "model": call.model,
        "provider": call.provider,
        "attempt": call.attempt,
        "fallback": call.fallback,
        "outcome": call.outcome,
        "latency_ms": call.latency_ms,
        "ttft_ms": call.ttft_ms,
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "cost_usd": call.cost_usd,
        "cost_source": call.cost_source,
        "config_version": call.config_version,
        "trial_id": call.trial_id,
        "trial_arm": call.trial_arm,
    }


def _when(value: Any) -> datetime:
    return as_utc(datetime.fromisoformat(str(value)))


def _rows(answer: Any) -> list[dict[str, Any]]:
    return [dict(item) for item in answer] if isinstance(answer, list) else []


class InsForgeLedgerRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def add_many(self, calls: Sequence[LedgerCall]) -> None:
        for start in range(0, len(calls), CHUNK):
            await self._client.upsert(
                "ledger_calls",
                [ledger_row(call) for call in calls[start : start + CHUNK]],
                on_conflict="call_id",
                ignore_duplicates=True,
            )

    async def roll_up(self) -> int:
        # Idempotent (each call is listed once), so safe to send again like a read.
        total = 0
        while True:
            done = int(await self._client.rpc("ledger_roll_up", {}, read_only=True) or 0)
            total += done
            if done < ROLL_UP_LIMIT:
                return total

    async def prune(self, before: datetime) -> int:
        gone = await self._client.rpc("ledger_prune", {"p_before": iso_utc(before)})
        return int(gone or 0)

    async def rate(self, turn_id: int, user_id: int, chat_id: int | None, up: bool) -> None:
        await self._client.rpc(
            "ledger_rate",
            {"p_turn_id": turn_id, "p_user_id": user_id, "p_chat_id": chat_id, "p_up": up},
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
            return await self._rolled_stats(cuts, agent)
        args: dict[str, Any] = {"p_since": iso_utc(since), "p_until": iso_utc(until)}
        if agent is not None:
            args["p_agent"] = agent
        if versions[0] is not None:
            args["p_min_version"] = versions[0]
        if versions[1] is not None:
            args["p_max_version"] = versions[1]
        answer = await self._client.rpc("ledger_stats", args, read_only=True)
        return [stats_row(row) for row in _rows(answer)]

    async def _rolled_stats(self, cuts: Periods, agent: str | None) -> builtins.list[CallStats]:
        await self.roll_up()
        args: dict[str, Any] = {
            "p_since": iso_utc(cuts.since),
            "p_until": iso_utc(cuts.until),
            "p_h1": cuts.h1,
            "p_d1": cuts.d1,
            "p_d2": cuts.d2,
            "p_h2": cuts.h2,
        }
        if agent is not None:
            args["p_agent"] = agent
        answer = await self._client.rpc("ledger_stats_rolled", args, read_only=True)
        sums: list[dict[str, Any]] = []
        histogram: list[dict[str, Any]] = []
        values: list[dict[str, Any]] = []
        for row in _rows(answer):
            if row["part"] == "sums":
                sums.append(row)
            elif row["part"] == "hist":
                histogram.extend(
                    {
                        "agent": row["agent"],
                        "model": row["grp"],
                        "kind": row["kind"],
                        "bucket": index,
                        "n": n,
                    }
                    for index, n in zip(row["buckets"], row["counts"], strict=True)
                )
            else:
                values.extend(
                    {"agent": row["agent"], "model": row["grp"], "latency_ms": lat, "ttft_ms": ttft}
                    for lat, ttft in zip(row["latencies"], row["ttfts"], strict=True)
                )
        return combine(sums, histogram, values)

    async def trial_stats(self, trial_id: int) -> builtins.list[CallStats]:
        answer = await self._client.rpc("ledger_trial_stats", {"p_trial": trial_id}, read_only=True)
        return [stats_row(row) for row in _rows(answer) if row.get("grp") is not None]

    async def trial_calls(
        self,
        trial_id: int,
        arm: str,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[TrialCall]:
        filters = [("trial_id", f"eq.{trial_id}"), ("trial_arm", f"eq.{arm}")]
        if since is not None:
            filters.append(("at", f"gte.{iso_utc(since)}"))
        if until is not None:
            filters.append(("at", f"lte.{iso_utc(until)}"))
        rows = await self._client.select(
            "ledger_calls",
            filters,
            select="at,turn_id,outcome,latency_ms,cost_usd,user_id",
            order="at.desc,id.desc",
            limit=limit,
        )
        return [
            TrialCall(
                at=_when(row["at"]),
                turn_id=int(row["turn_id"]) if row.get("turn_id") is not None else None,
                outcome=str(row["outcome"]),
                latency_ms=float(row["latency_ms"]),
                cost_usd=float(row["cost_usd"]) if row.get("cost_usd") is not None else None,
                user_id=int(row["user_id"]) if row.get("user_id") is not None else None,
            )
            for row in rows
        ]

    async def trial_call_count(self, trial_id: int, arm: str) -> int:
        return await self._client.count(
            "ledger_calls", {"trial_id": f"eq.{trial_id}", "trial_arm": f"eq.{arm}"}
        )

    async def trial_nth_call(self, trial_id: int, arm: str, n: int) -> datetime | None:
        rows = await self._client.select(
            "ledger_calls",
            {"trial_id": f"eq.{trial_id}", "trial_arm": f"eq.{arm}"},
            select="at",
            order="at.asc,id.asc",
            limit=1,
            offset=n - 1,
        )
        return _when(rows[0]["at"]) if rows else None

    async def series(
        self, agent: str, since: datetime, until: datetime, bucket_seconds: int
    ) -> builtins.list[SeriesPoint]:
        if bucket_seconds % HOUR == 0:
            await self.roll_up()
            g = series_period(bucket_seconds)
            base = int(since.timestamp()) // g * g
            rolled = await self._client.rpc(
                "ledger_series_rolled",
                {
                    "p_g": g,
                    "p_agent": agent,
                    "p_base": base,
                    "p_end": until.timestamp(),
                    "p_bucket": bucket_seconds,
                },
                read_only=True,
            )
            sums = _rows(rolled)
            counts = [
                {"b": row["b"], "model": row["model"], "bucket": index, "n": n}
                for row in sums
                for index, n in zip(row["buckets"] or [], row["counts"] or [], strict=True)
            ]
            for row in sums:
                row["cost"] = row["cost_usd"]
            return rolled_series(sums, counts, base, bucket_seconds)
        answer = await self._client.rpc(
            "ledger_series",
            {
                "p_agent": agent,
                "p_since": iso_utc(since),
                "p_until": iso_utc(until),
                "p_bucket": bucket_seconds,
            },
            read_only=True,
        )
        return [
            SeriesPoint(
                bucket=since + timedelta(seconds=int(row["b"]) * bucket_seconds),
                model=str(row["model"]),
                p95_ms=float(row["p95"]) if row.get("p95") is not None else None,
                cost_usd=float(row.get("cost_usd") or 0.0),
                turns=int(row.get("turns") or 0),
            )
            for row in _rows(answer)
        ]

    async def user_cost(self, user_id: int, since: datetime) -> UserCost:
        answer = await self._client.rpc(
            "ledger_user_cost", {"p_user_id": user_id, "p_since": iso_utc(since)}, read_only=True
        )
        rows = _rows(answer)
        if not rows:
            return UserCost(0.0, 0, 0)
        row = rows[0]
        return UserCost(
            float(row.get("cost_usd") or 0.0),
            int(row.get("calls") or 0),
            int(row.get("unpriced") or 0),
        )

    async def claim_report(self, change_id: int, agent: str) -> bool:
        rows = await self._client.upsert(
            "ledger_reports",
            {"change_id": change_id, "agent": agent, "at": iso_utc(utcnow())},
            on_conflict="change_id,agent",
            ignore_duplicates=True,
        )
        return bool(rows)

    async def reported(self, since_change_id: int) -> set[tuple[int, str]]:
        rows = await self._client.select(
            "ledger_reports", {"change_id": f"gte.{since_change_id}"}, select="change_id,agent"
        )
        return {(int(row["change_id"]), str(row["agent"])) for row in rows}
