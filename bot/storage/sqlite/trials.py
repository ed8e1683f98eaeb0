"""`TrialRepo` over SQLite: the `trials` table (schema step 10)."""

from __future__ import annotations

import builtins
import sqlite3

from bot.storage.models import utcnow
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import iso_utc
from bot.storage.trial_models import TrialRow, TrialStatus

_COLUMNS = (
    "id, agent, candidate, share, min_calls, started_by, started_at, status, ended_at, "
    "ended_by, reason"
)


def _trial(row: sqlite3.Row) -> TrialRow:
    return TrialRow.model_validate(dict(zip(row.keys(), row, strict=True)))


class SQLiteTrialRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def running(self) -> builtins.list[TrialRow]:
        rows = await self._db.read(
            f"SELECT {_COLUMNS} FROM trials WHERE status = 'running' ORDER BY agent",
            action="read the running trials",
        )
        return [_trial(row) for row in rows]

    async def get(self, trial_id: int) -> TrialRow | None:
        rows = await self._db.read(
            f"SELECT {_COLUMNS} FROM trials WHERE id = ?", (trial_id,), action="read a trial"
        )
        return _trial(rows[0]) if rows else None

    async def ended(self, limit: int) -> builtins.list[TrialRow]:
        rows = await self._db.read(
            f"SELECT {_COLUMNS} FROM trials WHERE status <> 'running' "
            "ORDER BY ended_at DESC, id DESC LIMIT ?",
            (limit,),
            action="read the ended trials",
        )
        return [_trial(row) for row in rows]

    async def start(
        self, agent: str, candidate: str, share: float, min_calls: int, *, started_by: str
    ) -> TrialRow:
        rows = await self._db.write(
            "INSERT INTO trials (agent, candidate, share, min_calls, started_by, started_at) "
            f"VALUES (?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
            (agent, candidate, share, min_calls, started_by, iso_utc(utcnow())),
            action="start a trial",
        )
        return _trial(rows[0])

    async def end(
        self, trial_id: int, status: TrialStatus, *, by: str, reason: str | None = None
    ) -> bool:
        rows = await self._db.write(
            "UPDATE trials SET status = ?, ended_at = ?, ended_by = ?, reason = ? "
            "WHERE id = ? AND status = 'running' RETURNING id",
            (status, iso_utc(utcnow()), by, reason, trial_id),
            action="end a trial",
        )
        return bool(rows)
