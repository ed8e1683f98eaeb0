"""`AccessRepo` over SQLite: the `access_list` table (schema step 9, insforge/migrations/013)."""

from __future__ import annotations

import builtins
import sqlite3

from bot.storage.access_models import AccessEntry, AccessStatus
from bot.storage.models import utcnow
from bot.storage.repositories import StorageError
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import iso_utc


def _entry(row: sqlite3.Row) -> AccessEntry:
    data = {key: row[key] for key in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a Mapping)
    data["notified"] = bool(data["notified"])
    return AccessEntry.model_validate(data)


class SQLiteAccessRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def get(self, subject_id: int) -> AccessEntry | None:
        rows = await self._db.read(
            "SELECT * FROM access_list WHERE subject_id = ?",
            (subject_id,),
            action="read who may use the bot",
        )
        return _entry(rows[0]) if rows else None

    async def list(self) -> builtins.list[AccessEntry]:
        rows = await self._db.read(
            "SELECT * FROM access_list ORDER BY updated_at DESC",
            action="read who may use the bot",
        )
        return [_entry(row) for row in rows]

    async def create(self, entry: AccessEntry) -> AccessEntry | None:
        now = iso_utc(utcnow())
        rows = await self._db.write(
            "INSERT INTO access_list (subject_id, status, label, notified, waiting_update, "
            "admin_messages, decided_by, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject_id) DO NOTHING RETURNING *",
            (
                entry.subject_id,
                entry.status,
                entry.label,
                int(entry.notified),
                entry.waiting_update,
                entry.admin_messages,
                entry.decided_by,
                now,
                now,
            ),
            action="record a stranger",
        )
        return _entry(rows[0]) if rows else None

    async def set_status(
        self, subject_id: int, status: AccessStatus, *, decided_by: str, label: str | None = None
    ) -> AccessEntry:
        now = iso_utc(utcnow())
        rows = await self._db.write(
            "INSERT INTO access_list (subject_id, status, label, notified, decided_by, "
            "created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?, ?) "
            "ON CONFLICT (subject_id) DO UPDATE SET status = excluded.status, "
            "label = coalesce(excluded.label, access_list.label), notified = 0, "
            "decided_by = excluded.decided_by, "
            "updated_at = excluded.updated_at RETURNING *",
            (subject_id, status, label, decided_by, now, now),
            action="change who may use the bot",
        )
        if not rows:
            raise StorageError("SQLite returned no row for access_list")
        return _entry(rows[0])

    async def decide_pending(
        self, subject_id: int, status: AccessStatus, *, decided_by: str
    ) -> AccessEntry | None:
        rows = await self._db.write(
            "UPDATE access_list SET status = ?, notified = 0, decided_by = ?, updated_at = ? "
            "WHERE subject_id = ? AND status = 'pending' RETURNING *",
            (status, decided_by, iso_utc(utcnow()), subject_id),
            action="decide on a stranger",
        )
        return _entry(rows[0]) if rows else None

    async def update(
        self,
        subject_id: int,
        *,
        admin_messages: str | None = None,
        notified: bool | None = None,
        clear_waiting: bool = False,
    ) -> None:
        sets: list[str] = []
        params: list[object] = []
        if admin_messages is not None:
            sets.append("admin_messages = ?")
            params.append(admin_messages)
        if notified is not None:
            sets.append("notified = ?")
            params.append(int(notified))
        if clear_waiting:
            sets.append("waiting_update = NULL")
        if not sets:
            return
        await self._db.write(
            f"UPDATE access_list SET {', '.join(sets)}, updated_at = ? WHERE subject_id = ?",
            (*params, iso_utc(utcnow()), subject_id),
            action="update who may use the bot",
        )

    async def claim_notice(self, subject_id: int) -> bool:
        rows = await self._db.write(
            "UPDATE access_list SET notified = 1 WHERE subject_id = ? AND notified = 0 "
            "RETURNING subject_id",
            (subject_id,),
            action="record a notice",
        )
        return bool(rows)
