"""What only the SQLite backend does: its file, WAL, forward migrations, and refusing to write into
a file that is gone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.storage.factory import create_storage
from bot.storage.insforge import InsForgeStorage
from bot.storage.models import ModelCatalogRow, ModelConfigChange, StoredMessage
from bot.storage.repositories import StorageConfigError, StorageUnavailable
from bot.storage.sqlite import LATEST_VERSION, STEPS, SQLiteDatabase, SQLiteStorage
from bot.storage.sqlite import database as sqlite_database


async def test_default_storage_is_a_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "bot.db"
    settings = load_settings(_env_file=None, database_url=f"sqlite:///{path}")
    storage = create_storage(settings)
    assert isinstance(storage, SQLiteStorage)
    await storage.connect()
    try:
        assert storage.backend == "sqlite"
        await storage.messages.add(StoredMessage(chat_id=1, role="user", text="x"))
    finally:
        await storage.close()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    assert versions == [step.version for step in STEPS]


def test_insforge_url_selects_insforge_and_needs_its_key() -> None:
    settings = load_settings(
        _env_file=None, insforge_url="http://127.0.0.1:9", insforge_api_key="k"
    )
    storage = create_storage(settings)
    assert isinstance(storage, InsForgeStorage)
    assert storage.backend == "insforge"
    with pytest.raises(StorageConfigError, match="INSFORGE_API_KEY"):
        create_storage(load_settings(_env_file=None, insforge_url="http://127.0.0.1:9"))


async def test_an_old_database_is_migrated_forward_keeping_its_rows(tmp_path: Path) -> None:
    path = str(tmp_path / "bot.db")
    old = SQLiteDatabase(path)
    await old.open(migrate_to=1)  # a database written by an older bot
    await old.write(
        "INSERT INTO messages (chat_id, role, text, created_at) VALUES (1, 'user', 'old', "
        "'2024-01-01T00:00:00.000000+00:00') RETURNING id",
        action="seed",
    )
    await old.close()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert "agent_model_config" not in tables

    storage = SQLiteStorage(path)
    applied = await storage.migrate()
    try:
        assert [step.version for step in applied] == [step.version for step in STEPS[1:]]
        assert [m.text for m in await storage.messages.recent(1)] == ["old"]
        await storage.model_config.upsert("coach", "a/b", None)
        assert len(await storage.model_config.get_all_active()) == 1
    finally:
        await storage.close()
    again = SQLiteStorage(path)
    try:
        assert await again.migrate() == []
    finally:
        await again.close()


async def test_a_version_2_database_gains_idempotency_keys_keeping_its_rows(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.db")
    old = SQLiteDatabase(path)
    await old.open(migrate_to=2)
    for text in ("first", "second"):
        await old.write(
            "INSERT INTO messages (chat_id, role, text, created_at) VALUES (1, 'user', ?, "
            "'2024-01-01T00:00:00.000000+00:00') RETURNING id",
            (text,),
            action="seed",
        )
    await old.write(
        "INSERT INTO agent_model_config_history (agent_name, action, new_model_id, changed_at) "
        "VALUES ('coach', 'set', 'a/b', '2024-01-01T00:00:00.000000+00:00') RETURNING id",
        action="seed",
    )
    await old.close()

    storage = SQLiteStorage(path)
    try:
        assert [step.version for step in await storage.migrate()] == [
            step.version for step in STEPS[2:]
        ]
        old_rows = await storage.messages.recent(1)
        assert [(m.text, m.idempotency_key) for m in old_rows] == [
            ("first", None),
            ("second", None),
        ]
        message = StoredMessage(chat_id=1, role="user", text="new")
        stored = await storage.messages.add(message)
        assert (await storage.messages.add(message)).id == stored.id
        assert await storage.messages.count(1) == 3
        [change] = await storage.model_history.list("coach")
        assert (change.new_model_id, change.idempotency_key) == ("a/b", None)
    finally:
        await storage.close()


async def test_a_version_3_history_keeps_its_lines_and_ids_and_takes_every_change(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.db")
    old = SQLiteDatabase(path)
    await old.open(migrate_to=3)
    for model in ("a/1", "a/2", "a/3"):
        await old.write(
            "INSERT INTO agent_model_config_history (agent_name, action, new_model_id, "
            "changed_at, idempotency_key) VALUES ('coach', 'set', ?, "
            "'2024-01-01T00:00:00.000000+00:00', ?) RETURNING id",
            (model, f"key-{model}"),
            action="seed",
        )
    await old.write(
        "DELETE FROM agent_model_config_history WHERE new_model_id = 'a/3'", action="seed"
    )
    await old.close()

    storage = SQLiteStorage(path)
    try:
        assert [step.version for step in await storage.migrate()] == [
            s.version for s in STEPS if s.version > 3
        ]
        lines = await storage.model_history.list("coach")
        assert [(c.id, c.new_model_id, c.idempotency_key) for c in lines] == [
            (2, "a/2", "key-a/2"),
            (1, "a/1", "key-a/1"),
        ]
        # AUTOINCREMENT survives the rebuild: id 3 was used once and is never given again, so
        # the configuration version only ever grows.
        assert await storage.model_history.latest_id() == 2
        added = await storage.model_history.append(
            ModelConfigChange(agent_name="catalog:fast", action="add", new_model_id="openai:x")
        )
        assert added.id == 4
        again = await storage.model_history.append(
            ModelConfigChange(
                agent_name="coach", action="set", new_model_id="a/9", idempotency_key="key-a/1"
            )
        )
        assert again.id == 1  # the unique key was rebuilt too
        await storage.model_catalog.save(ModelCatalogRow(alias="fast", spec="openai:x"))
        assert [r.alias for r in await storage.model_catalog.list()] == ["fast"]
    finally:
        await storage.close()


async def test_a_database_from_a_newer_bot_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
        )
        conn.execute(
            "INSERT INTO schema_version VALUES (?, 'future', 'now')", (LATEST_VERSION + 1,)
        )
    storage = SQLiteStorage(str(path))
    with pytest.raises(StorageConfigError, match="newer"):
        await storage.connect()
    await storage.close()


def _remove_database_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def test_a_removed_database_file_fails_writes_instead_of_losing_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    storage = SQLiteStorage(str(path))
    await storage.connect()
    try:
        await storage.messages.add(StoredMessage(chat_id=1, role="user", text="kept"))
        _remove_database_files(path)
        with pytest.raises(StorageUnavailable, match="removed or replaced"):
            await storage.messages.add(StoredMessage(chat_id=1, role="user", text="lost?"))
        with pytest.raises(StorageUnavailable):
            await storage.ping()
    finally:
        await storage.close()


class _Ticker:
    """Counts how often the event loop got to run a 5 ms timer while something else waited."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.005)
            self.ticks += 1

    def __enter__(self) -> _Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def _hold_write_lock(path: str, seconds: float) -> threading.Thread:
    """Another connection (as another process would) holds the write lock for `seconds`."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(5)
    return thread


async def test_a_write_waits_for_another_process_lock_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.db")
    storage = SQLiteStorage(path, busy_timeout=5.0)
    await storage.connect()
    try:
        holder = _hold_write_lock(path, 0.4)
        started = time.monotonic()
        with _Ticker() as ticker:
            stored = await storage.messages.add(StoredMessage(chat_id=7, role="user", text="hi"))
        waited = time.monotonic() - started
        holder.join()
        # The write ran once the lock was released (it waited for it, rather than failing) ...
        assert waited >= 0.3
        assert [m.id for m in await storage.messages.recent(7)] == [stored.id]
        # ... and the loop went on running meanwhile: ~80 ticks in 0.4 s; a loop blocked in
        # sqlite3's busy handler would have ticked at most once or twice.
        assert ticker.ticks >= 20
        # Reads are not held up by another writer's lock at all (WAL).
        holder = _hold_write_lock(path, 0.4)
        started = time.monotonic()
        assert len(await storage.messages.recent(7)) == 1
        assert time.monotonic() - started < 0.2
        holder.join()
    finally:
        await storage.close()


async def test_a_lock_held_past_busy_timeout_is_an_outage_and_the_loop_stays_free(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bot.db")
    storage = SQLiteStorage(path, busy_timeout=0.3)
    await storage.connect()
    try:
        holder = _hold_write_lock(path, 1.0)
        with _Ticker() as ticker, pytest.raises(StorageUnavailable, match="locked"):
            await storage.messages.add(StoredMessage(chat_id=7, role="user", text="hi"))
        assert ticker.ticks >= 15
        holder.join()
        # Once the lock is gone, writes go through again, on the loop.
        await storage.messages.add(StoredMessage(chat_id=7, role="user", text="again"))
        assert [m.text for m in await storage.messages.recent(7)] == ["again"]
    finally:
        await storage.close()


def _wal_size(path: str) -> int:
    wal = Path(path + "-wal")
    return wal.stat().st_size if wal.exists() else 0


async def _wal_after_writes(path: str, writes: int) -> int:
    storage = SQLiteStorage(path)
    await storage.connect()
    try:
        for n in range(writes):
            await storage.messages.add(StoredMessage(chat_id=n % 5, role="user", text="x" * 200))
            await asyncio.sleep(0)  # let a checkpoint started by the writes finish in the worker
            if n % 50 == 49:
                # On a loaded machine the worker's checkpoint can take longer than a short
                # sleep: wait for it (the measure is the WAL's growth, not the worker's speed).
                for _ in range(200):
                    if storage.db._checkpoint is None:
                        break
                    await asyncio.sleep(0.01)
        return _wal_size(path)
    finally:
        await storage.close()


async def test_the_wal_is_checkpointed_in_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the worker's checkpoints the loop's connection (wal_autocheckpoint=0) would let the
    # WAL grow with every write.
    monkeypatch.setattr(sqlite_database, "CHECKPOINT_EVERY", 10**9)
    unchecked = await _wal_after_writes(str(tmp_path / "a.db"), 600)
    monkeypatch.setattr(sqlite_database, "CHECKPOINT_EVERY", 50)
    checked = await _wal_after_writes(str(tmp_path / "b.db"), 600)
    assert unchecked > 0
    assert checked < unchecked / 3, (checked, unchecked)


async def test_closing_with_a_checkpoint_pending_is_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_database, "CHECKPOINT_EVERY", 1)
    path = str(tmp_path / "bot.db")
    storage = SQLiteStorage(path)
    await storage.connect()
    await storage.messages.add(StoredMessage(chat_id=3, role="user", text="kept"))
    await storage.close()  # the checkpoint that write asked for has not run yet
    await asyncio.sleep(0.05)
    assert "checkpoint failed" not in caplog.text
    # The last connection to close checkpointed the WAL: the row is in the file itself.
    assert _wal_size(path) == 0
    with sqlite3.connect(path) as conn:
        assert [row[0] for row in conn.execute("SELECT text FROM messages")] == ["kept"]


def test_a_step_that_lands_after_a_later_one_is_still_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Features built side by side take neighbouring step numbers and may ship out of order: a
    # database migrated by a bot that had step N+1 but not N must get N from the next bot.
    from bot.storage.sqlite import schema

    late = STEPS[-2]
    conn = sqlite3.connect(tmp_path / "bot.db")
    try:
        monkeypatch.setattr(schema, "STEPS", tuple(s for s in STEPS if s is not late))
        schema.migrate(conn)
        monkeypatch.setattr(schema, "STEPS", STEPS)
        applied = schema.migrate(conn)
        assert [step.version for step in applied] == [late.version]
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
        assert sorted(versions) == [step.version for step in STEPS]
    finally:
        conn.close()
