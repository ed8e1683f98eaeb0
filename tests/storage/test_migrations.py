"""`python -m bot migrate`: the real migration files on an empty PostgreSQL (through InsForge's
migrations endpoint, as in production), idempotent on a second run; and the SQLite steps."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest

from bot.config import load_settings
from bot.storage.insforge_client import InsForgeClient
from bot.storage.migrate import apply_insforge_migrations, missing_insforge_migrations, run_migrate
from bot.storage.migration_files import load_migration_files
from tests.fakes.insforge_server import FakeInsForge, fresh_database

EXPECTED_TABLES = {
    "users",
    "user_settings",
    "messages",
    "chat_summaries",
    "user_facts",
    "exercises",
    "agent_model_config",
    "agent_model_config_history",
    "archives",
    "archive_passages",
    "archive_uploads",
    "archive_terms",
    "model_catalog",
    "access_list",
    "ledger_calls",
    "ledger_ratings",
    "ledger_reports",
    "ledger_rollups",
    "ledger_histograms",
    "ledger_rollup_state",
    "ledger_rolled",
    "budget_limits",
    "trials",
    "replay_inputs",
    "tasks",
    "task_results",
}


def _settings(fake: FakeInsForge, key: str | None = None) -> object:
    return load_settings(
        _env_file=None, insforge_url=fake.url, insforge_api_key=key or fake.api_key
    )


async def _migrate(settings: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_migrate(settings, out=out, err=err)  # type: ignore[arg-type]
    return code, out.getvalue(), err.getvalue()


async def test_migrations_apply_to_an_empty_postgres_and_are_idempotent(
    postgres_dsn: str,
) -> None:
    files = load_migration_files()
    assert [f.version for f in files][:5] == ["001", "002", "003", "004", "005"]
    assert any(f.path.name == "005_agent_model_config.sql" for f in files)
    async with fresh_database(postgres_dsn) as dsn, FakeInsForge(dsn) as fake:
        code, out, err = await _migrate(_settings(fake))
        assert (code, err) == (0, "")
        assert out.count("applied ") == len(files)
        assert "applied 005 agent-model-config" in out

        code, out, err = await _migrate(_settings(fake))
        assert code == 0
        assert "applied 0" not in out
        assert f"0 migration(s) applied, {len(files)} already there" in out

        conn = await asyncpg.connect(dsn)
        try:
            tables = {
                row["tablename"]
                for row in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public'"
                )
            }
            assert tables >= EXPECTED_TABLES
            columns = {
                row["column_name"]: row
                for row in await conn.fetch(
                    "SELECT column_name, data_type, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_name = 'agent_model_config'"
                )
            }
            assert set(columns) == {
                "id",
                "agent_name",
                "model_id",
                "is_active",
                "set_by",
                "created_at",
                "updated_at",
            }
            assert columns["id"]["data_type"] == "integer"
            assert "nextval" in columns["id"]["column_default"]
            assert (columns["agent_name"]["data_type"], columns["agent_name"]["is_nullable"]) == (
                "text",
                "NO",
            )
            assert columns["model_id"]["is_nullable"] == "NO"
            assert columns["is_active"]["data_type"] == "boolean"
            assert columns["is_active"]["is_nullable"] == "NO"
            assert columns["is_active"]["column_default"] == "true"
            assert columns["set_by"]["is_nullable"] == "YES"
            for name in ("created_at", "updated_at"):
                assert columns[name]["data_type"] == "timestamp with time zone"
                assert columns[name]["column_default"] == "now()"
            indexes = {
                row["indexname"]: row["indexdef"]
                for row in await conn.fetch(
                    "SELECT indexname, indexdef FROM pg_indexes "
                    "WHERE tablename = 'agent_model_config'"
                )
            }
            assert any("UNIQUE" in d and "(agent_name)" in d for d in indexes.values())
            assert any("WHERE is_active" in d for d in indexes.values())
            for table, column in [
                ("users", "id"),
                ("messages", "chat_id"),
                ("messages", "user_id"),
            ]:
                kind = await conn.fetchval(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = $1 AND column_name = $2",
                    table,
                    column,
                )
                assert kind == "bigint", (table, column)
            assert (
                await conn.fetchval(
                    "SELECT COUNT(*) FROM pg_indexes WHERE tablename = 'messages' "
                    "AND indexdef LIKE '%(chat_id, id)%'"
                )
                == 1
            )
        finally:
            await conn.close()


async def test_every_file_runs_twice_on_postgres_without_error(postgres_dsn: str) -> None:
    async with fresh_database(postgres_dsn) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            for _ in range(2):
                for item in load_migration_files():
                    async with conn.transaction():
                        await conn.execute(item.read_sql())
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            assert count == len(EXPECTED_TABLES)
        finally:
            await conn.close()


async def test_messages_and_history_have_a_unique_idempotency_key(postgres_dsn: str) -> None:
    async with fresh_database(postgres_dsn) as dsn, FakeInsForge(dsn) as fake:
        assert (await _migrate(_settings(fake)))[0] == 0
        conn = await asyncpg.connect(dsn)
        try:
            for table in ("messages", "agent_model_config_history"):
                kind = await conn.fetchval(
                    "SELECT data_type FROM information_schema.columns "
                    "WHERE table_name = $1 AND column_name = 'idempotency_key'",
                    table,
                )
                assert kind == "text", table
                unique = await conn.fetch(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = $1 "
                    "AND indexdef LIKE 'CREATE UNIQUE INDEX%(idempotency_key)'",
                    table,
                )
                assert len(unique) == 1, table
        finally:
            await conn.close()


async def test_missing_migrations_are_listed_and_none_is_applied(postgres_dsn: str) -> None:
    files = load_migration_files()
    async with fresh_database(postgres_dsn) as dsn, FakeInsForge(dsn) as fake:
        client = InsForgeClient(fake.url, fake.api_key)
        try:
            assert await missing_insforge_migrations(client) == files
            assert await client.list_migrations() == []  # looking applied nothing
            await apply_insforge_migrations(client, files[:-1])
            assert await missing_insforge_migrations(client) == files[-1:]
            await apply_insforge_migrations(client)
            assert await missing_insforge_migrations(client) == []
        finally:
            await client.aclose()


async def test_a_rejected_key_fails_with_a_message_naming_the_variable(
    fake_insforge: FakeInsForge,
) -> None:
    code, out, err = await _migrate(_settings(fake_insforge, key="the-wrong-key-42"))
    assert code == 1
    assert "INSFORGE_API_KEY" in err
    assert "the-wrong-key-42" not in err + out


async def test_insforge_down_fails_with_a_message(fake_insforge: FakeInsForge) -> None:
    fake_insforge.down = True
    settings = load_settings(
        _env_file=None,
        insforge_url=fake_insforge.url,
        insforge_api_key=fake_insforge.api_key,
        insforge_timeout=1,
    )
    code, _, err = await _migrate(settings)
    assert code == 1
    assert "migrate failed" in err
    assert "503" in err


async def test_sqlite_migrate_reports_its_steps_then_nothing(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, database_url=f"sqlite:///{tmp_path}/x/bot.db")
    code, out, _ = await _migrate(settings)
    assert code == 0
    assert "applied 1 " in out
    assert "applied 2 agent-model-config" in out
    assert "applied 3 idempotency-keys" in out
    assert "applied 5 model-catalog" in out
    code, out, _ = await _migrate(settings)
    assert code == 0
    assert "0 step(s) applied" in out
    assert (tmp_path / "x" / "bot.db").exists()


@pytest.mark.parametrize("bad", ["BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;"])
async def test_the_fake_refuses_transactions_in_a_migration_like_insforge(
    fake_insforge: FakeInsForge, bad: str
) -> None:
    from bot.storage.insforge_client import InsForgeClient
    from bot.storage.repositories import StorageRejected

    client = InsForgeClient(fake_insforge.url, fake_insforge.api_key)
    try:
        with pytest.raises(StorageRejected, match="transactions"):
            await client.apply_migration("999", "with-transaction", bad)
    finally:
        await client.aclose()
