"""Backends for the storage tests: SQLite on tmp_path, InsForge through the loopback fake over the
real PostgreSQL, and (opt-in) a live InsForge.

Each test run gets its own PostgreSQL database (dropped at the end), built by applying the real
migration files through the fake's migrations endpoint; each InsForge test starts with its
tables emptied.

The live InsForge runs the contract suite only when asked for, and only with its credentials:

    INSFORGE_URL=https://x.insforge.app INSFORGE_API_KEY=... pytest -m live_insforge tests/storage

It never changes the instance's schema: when migrations are missing it fails and says to run
`python -m bot migrate` first. Tests there use fresh random ids and leave their rows behind.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.storage.insforge import InsForgeStorage
from bot.storage.insforge_client import InsForgeClient
from bot.storage.migrate import missing_insforge_migrations
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from tests.conftest import LIVE_INSFORGE
from tests.fakes.insforge_server import (
    FakeInsForge,
    create_migrated_database,
    drop_database,
    dsn_for,
    truncate_public_tables,
)

LIVE_VARIABLES = ("INSFORGE_URL", "INSFORGE_API_KEY")


def _started_with(names: tuple[str, ...]) -> dict[str, str]:
    """These variables as the test process was started with.

    tests/conftest.py removes INSFORGE_URL and every *_API_KEY from os.environ on import, so that
    no test reaches a real service by accident, and keeps the two live ones in `LIVE_INSFORGE`.
    """
    return {name: LIVE_INSFORGE[name] for name in names if LIVE_INSFORGE.get(name)}


@pytest.fixture(scope="session")
def insforge_run_db(postgres_dsn: str) -> Iterator[str]:
    """This run's database, with the real migrations applied through the migrations endpoint."""

    name = asyncio.run(create_migrated_database(postgres_dsn))
    yield name
    asyncio.run(drop_database(postgres_dsn, name))


@pytest.fixture
async def fake_insforge(postgres_dsn: str, insforge_run_db: str) -> AsyncIterator[FakeInsForge]:
    dsn = dsn_for(postgres_dsn, insforge_run_db)
    await truncate_public_tables(dsn)
    async with FakeInsForge(dsn) as fake:
        yield fake


@dataclass
class Backend:
    """Opens storages on one database; can break and heal writes for outage tests."""

    name: str
    make: Callable[[], Storage]
    break_writes: Callable[[], Awaitable[None]]
    heal: Callable[[], Awaitable[None]]
    opened: list[Storage] = field(default_factory=list)

    async def open(self) -> Storage:
        storage = self.make()
        try:
            await storage.connect()
        except BaseException:
            await storage.close()
            raise
        self.opened.append(storage)
        return storage


def _sqlite_backend(tmp_path: Path) -> Backend:
    path = str(tmp_path / "data" / "bot.db")
    locker: list[sqlite3.Connection] = []

    async def break_writes() -> None:
        # Another process holding the write lock: the bot's busy_timeout runs out.
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locker.append(conn)

    async def heal() -> None:
        while locker:
            conn = locker.pop()
            conn.execute("ROLLBACK")
            conn.close()

    return Backend("sqlite", lambda: SQLiteStorage(path, busy_timeout=0.2), break_writes, heal)


def _insforge_backend(fake: FakeInsForge) -> Backend:
    async def break_writes() -> None:
        fake.down = True

    async def heal() -> None:
        fake.down = False

    return Backend(
        "insforge",
        lambda: InsForgeStorage.from_url(
            fake.url, fake.api_key, timeout=10.0, max_retries=2, backoff=0.01
        ),
        break_writes,
        heal,
    )


class _LiveStorage(InsForgeStorage):
    """A live InsForge; the first connect() checks (never applies) the migrations."""

    checked = False

    async def connect(self) -> None:
        if _LiveStorage.checked:
            return
        missing = await missing_insforge_migrations(self.client)
        if missing:
            names = ", ".join(item.path.name for item in missing)
            pytest.fail(
                f"the live InsForge at {self.client.base_url} lacks migrations {names}; run "
                "`python -m bot migrate` with the same INSFORGE_URL and INSFORGE_API_KEY, then "
                "run these tests again (they do not change a live schema themselves)",
                pytrace=False,
            )
        _LiveStorage.checked = True


def _live_selected(config: pytest.Config) -> bool:
    """Asked for by name (`-m live_insforge`), not merely left in by `-m "not slow"` or `-m ""`:
    INSFORGE_URL may well point at production in a developer's shell."""
    expression = str(config.getoption("markexpr") or "")
    return re.search(r"(?<!not )\blive_insforge\b", expression) is not None


def _live_backend(config: pytest.Config) -> Backend:
    if not _live_selected(config):
        pytest.skip("the live InsForge runs only when selected with -m live_insforge")
    found = _started_with(LIVE_VARIABLES)
    if len(found) != len(LIVE_VARIABLES):
        pytest.skip("set INSFORGE_URL and INSFORGE_API_KEY to run the contract on a live InsForge")
    url, key = found["INSFORGE_URL"], found["INSFORGE_API_KEY"]

    async def cannot_break() -> None:
        pytest.skip("a live InsForge cannot be taken down by the tests")

    async def nothing() -> None:
        return None

    return Backend(
        "live-insforge",
        lambda: _LiveStorage(InsForgeClient(url, key, timeout=20.0)),
        cannot_break,
        nothing,
    )


@pytest.fixture(
    params=[
        "sqlite",
        "insforge",
        pytest.param("live-insforge", marks=pytest.mark.live_insforge),
    ]
)
def backend_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path)
    if request.param == "live-insforge":
        return _live_backend(request.config)
    return _insforge_backend(request.getfixturevalue("fake_insforge"))


@pytest.fixture
async def backend(backend_spec: Backend) -> AsyncIterator[Backend]:
    yield backend_spec
    await backend_spec.heal()
    for opened in backend_spec.opened:
        await opened.close()


@pytest.fixture
async def storage(backend: Backend) -> Storage:
    return await backend.open()


@pytest.fixture
def uid() -> Callable[[], int]:
    """Fresh 64-bit ids (beyond 2**31, like real Telegram ids) so tests never share rows."""
    return lambda: 2**40 + secrets.randbelow(2**52)


@pytest.fixture
def agent() -> str:
    """A unique agent name, so override tests are safe on a shared (live) database."""
    return "agent_" + secrets.token_hex(4)


class Sleeps:
    """Records the waits of the InsForge client's retry loop instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def sleeps() -> Sleeps:
    return Sleeps()
