"""`ArchiveRepo` over SQLite: archives in a table, their passages in an FTS5 index.

Storing or deleting an archive writes thousands of rows, so it runs as one transaction in the
database's worker thread (`SQLiteDatabase.transaction`), never on the loop; a search is one FTS5
query on the loop (a few milliseconds at 10,000 passages per user; `tests/bench/archives.py`).
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

from bot.storage.archive_models import Archive, ArchiveUsage, NewArchive, NewPassage, PassageHit
from bot.storage.models import utcnow
from bot.storage.repositories import ArchiveQuotaExceeded, StoreProgress
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import iso_utc

# bm25 weights per FTS column (owner, section, text): the owner token never ranks; a heading
# that names the query's words counts twice a word of the text.
_RANK = "bm25(archive_fts, 0.0, 2.0, 1.0)"

# The indexed values of a passage, the same on insert and on the contentless 'delete'.
_FTS_VALUES = "id, 'a' || archive_id, coalesce(section, ''), text"


def _archive(row: sqlite3.Row) -> Archive:
    return Archive.model_validate({key: row[key] for key in row.keys()})  # noqa: SIM118


def fts_string(term: str) -> str:
    """A term as an FTS5 string: whatever it holds, never query syntax."""
    return '"' + term.replace('"', '""') + '"'


def match_expression(archive_ids: Sequence[int], terms: Sequence[str]) -> str:
    owners = " OR ".join(fts_string(f"a{archive_id}") for archive_id in archive_ids)
    words = " OR ".join(fts_string(term) for term in terms)
    return f"owner : ({owners}) AND ({words})"


def _usage(conn: sqlite3.Connection, user_id: int, *, besides: int | None) -> ArchiveUsage:
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM archives "
        "WHERE user_id = ? AND id IS NOT ?",
        (user_id, besides),
    ).fetchone()
    return ArchiveUsage(files=int(row[0]), size_bytes=int(row[1]))


def _delete_sync(conn: sqlite3.Connection, archive_id: int) -> None:
    conn.execute(
        "INSERT INTO archive_fts (archive_fts, rowid, owner, section, text) "
        f"SELECT 'delete', {_FTS_VALUES} FROM archive_passages WHERE archive_id = ?",
        (archive_id,),
    )
    conn.execute("DELETE FROM archive_passages WHERE archive_id = ?", (archive_id,))
    conn.execute("DELETE FROM archives WHERE id = ?", (archive_id,))


class SQLiteArchiveRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def create(
        self,
        archive: NewArchive,
        passages: Sequence[NewPassage],
        *,
        max_files: int,
        max_bytes: int,
        replace: bool = False,
        progress: StoreProgress | None = None,
    ) -> Archive:
        key = archive.key()

        def store(conn: sqlite3.Connection) -> Archive:
            old: int | None = None
            if replace:
                found = conn.execute(
                    "SELECT id FROM archives WHERE user_id = ? AND name = ?",
                    (archive.user_id, archive.name),
                ).fetchone()
                old = int(found[0]) if found else None
            usage = _usage(conn, archive.user_id, besides=old)
            if usage.files + 1 > max_files:
                raise ArchiveQuotaExceeded("files", usage)
            if usage.size_bytes + archive.size_bytes > max_bytes:
                raise ArchiveQuotaExceeded("bytes", usage)
            if old is not None:
                _delete_sync(conn, old)
            row = conn.execute(
                "INSERT INTO archives (user_id, name, kind, size_bytes, page_count, "
                "passage_count, is_active, idempotency_key, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) RETURNING *",
                (
                    archive.user_id,
                    archive.name,
                    archive.kind,
                    archive.size_bytes,
                    archive.page_count,
                    len(passages),
                    key,
                    iso_utc(utcnow()),
                ),
            ).fetchone()
            stored = _archive(row)
            conn.executemany(
                "INSERT INTO archive_passages (archive_id, user_id, ordinal, page, section, text) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (stored.id, archive.user_id, p.ordinal, p.page, p.section, p.text)
                    for p in passages
                ),
            )
            conn.execute(
                "INSERT INTO archive_fts (rowid, owner, section, text) "
                f"SELECT {_FTS_VALUES} FROM archive_passages WHERE archive_id = ?",
                (stored.id,),
            )
            return stored

        stored = await self._db.transaction(store, action="store an archive")
        if progress is not None:
            await progress(len(passages), len(passages))
        return stored

    async def usage(self, user_id: int) -> ArchiveUsage:
        rows = await self._db.read(
            "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM archives WHERE user_id = ?",
            (user_id,),
            action="count archives",
        )
        return ArchiveUsage(files=int(rows[0][0]), size_bytes=int(rows[0][1]))

    async def list(self, user_id: int) -> builtins.list[Archive]:
        rows = await self._db.read(
            "SELECT * FROM archives WHERE user_id = ? ORDER BY id",
            (user_id,),
            action="list archives",
        )
        return [_archive(row) for row in rows]

    async def get(self, user_id: int, archive_id: int) -> Archive | None:
        rows = await self._db.read(
            "SELECT * FROM archives WHERE id = ? AND user_id = ?",
            (archive_id, user_id),
            action="read an archive",
        )
        return _archive(rows[0]) if rows else None

    async def set_active(self, user_id: int, archive_id: int, active: bool) -> Archive | None:
        rows = await self._db.write(
            "UPDATE archives SET is_active = ? WHERE id = ? AND user_id = ? RETURNING *",
            (1 if active else 0, archive_id, user_id),
            action="switch an archive",
        )
        return _archive(rows[0]) if rows else None

    async def delete(self, user_id: int, archive_id: int) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            found = conn.execute(
                "SELECT 1 FROM archives WHERE id = ? AND user_id = ?", (archive_id, user_id)
            ).fetchone()
            if found is None:
                return False
            _delete_sync(conn, archive_id)
            return True

        return await self._db.transaction(remove, action="delete an archive")

    async def search(
        self,
        user_id: int,
        terms: Sequence[str],
        *,
        limit: int = 5,
        archive_ids: Sequence[int] | None = None,
    ) -> builtins.list[PassageHit]:
        if not terms or limit <= 0:
            return []
        if archive_ids is None:
            rows = await self._db.read(
                "SELECT id FROM archives WHERE user_id = ? AND is_active = 1",
                (user_id,),
                action="search archives",
            )
        else:
            wanted = [int(archive_id) for archive_id in archive_ids][:500]
            if not wanted:
                return []
            marks = ", ".join("?" for _ in wanted)
            rows = await self._db.read(
                f"SELECT id FROM archives WHERE user_id = ? AND id IN ({marks})",
                (user_id, *wanted),
                action="search archives",
            )
        owned = [int(row[0]) for row in rows]
        if not owned:
            return []
        # The owner tokens pick this user's archives inside FTS5; the joins say it again.
        found = await self._db.read(
            f"SELECT p.id AS passage_id, p.archive_id, a.name AS document, p.page, p.section, "
            f"p.text, -{_RANK} AS score FROM archive_fts "
            "JOIN archive_passages p ON p.id = archive_fts.rowid "
            "JOIN archives a ON a.id = p.archive_id "
            f"WHERE archive_fts MATCH ? AND p.user_id = ? AND a.user_id = ? "
            f"ORDER BY {_RANK} LIMIT ?",
            (match_expression(owned, terms), user_id, user_id, limit),
            action="search archives",
        )
        return [_hit(row) for row in found]


def _hit(row: sqlite3.Row) -> PassageHit:
    data: dict[str, Any] = {key: row[key] for key in row.keys()}  # noqa: SIM118
    return PassageHit.model_validate(data)
