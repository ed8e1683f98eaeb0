"""Fixtures: the fake Bot API server, a real aiogram Bot on it, and a polling Dispatcher runner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher

from bot.app import Services, build_services
from bot.config import Settings
from bot.pipeline.observer import NullObserver
from bot.telegram.flood import FloodControlMiddleware
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
