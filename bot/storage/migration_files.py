"""The PostgreSQL migrations in `insforge/migrations/`: `NNN_name.sql`, applied in number order.

InsForge's migrations endpoint wants a numeric `version` and a `name` of lowercase letters,
digits and hyphens, so `005_agent_model_config.sql` is sent as version `005`, name
`agent-model-config`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import bot
from bot.storage.repositories import StorageConfigError

_FILE = re.compile(r"^(?P<version>\d+)_(?P<name>[A-Za-z0-9_\-]+)\.sql$")


@dataclass(frozen=True, slots=True)
class MigrationFile:
    version: str
    name: str
    path: Path

    @property
    def number(self) -> int:
        return int(self.version)

    def read_sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def migrations_dir() -> Path:
    """`INSFORGE_MIGRATIONS_DIR`, else `insforge/migrations` next to the `bot` package or in cwd."""
    override = os.environ.get("INSFORGE_MIGRATIONS_DIR")
    candidates = [Path(override)] if override else []
    candidates += [
        Path(bot.__file__).resolve().parent.parent / "insforge" / "migrations",
        Path.cwd() / "insforge" / "migrations",
    ]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise StorageConfigError(
        "cannot find the insforge/migrations folder; run from the project folder or set "
        "INSFORGE_MIGRATIONS_DIR"
    )


def load_migration_files(directory: Path | None = None) -> list[MigrationFile]:
    folder = directory or migrations_dir()
    files: list[MigrationFile] = []
    for path in folder.iterdir():
        match = _FILE.match(path.name)
        if match is None:
            continue
        name = match["name"].lower().replace("_", "-")
        files.append(MigrationFile(version=match["version"], name=name, path=path))
    files.sort(key=lambda item: item.number)
    numbers = [item.number for item in files]
    if len(set(numbers)) != len(numbers):
        raise StorageConfigError(f"two migration files in {folder} share a number")
    return files
