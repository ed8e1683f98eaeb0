"""What only the SQLite backend does: its file, WAL, forward migrations, and refusing to write into
a file that is gone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.storage.factory import create_storage
from bot.storage.insforge import InsForgeStorage
from bot.storage.models import StoredMessage
from bot.storage.repositories import StorageConfigError, StorageUnavailable
from bot.storage.sqlite import LATEST_VERSION, STEPS, SQLiteDatabase, SQLiteStorage


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
        assert [step.version for step in applied] == [2, 3]
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
        assert [step.version for step in await storage.migrate()] == [3]
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
