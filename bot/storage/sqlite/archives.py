"""`ArchiveRepo` over SQLite: archives in a table, their passages in an FTS5 index.

Storing or deleting an archive writes thousands of rows, so it runs as one transaction in the
database's worker thread (`SQLiteDatabase.transaction`), never on the loop; a search is a few
FTS5 queries on the loop (a few milliseconds at 10,000 passages per user;
`tests/bench/archives.py`).

What a search costs is bm25 over every passage it matches, so it first weighs the terms: how
many of the searched passages hold each (`count(*)` over the index, no ranking: ~0.5 ms; kept
per set of archives searched: archive ids are never given twice, so a new, deleted or switched
archive is a new key, never a stale one). Then, like the PostgreSQL function (migration 012):

- the rarest terms pick the candidates, up to `CANDIDATES` passages together, and every term
  ranks them (`owner AND (rare1 OR rare2) AND (rare1 OR rare2 OR common1 ...)`): a message of
  the notes' common words with one rare word ranks that word's passages, not 4,000;
- when some term picks none, the passages holding every term come first (an intersection);
- when there are still fewer than asked for, the passages holding all the terms that picked
  none (then the rarest three, two, one of them) fill the rest.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections import OrderedDict
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


def _owners(archive_ids: Sequence[int]) -> str:
    return (
        "owner : (" + " OR ".join(fts_string(f"a{archive_id}") for archive_id in archive_ids) + ")"
    )


def match_expression(
    archive_ids: Sequence[int],
    terms: Sequence[str],
    *,
    every: bool = False,
    ranked_by: Sequence[str] = (),
) -> str:
    """The MATCH for passages of `archive_ids` holding any of `terms` (`every`: all of them),
    ranked also by `ranked_by` (terms that add to bm25 without picking candidates)."""
    words = (" AND " if every else " OR ").join(fts_string(term) for term in terms)
    expression = f"{_owners(archive_ids)} AND ({words})"
    extra = [term for term in ranked_by if term not in terms]
    if extra:
        ranking = " OR ".join(fts_string(term) for term in [*terms, *extra])
        expression += f" AND ({ranking})"
    return expression


# The rarest terms of a message pick the passages to rank, as long as they hold at most this
# many together (the rarest term always picks): bm25 costs ~5 us a passage, and a message of
# the notes' common words matched 4,000-7,500 of 10,000 (25-40 ms).
CANDIDATES = 1000
# (archive ids searched, term) -> passages holding it; a few hundred users' words.
_REMEMBERED = 20_000


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
        self._counts: OrderedDict[tuple[tuple[int, ...], str], int] = OrderedDict()

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
                "SELECT id, passage_count FROM archives WHERE user_id = ? AND is_active = 1 "
                "ORDER BY id",
                (user_id,),
                action="search archives",
            )
        else:
            wanted = [int(archive_id) for archive_id in archive_ids][:500]
            if not wanted:
                return []
            marks = ", ".join("?" for _ in wanted)
            rows = await self._db.read(
                f"SELECT id, passage_count FROM archives WHERE user_id = ? AND id IN ({marks}) "
                "ORDER BY id",
                (user_id, *wanted),
                action="search archives",
            )
        owned = [int(row[0]) for row in rows]
        if not owned:
            return []
        counts = {term: await self._count(owned, term) for term in terms}
        present = sorted((t for t in terms if counts[t] > 0), key=lambda t: counts[t])
        if not present:
            return []
        # The rarest terms pick the candidates, up to CANDIDATES passages (the rarest always);
        # every term ranks them.
        picking: builtins.list[str] = []
        held = 0
        for term in present:
            if picking and held + counts[term] > CANDIDATES:
                break
            picking.append(term)
            held += counts[term]
        rest = present[len(picking) :]
        hits: dict[int, PassageHit] = {}

        async def add(terms: Sequence[str], *, every: bool, ranked_by: Sequence[str] = ()) -> None:
            expression = match_expression(owned, terms, every=every, ranked_by=ranked_by)
            for hit in await self._ranked(user_id, expression, limit):
                hits.setdefault(hit.passage_id, hit)

        if rest:
            # First the passages that hold every term (an intersection: few to rank).
            await add(present, every=True)
        if len(hits) < limit:
            # The other terms rank the candidates too, unless they are all returned anyway (the
            # ranking clause walks the common terms' lists: 1-3 ms).
            await add(picking, every=False, ranked_by=present if held > limit else ())
        # Still too few: the passages holding all the other terms, then the rarest few of them.
        for size in dict.fromkeys([len(rest), *(k for k in (3, 2, 1) if k < len(rest))]):
            if len(hits) >= limit or size == 0:
                break
            await add(rest[:size], every=True)
        return builtins.list(hits.values())[:limit]

    async def _ranked(self, user_id: int, expression: str, limit: int) -> builtins.list[PassageHit]:
        # The owner tokens pick this user's archives inside FTS5; the joins say it again.
        found = await self._db.read(
            f"SELECT p.id AS passage_id, p.archive_id, a.name AS document, p.page, p.section, "
            f"p.text, -{_RANK} AS score FROM archive_fts "
            "JOIN archive_passages p ON p.id = archive_fts.rowid "
            "JOIN archives a ON a.id = p.archive_id "
            f"WHERE archive_fts MATCH ? AND p.user_id = ? AND a.user_id = ? "
            f"ORDER BY {_RANK} LIMIT ?",
            (expression, user_id, user_id, limit),
            action="search archives",
        )
        return [_hit(row) for row in found]

    async def _count(self, owned: Sequence[int], term: str) -> int:
        """How many passages of the archives `owned` hold `term` (no ranking: cheap)."""
        key = (tuple(owned), term)
        known = self._counts.get(key)
        if known is not None:
            self._counts.move_to_end(key)
            return known
        rows = await self._db.read(
            "SELECT count(*) FROM archive_fts WHERE archive_fts MATCH ?",
            (f"{_owners(owned)} AND {fts_string(term)}",),
            action="search archives",
        )
        count = int(rows[0][0])
        self._counts[key] = count
        if len(self._counts) > _REMEMBERED:
            self._counts.popitem(last=False)
        return count


def _hit(row: sqlite3.Row) -> PassageHit:
    data: dict[str, Any] = {key: row[key] for key in row.keys()}  # noqa: SIM118
    return PassageHit.model_validate(data)
