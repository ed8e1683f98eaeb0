"""Shared fixtures. Services on loopback only; nothing here may reach the internet.

PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) run on the development and CI
machines. A test that needs one skips with a clear reason when it is down, except in CI
(`CI=true`), where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.storage.sqlite import SQLiteStorage

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# The opt-in live InsForge test (`pytest -m live_insforge`, tests/storage) is the one place that
# may use INSFORGE_URL / INSFORGE_API_KEY; they are kept here, out of every other test's reach.
LIVE_INSFORGE = {
    name: os.environ[name] for name in ("INSFORGE_URL", "INSFORGE_API_KEY") if os.environ.get(name)
}

# No test may inherit the developer's keys or endpoints.
for _name in list(os.environ):
    if _name.endswith(("_API_KEY", "_BASE_URL")) or _name in {
        "TELEGRAM_BOT_TOKEN",
        "DATABASE_URL",
        "INTAKE_PATH",
        "INSFORGE_URL",
        "REDIS_URL",
        "LANGFUSE_PUBLIC_KEY",
        "LANGFUSE_SECRET_KEY",
        "WEBHOOK_URL",
        "DEFAULT_MODEL",
        "FALLBACK_MODELS",
        "ADMIN_IDS",
    }:
        os.environ.pop(_name, None)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (in CI) when a service the test needs is not listening."""
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must start it (.ci/run)")
    pytest.skip(f"{message}; start it to run this test")


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/0"


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    """The real SQLite storage on a file in `tmp_path`, connected; closed after the test."""
    made = SQLiteStorage(str(tmp_path / "bot.db"))
    await made.connect()
    try:
        yield made
    finally:
        await made.close()
