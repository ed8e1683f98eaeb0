"""`python -m bot migrate`: bring the configured database's schema up to date, and say what changed.

- InsForge: the files of `insforge/migrations/` go through `POST /api/database/migrations`
  (`version`, `name`, `sql`), in number order; versions InsForge already lists are skipped, so a
  second run applies nothing. InsForge runs each file in its own transaction.
- SQLite: the embedded schema steps (`bot.storage.sqlite.schema`) missing from `schema_version`.

Returns a process exit code: 0 when the schema is up to date, 1 when something failed (with a
message that says what and which variable to check).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from bot.config import Settings
from bot.storage.insforge_client import InsForgeClient
from bot.storage.migration_files import MigrationFile, load_migration_files
from bot.storage.repositories import StorageConfigError, StorageError


def _applied_keys(listed: Sequence[dict[str, Any]]) -> tuple[set[int], set[str]]:
    versions: set[int] = set()
    names: set[str] = set()
    for item in listed:
        version = item.get("version")
        if version is not None and str(version).isdigit():
            versions.add(int(str(version)))
        if item.get("name"):
            names.add(str(item["name"]))
    return versions, names


async def _split_applied(
    client: InsForgeClient, files: Sequence[MigrationFile] | None
) -> tuple[list[MigrationFile], list[MigrationFile]]:
    """(missing, applied) files, by what InsForge lists."""
    files = list(files) if files is not None else load_migration_files()
    versions, names = _applied_keys(await client.list_migrations())
    missing: list[MigrationFile] = []
    applied: list[MigrationFile] = []
    for item in files:
        # Older InsForge servers list no version, only the name: match on either.
        there = item.number in versions or item.name in names
        (applied if there else missing).append(item)
    return missing, applied


async def missing_insforge_migrations(
    client: InsForgeClient, files: Sequence[MigrationFile] | None = None
) -> list[MigrationFile]:
    """The files InsForge does not list as applied; applies nothing (for checks and tests)."""
    missing, _ = await _split_applied(client, files)
    return missing


async def apply_insforge_migrations(
    client: InsForgeClient, files: Sequence[MigrationFile] | None = None
) -> tuple[list[MigrationFile], list[MigrationFile]]:
    """Apply the files InsForge does not list yet; (applied, skipped)."""
    missing, skipped = await _split_applied(client, files)
    applied: list[MigrationFile] = []
    for item in missing:
        try:
            await client.apply_migration(item.version, item.name, item.read_sql())
        except StorageError as exc:
            raise StorageError(f"migration {item.path.name} failed: {exc}") from exc
        applied.append(item)
    return applied, skipped


async def _migrate_insforge(settings: Settings, out: TextIO) -> None:
    if settings.insforge_api_key is None:
        raise StorageConfigError("INSFORGE_URL is set but INSFORGE_API_KEY is not: set both")
    client = InsForgeClient(
        settings.insforge_url or "",
        settings.insforge_api_key,
        timeout=settings.insforge_timeout,
    )
    try:
        applied, skipped = await apply_insforge_migrations(client)
    finally:
        await client.aclose()
    for item in applied:
        print(f"applied {item.version} {item.name}", file=out)
    print(
        f"InsForge at {settings.insforge_url}: {len(applied)} migration(s) applied, "
        f"{len(skipped)} already there",
        file=out,
    )


async def _migrate_sqlite(settings: Settings, out: TextIO) -> None:
    from bot.storage.sqlite import LATEST_VERSION, SQLiteStorage

    storage = SQLiteStorage(settings.sqlite_path)
    try:
        applied = await storage.migrate()
    finally:
        await storage.close()
    for step in applied:
        print(f"applied {step.version} {step.name}", file=out)
    print(
        f"SQLite at {settings.sqlite_path}: {len(applied)} step(s) applied, "
        f"schema version {LATEST_VERSION}",
        file=out,
    )


async def run_migrate(
    settings: Settings,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Apply the migrations of the configured backend; 0 on success, 1 with a message if not."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if settings.uses_insforge:
            await _migrate_insforge(settings, out)
        else:
            await _migrate_sqlite(settings, out)
    except StorageError as exc:
        print(f"migrate failed: {exc}", file=err)
        return 1
    return 0
