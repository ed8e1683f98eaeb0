"""One SQLite file, used from the event loop.

- Statements run on the event loop's own thread, on one connection. Every statement the bot makes
  is one indexed read or one autocommitted write (`... RETURNING *`) of tens of microseconds, and
  in WAL mode with `synchronous=NORMAL` a commit is an append to the WAL, with no fsync. Handing
  each statement to a worker thread (aiosqlite) cost more CPU than the statement itself and made it
  wait for the GIL behind the loop's work; decision 0005 has the figures.
- Nothing on the loop waits for a lock: its connection has `busy_timeout=0`. A statement that
  meets a lock held by another process (SQLITE_BUSY/SQLITE_LOCKED) has not run; it is run again on
  a second connection in a worker thread, which waits up to `busy_timeout` for the lock. Past it
  the caller gets `StorageUnavailable`.
- The WAL's checkpoints (which fsync) run in that worker too: the loop's connection never
  checkpoints (`wal_autocheckpoint=0`); every `CHECKPOINT_EVERY` writes the worker runs a PASSIVE
  checkpoint, which never blocks a writer.
- Before each write the file is checked to still be the one opened: a database file removed or
  replaced under a running bot would otherwise take writes into an unlinked inode and lose them
  at the next restart. Such a write fails loudly instead.

Every sqlite3 exception is translated here, at one boundary, into the `StorageError` tree of
`bot.storage.repositories`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from bot.storage.repositories import (
    StorageConflict,
    StorageError,
    StorageRejected,
    StorageUnavailable,
)
from bot.storage.sqlite.schema import SchemaStep, migrate

log = logging.getLogger(__name__)

# Positional (`?`) or named (`:name`) parameters.
Params = Sequence[Any] | Mapping[str, Any]
T = TypeVar("T")

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
    """Turn sqlite3 failures into `StorageError`s that say what failed."""
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


# A PASSIVE checkpoint every this many writes keeps the WAL near SQLite's own default of 1000
# pages (a write appends 2-4 pages: the row and its indexes).
CHECKPOINT_EVERY = 300

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """True when the statement did not run because another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _BUSY_CODES


class SQLiteDatabase:
    """The connections to one SQLite file (or `:memory:`)."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        # The worker thread and its connection: statements that must wait for a lock, checkpoints.
        self._worker: ThreadPoolExecutor | None = None
        self._worker_conn: sqlite3.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._writes_since_checkpoint = 0
        self._checkpoint: asyncio.Future[None] | None = None

    @property
    def in_memory(self) -> bool:
        return self.path in {":memory:", ""}

    async def open(self, *, migrate_to: int | None = None) -> list[SchemaStep]:
        """Open the file (creating its folder), switch to WAL and bring the schema up to date."""
        if self._conn is not None:
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
            # Off the loop: the schema step may wait up to busy_timeout for another process.
            conn, applied = await asyncio.to_thread(self._open_sync, migrate_to)
        self._conn = conn
        if not self.in_memory:
            self._file_id = self._stat_file()
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-wait")
        for step in applied:
            log.info("SQLite schema: applied step %d (%s)", step.version, step.name)
        return applied

    def _open_sync(self, migrate_to: int | None) -> tuple[sqlite3.Connection, list[SchemaStep]]:
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            applied = migrate(conn, target=migrate_to)
            # From here on the connection is the loop's: it never waits, and never checkpoints.
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            conn.close()
            raise
        return conn, applied

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: each connection is used by one thread at a time (the loop's
        # after `open` hands it over; the worker's only in the worker), never concurrently.
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
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

    def _open_conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageUnavailable("the SQLite database is not open (call connect() first)")
        return self._conn

    async def read(self, sql: str, params: Params = (), *, action: str) -> list[sqlite3.Row]:
        with translate_errors(action):
            return await self._execute(self._open_conn(), sql, params)

    async def read_aside(self, sql: str, params: Params = (), *, action: str) -> list[sqlite3.Row]:
        """A long read (an aggregate over many rows: `/stats`) in the worker thread, so the loop
        keeps serving messages while it runs. In memory (no worker) it runs here."""
        with translate_errors(action):
            self._open_conn()
            if self._worker is None:
                return await self._execute(self._open_conn(), sql, params)
            rows: list[sqlite3.Row] = await self._in_worker(self._worker_execute, sql, params)
            return rows

    async def write(self, sql: str, params: Params = (), *, action: str) -> list[sqlite3.Row]:
        """Run one autocommitted write statement; its `RETURNING` rows."""
        with translate_errors(action):
            conn = self._open_conn()
            self._check_file(action)
            rows = await self._execute(conn, sql, params)
        self._count_write()
        return rows

    async def transaction(self, work: Callable[[sqlite3.Connection], T], *, action: str) -> T:
        """Run `work(conn)` as one write transaction: committed when it returns, rolled back when
        it raises (its exception, translated, reaches the caller). For bulk writes (an
        archive's thousands of passages): it runs in the worker thread, which waits for the write
        lock, so the loop is never held for the whole batch. In memory (no worker) it runs here.
        """
        with translate_errors(action):
            self._open_conn()
            self._check_file(action)
            if self._worker is None:
                result = self._transaction_sync(self._open_conn(), work)
            else:
                result = await self._in_worker(self._worker_transaction, work)
        self._count_write()
        return result

    def _worker_transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._transaction_sync(self._worker_connection(), work)

    @staticmethod
    def _transaction_sync(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def _execute(self, conn: sqlite3.Connection, sql: str, params: Params) -> list[Any]:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or self._worker is None:
                raise
            # Another process holds a lock: the statement did not run. Wait for the lock in the
            # worker thread, not on the loop.
            if conn.in_transaction:
                conn.rollback()
            log.debug("SQLite busy on the loop; waiting for the lock in the worker: %s", exc)
        rows: list[Any] = await self._in_worker(self._worker_execute, sql, params)
        return rows

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        worker = self._worker
        if worker is None:
            raise StorageUnavailable("the SQLite database is closed")
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    def _worker_connection(self) -> sqlite3.Connection:
        if self._worker_conn is None:
            self._worker_conn = self._connect()
        return self._worker_conn

    def _worker_execute(self, sql: str, params: Params) -> list[Any]:
        return self._worker_connection().execute(sql, params).fetchall()

    def _worker_checkpoint(self) -> None:
        self._worker_connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _worker_close(self) -> None:
        conn, self._worker_conn = self._worker_conn, None
        if conn is not None:
            conn.close()

    def _count_write(self) -> None:
        if self._worker is None:
            return  # in memory: no WAL
        self._writes_since_checkpoint += 1
        if self._writes_since_checkpoint < CHECKPOINT_EVERY or self._checkpoint is not None:
            return
        self._writes_since_checkpoint = 0
        self._checkpoint = asyncio.ensure_future(self._in_worker(self._worker_checkpoint))
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if future.cancelled():
            return
        error = future.exception()
        # While closing, a checkpoint the closed worker refused is no loss: the last connection
        # to close checkpoints the WAL itself.
        if error is not None and self._conn is not None:
            # The WAL keeps growing until a checkpoint succeeds; nothing is lost meanwhile.
            log.warning("SQLite WAL checkpoint failed: %s", error)

    async def ping(self) -> None:
        await self.read("SELECT 1", action="answer a ping")
        with translate_errors("answer a ping"):
            self._check_file("answer a ping")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        worker, self._worker = self._worker, None
        checkpoint = self._checkpoint
        if worker is not None:
            # The worker runs its queue in order: once its connection is closed, every statement
            # handed to it before has finished.
            with contextlib.suppress(Exception):
                await asyncio.get_running_loop().run_in_executor(worker, self._worker_close)
            worker.shutdown(wait=False)
        if checkpoint is not None:
            # Its outcome is `_checkpoint_done`'s; `wait` never raises it, and our own
            # cancellation still propagates.
            await asyncio.wait([checkpoint])
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
