"""`ReplayRepo` over SQLite: the `replay_inputs` table (schema step 14)."""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bot.storage.replay_models import ReplayInput
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import as_utc, iso_utc

COLUMNS = (
    "input_id, at, agent, pipeline, chat_id, user_id, turn_id, preference, spec, provider, "
    "model, messages, schema, temperature, max_tokens, streamed, output, latency_ms, "
    "prompt_tokens, completion_tokens, cost_usd"
)
_ROW = "(" + ", ".join("?" * (COLUMNS.count(",") + 1)) + ")"
# Rows per INSERT: under SQLite's 32766 bound parameters.
CHUNK = 500

# Each agent's newest `keep` rows stay (the id is arrival order: AUTOINCREMENT never reuses).
PRUNE = """
DELETE FROM replay_inputs WHERE id IN (
    SELECT id FROM (
        SELECT id, ROW_NUMBER() OVER (PARTITION BY agent ORDER BY id DESC) AS n
        FROM replay_inputs
    ) WHERE n > ?
)
"""


def values(item: ReplayInput) -> tuple[object, ...]:
    return (
        item.input_id,
        iso_utc(item.at),
        item.agent,
        item.pipeline,
        item.chat_id,
        item.user_id,
        item.turn_id,
        item.preference,
        item.spec,
        item.provider,
        item.model,
        json.dumps(item.messages, ensure_ascii=False),
        item.schema,
        item.temperature,
        item.max_tokens,
        int(item.streamed),
        item.output,
        item.latency_ms,
        item.prompt_tokens,
        item.completion_tokens,
        item.cost_usd,
    )


def replay_input(row: dict[str, Any]) -> ReplayInput:
    """A stored row (either backend's) as a `ReplayInput`."""
    messages = row["messages"]
    if isinstance(messages, str):
        messages = json.loads(messages)
    at = row["at"]
    return ReplayInput(
        at=as_utc(datetime.fromisoformat(at) if isinstance(at, str) else at),
        agent=row["agent"],
        pipeline=row["pipeline"],
        chat_id=row["chat_id"],
        user_id=row["user_id"],
        turn_id=row["turn_id"],
        preference=row["preference"],
        spec=row["spec"],
        provider=row["provider"],
        model=row["model"],
        messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
        schema=row["schema"],
        temperature=row["temperature"],
        max_tokens=row["max_tokens"],
        streamed=bool(row["streamed"]),
        output=row["output"],
        latency_ms=float(row["latency_ms"]),
        prompt_tokens=int(row["prompt_tokens"]),
        completion_tokens=int(row["completion_tokens"]),
        cost_usd=row["cost_usd"],
        input_id=row["input_id"],
        id=row["id"],
    )


def _dict(row: sqlite3.Row) -> dict[str, Any]:
    return dict(zip(row.keys(), row, strict=True))


class SQLiteReplayRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def add_many(self, inputs: Sequence[ReplayInput]) -> None:
        for start in range(0, len(inputs), CHUNK):
            chunk = inputs[start : start + CHUNK]
            params: list[object] = []
            for item in chunk:
                params.extend(values(item))
            await self._db.write(
                f"INSERT OR IGNORE INTO replay_inputs ({COLUMNS}) VALUES "
                + ", ".join([_ROW] * len(chunk)),
                params,
                action="keep replay inputs",
            )

    async def prune(self, keep: int) -> int:
        rows = await self._db.write(PRUNE + " RETURNING id", (keep,), action="prune replay inputs")
        return len(rows)

    async def recent(self, agent: str, limit: int) -> builtins.list[ReplayInput]:
        rows = await self._db.read(
            "SELECT * FROM replay_inputs WHERE agent = ? ORDER BY id DESC LIMIT ?",
            (agent, limit),
            action="read replay inputs",
        )
        return [replay_input(_dict(row)) for row in reversed(rows)]

    async def clear_chat(self, chat_id: int) -> int:
        rows = await self._db.write(
            "DELETE FROM replay_inputs WHERE chat_id = ? RETURNING id",
            (chat_id,),
            action="forget replay inputs",
        )
        return len(rows)
