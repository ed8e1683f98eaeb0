"""One SQLite file, shared safely by many coroutines.

- One writer connection: aiosqlite runs every call of a connection on that connection's own
  thread, in order, so concurrent writers are serialised without a lock in the event loop. Every
  write is a single autocommitted statement (`... RETURNING *`), so there is no transaction left
  open between two awaits.
- One reader connection (WAL mode): reads never wait behind a queue of writes, and see every write
  that has returned (WAL readers see all committed transactions).
- `busy_timeout` is the retry for a file locked by another process; past it the caller gets
  `StorageUnavailable`.
- Before each write the file is checked to still be the one opened: a database file removed or
  replaced under a running bot would otherwise take writes into an unlinked inode and lose them
  at the next restart. Such a write fails loudly instead.

Every sqlite3/aiosqlite exception is translated here, at one boundary, into the `StorageError`
tree of `bot.storage.repositories`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.storage.repositories import (
    StorageConflict,
    StorageError,
    StorageRejected,
    StorageUnavailable,
)
from bot.storage.sqlite.schema import SchemaStep, migrate

log = logging.getLogger(__name__)

Params = Sequence[Any]

_UNAVAILABLE_HINTS = (
    "locked",
    "busy",
    "readonly",
    "read-only",
    "unable to open",
    "disk i/o",
    "disk is full",
    "closed",
)


@contextlib.contextmanager
def translate_errors(action: str) -> Iterator[None]:
    """Turn sqlite3/aiosqlite failures into `StorageError`s that say what failed."""
    try:
        yield
    except StorageError:
        raise
    except sqlite3.IntegrityError as exc:
        text = str(exc)
        if "UNIQUE" in text or "PRIMARY KEY" in text:
            raise StorageConflict(f"SQLite refused to {action}: {text}", code="23505") from exc
        raise StorageRejected(f"SQLite refused to {action}: {text}") from exc
    except (sqlite3.OperationalError, sqlite3.ProgrammingError) as exc:
        text = str(exc)
        if any(hint in text.lower() for hint in _UNAVAILABLE_HINTS):
            raise StorageUnavailable(f"SQLite could not {action}: {text} (DATABASE_URL)") from exc
        raise StorageError(f"SQLite could not {action}: {text}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"SQLite could not {action}: {exc}") from exc
    except ValueError as exc:
        # aiosqlite: "Connection closed" / "no active connection".
        if "connection" in str(exc).lower():
            raise StorageUnavailable(
                f"SQLite could not {action}: the database connection is closed"
            ) from exc
        raise


class SQLiteDatabase:
    """The connections to one SQLite file (or `:memory:`)."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._file_id: tuple[int, int] | None = None

    @property
    def in_memory(self) -> bool:
        return self.path in {":memory:", ""}

    async def open(self, *, migrate_to: int | None = None) -> list[SchemaStep]:
        """Open the file (creating its folder), switch to WAL and bring the schema up to date."""
        if self._writer is not None:
            return []
        if not self.in_memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailable(
                    f"cannot create the folder for the SQLite database {self.path!r}: {exc} "
                    "(DATABASE_URL)"
                ) from exc
        with translate_errors(f"open {self.path!r}"):
            self._writer = await self._connect()
            try:
                await self._writer.execute("PRAGMA journal_mode=WAL")
                await self._writer.execute("PRAGMA synchronous=NORMAL")
                await self._writer.execute("PRAGMA foreign_keys=ON")
                applied = await migrate(self._writer, target=migrate_to)
                if self.in_memory:
                    self._reader = self._writer
                else:
                    self._reader = await self._connect()
                    await self._reader.execute("PRAGMA query_only=ON")
                    self._file_id = self._stat_file()
            except BaseException:
                await self.close()
                raise
        for step in applied:
            log.info("SQLite schema: applied step %d (%s)", step.version, step.name)
        return applied

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        conn.row_factory = sqlite3.Row
        await conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return conn

    def _stat_file(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self, action: str) -> None:
        if self._file_id is None:
            return
        if self._stat_file() != self._file_id:
            raise StorageUnavailable(
                f"SQLite could not {action}: the database file {self.path!r} was removed or "
                "replaced while the bot was running; restart the bot (DATABASE_URL)"
            )

    def _conn(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StorageUnavailable("the SQLite database is not open (call connect() first)")
        return conn

    async def read(self, sql: str, params: Params = (), *, action: str) -> list[sqlite3.Row]:
        with translate_errors(action):
            conn = self._conn(self._reader)
            return list(await conn.execute_fetchall(sql, params))

    async def write(self, sql: str, params: Params = (), *, action: str) -> list[sqlite3.Row]:
        """Run one autocommitted write statement; its `RETURNING` rows."""
        with translate_errors(action):
            conn = self._conn(self._writer)
            self._check_file(action)
            return list(await conn.execute_fetchall(sql, params))

    async def ping(self) -> None:
        await self.read("SELECT 1", action="answer a ping")
        with translate_errors("answer a ping"):
            self._check_file("answer a ping")

    async def close(self) -> None:
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        if reader is not None and reader is not writer:
            with contextlib.suppress(Exception):
                await reader.close()
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()

    @property
    def writer(self) -> aiosqlite.Connection:
        """The writer connection, for schema tools and tests."""
        return self._conn(self._writer)
