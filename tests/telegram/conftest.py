"""Fixtures: the fake Bot API server, a real aiogram Bot on it, and a polling Dispatcher runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher

from bot.app import Services, build_services
from bot.config import Settings
from bot.pipeline.observer import NullObserver
from bot.telegram.flood import FloodControlMiddleware
from tests.fakes.agent_replies import agent_reply
from tests.fakes.insforge_server import (
    FakeInsForge,
    create_migrated_database,
    drop_database,
    dsn_for,
    truncate_public_tables,
)
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_server import FakeTelegramServer


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer() as server:
        yield server


@pytest.fixture
async def bot(tg: FakeTelegramServer) -> AsyncIterator[Bot]:
    """A real Bot with flood control, as the app builds it (short waits for tests)."""
    instance: Bot = tg.make_bot()
    instance.session.middleware(FloodControlMiddleware(max_wait=5, server_error_delay=0.05))
    try:
        yield instance
    finally:
        await instance.session.close()


PollingRunner = Callable[[Dispatcher, Bot], Any]


@asynccontextmanager
async def polling(dp: Dispatcher, bot: Bot, **kwargs: Any) -> AsyncIterator[None]:
    """Run `dp.start_polling(bot)` in the background for the block, then stop it cleanly."""
    started = asyncio.Event()

    async def on_startup() -> None:
        started.set()

    dp.startup.register(on_startup)
    task = asyncio.create_task(
        dp.start_polling(
            bot, handle_signals=False, close_bot_session=False, polling_timeout=1, **kwargs
        )
    )
    try:
        await asyncio.wait_for(started.wait(), 10)
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # polling already ended; the task says why
            await dp.stop_polling()
        await asyncio.wait_for(task, 10)


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until `check()` is true (a generous timeout only prevents hangs)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


Wait = Callable[[], Awaitable[None]]


@asynccontextmanager
async def fake_model_services(tmp_path: Path, **extra: Any) -> AsyncIterator[Services]:
    """The real services on a SQLite file in `tmp_path`, models in-process (`FakeProviders`),
    no tracing; `extra` settings on top (the handlers' tests through `dp.feed_update`)."""
    from tests.services.fakes import FakeProviders

    values: dict[str, Any] = {
        "_env_file": None,
        "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
        "default_model": "openai:gpt-4o-mini",
        "openai_api_key": "sk-test",
        # Nothing listens here: the catalog cannot be fetched in these tests.
        "openrouter_base_url": "http://127.0.0.1:9/api/v1",
        **extra,
    }
    async with build_services(
        Settings(**values), providers=FakeProviders(), observer=NullObserver()
    ) as built:
        yield built


# --- both storage backends for end-to-end tests (`backend`: settings to add) ---


@pytest.fixture(scope="module")
def insforge_db(postgres_dsn: str) -> Iterator[str]:
    """One database for this module, with the real migrations applied; emptied per test."""

    name = asyncio.run(create_migrated_database(postgres_dsn))
    yield dsn_for(postgres_dsn, name)
    asyncio.run(drop_database(postgres_dsn, name))


@pytest.fixture(params=["sqlite", "insforge"])
def backend_name(request: pytest.FixtureRequest) -> str:
    if request.param == "insforge":
        request.getfixturevalue("insforge_db")  # built here, outside any event loop
    return str(request.param)


@pytest.fixture
async def backend(
    backend_name: str, request: pytest.FixtureRequest
) -> AsyncIterator[dict[str, Any]]:
    """Settings that put the bot's storage on SQLite (the default) or on InsForge."""
    if backend_name == "sqlite":
        yield {}
        return
    dsn = request.getfixturevalue("insforge_db")
    await truncate_public_tables(dsn)
    async with FakeInsForge(dsn) as fake:
        yield {"insforge_url": fake.url, "insforge_api_key": fake.api_key}


@asynccontextmanager
async def agent_llm_server() -> AsyncIterator[FakeLLMServer]:
    """A loopback model server, every model answering like its agent (`agent_reply`)."""
    async with FakeLLMServer() as server:
        server.default.text = agent_reply
        yield server


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    """The cloud providers' loopback model server (`agent_llm_server`)."""
    async with agent_llm_server() as server:
        yield server
