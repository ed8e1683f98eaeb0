"""Builds the configured storage backend: InsForge when INSFORGE_URL is set, else SQLite."""

from __future__ import annotations

from bot.config import Settings
from bot.storage.repositories import Storage, StorageConfigError


def create_storage(settings: Settings) -> Storage:
    """The backend for `settings`; call `await storage.connect()` before use, `close()` after."""
    if settings.uses_insforge:
        from bot.storage.insforge import InsForgeStorage
        from bot.storage.insforge_client import InsForgeClient

        if settings.insforge_api_key is None:
            raise StorageConfigError(
                "INSFORGE_URL is set but INSFORGE_API_KEY is not: set both (or neither, to use "
                "the embedded SQLite database)"
            )
        client = InsForgeClient(
            settings.insforge_url or "",
            settings.insforge_api_key,
            timeout=settings.insforge_timeout,
        )
        return InsForgeStorage(client)
    from bot.storage.sqlite import SQLiteStorage

    return SQLiteStorage(settings.sqlite_path)
