"""The intake in a SQLite file of its own, beside the main database.

A file of its own: the intake must keep working while the main database does not (InsForge
down), and its writes never wait for the main file's lock. Statements run on the event loop's
thread, like the main SQLite backend's (decision 0005): each is one small autocommitted write
in WAL mode with `synchronous=NORMAL`, an append to the WAL without fsync. That survives a crash
or a SIGKILL of the process (the data is in the OS's page cache), not a power cut.

Answered rows are kept a day (`done = 1`), so an update Telegram re-delivers (a webhook whose 200
was lost) is recognized by its id and not answered twice; they are pruned at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bot.intake.store import REPLY, UPDATE, IntakeError, NewUpdate, QueueEntry, Stored

log = logging.getLogger(__name__)

KEEP_DONE_SECONDS = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS intake (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('update', 'reply')),
    update_id INTEGER NOT NULL,
    chat_id INTEGER,
    body TEXT NOT NULL,
    received_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS intake_update_id ON intake (update_id) WHERE kind = 'update';
CREATE INDEX IF NOT EXISTS intake_open ON intake (update_id) WHERE done = 0;
CREATE TABLE IF NOT EXISTS intake_offset (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_update_id INTEGER NOT NULL
);
"""


class SqliteIntake:
    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise IntakeError("the intake is not started")
        return self._conn

    async def start(self) -> None:
        if self._conn is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=2000")
            conn.executescript(_SCHEMA)
            conn.execute(
                "DELETE FROM intake WHERE done = 1 AND received_at < ?",
                (time.time() - KEEP_DONE_SECONDS,),
            )
        except sqlite3.Error as exc:
            raise IntakeError(
                f"cannot open the intake file {self.path} ({exc}): INTAKE_PATH"
            ) from exc
        self._conn = conn

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[sqlite3.Connection]:
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise IntakeError(f"cannot {action} in {self.path}: {exc}") from exc

    async def offset(self) -> int | None:
        row = self._db().execute("SELECT next_update_id FROM intake_offset").fetchone()
        return int(row[0]) if row else None

    async def put(self, updates: Sequence[NewUpdate], *, offset: int | None) -> list[str | None]:
        now = time.time()
        keys: list[str | None] = []
        with self._transaction("store updates") as db:
            for update_id, chat_id, body in updates:
                cur = db.execute(
                    "INSERT OR IGNORE INTO intake (kind, update_id, chat_id, body, "
                    "received_at) VALUES ('update', ?, ?, ?, ?)",
                    (update_id, chat_id, body, now),
                )
                keys.append(str(cur.lastrowid) if cur.rowcount else None)
            if offset is not None:
                db.execute(
                    "INSERT INTO intake_offset (id, next_update_id) VALUES (1, ?) "
                    "ON CONFLICT (id) DO UPDATE SET next_update_id = "
                    "max(next_update_id, excluded.next_update_id)",
                    (offset,),
                )
        return keys

    async def put_queued(
        self, update: NewUpdate, queue: QueueEntry
    ) -> tuple[str | None, bool | None]:
        # The file is this process's alone: its entries join no queue shared with replicas.
        (key,) = await self.put([update], offset=None)
        return key, None

    async def done(self, key: str, *, leave: QueueEntry | None = None) -> bool:
        try:
            self._db().execute("UPDATE intake SET done = 1 WHERE id = ?", (int(key),))
        except sqlite3.Error as exc:
            raise IntakeError(f"cannot mark an update answered in {self.path}: {exc}") from exc
        return False

    async def defer_reply(
        self, update_key: str | None, update_id: int, chat_id: int, body: str
    ) -> str:
        with self._transaction("store a reply") as db:
            cur = db.execute(
                "INSERT INTO intake (kind, update_id, chat_id, body, received_at) "
                "VALUES ('reply', ?, ?, ?, ?)",
                (update_id, chat_id, body, time.time()),
            )
            if update_key is not None:
                db.execute("UPDATE intake SET done = 1 WHERE id = ?", (int(update_key),))
        return str(cur.lastrowid)

    async def reclaim(self, *, everything: bool = False) -> list[Stored]:
        # One process owns the file: whatever is open at its start was left by a previous run.
        # Called once per process (`everything` changes nothing here).
        db = self._db()
        try:
            db.execute("UPDATE intake SET attempts = attempts + 1 WHERE done = 0")
            rows = db.execute(
                "SELECT id, kind, update_id, chat_id, body, received_at, attempts FROM intake "
                "WHERE done = 0"
            ).fetchall()
        except sqlite3.Error as exc:
            raise IntakeError(f"cannot read the intake {self.path}: {exc}") from exc
        entries = [
            Stored(str(r[0]), REPLY if r[1] == REPLY else UPDATE, r[2], r[3], r[4], r[5], r[6])
            for r in rows
        ]
        return sorted(entries, key=lambda e: e.order)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
