"""No message lost across a restart, a Telegram outage or an update aiogram cannot read.

The real runtime (`BotRuntime`: our polling loop or the webhook, the intake, the dispatcher) on the
fake Bot API server and the loopback model server, the real SQLite files; a restart is a second
`BotRuntime` on the same files, as a new process would be.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_services
from bot.config import Settings
from bot.intake.store import intake_path
from bot.pipeline.observer import NullObserver
from bot.telegram.intake_feed import STALE_APOLOGY
from bot.telegram.routers.common import SORRY_GENERIC
from bot.telegram.runtime import BotRuntime
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import make_settings
from tests.telegram.test_shutdown import wait_until

SECRET = "no-message-lost-secret"
USER = 4242


def settings_for(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, mode: str, **extra: Any
) -> Settings:
    port = free_port()
    values: dict[str, Any] = {"webhook_host": "127.0.0.1", "webhook_port": port}
    if mode == "webhook":
        values.update(webhook_url=f"http://127.0.0.1:{port}/webhook", webhook_secret=SECRET)
    values.update(extra)
    return make_settings(tmp_path, tg, llm, **values)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[BotRuntime]:
    """One bot process's life: start, yield, SIGTERM-like stop."""
    async with build_services(settings, observer=NullObserver()) as services:
        runtime = BotRuntime(services)
        await runtime.start()
        try:
            yield runtime
        finally:
            runtime.request_stop()
            await runtime.stop()


def final_replies(tg: FakeTelegramServer, chat_id: int) -> list[str]:
    """The texts of the bot's successful sendMessage calls to the chat (drafts excluded)."""
    return [c.params.get("text", "") for c in tg.calls_of("sendMessage", chat_id=chat_id) if c.ok]


def stored_user_texts(settings: Settings, chat_id: int) -> list[str]:
    with sqlite3.connect(settings.sqlite_path) as db:
        rows = db.execute(
            "SELECT text FROM messages WHERE chat_id = ? AND role = 'user' ORDER BY id", (chat_id,)
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_a_restart_answers_every_queued_message_of_a_chat_in_order(
    tmp_path: Path, tg: FakeTelegramServer, mode: str
) -> None:
    """Issue 19, seen 1: a backlog at SIGTERM past SHUTDOWN_TIMEOUT was never answered."""
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.default.latency = 0.4  # each turn takes a few model calls of this
        settings = settings_for(tmp_path, tg, llm, mode, shutdown_timeout=1.0)
        texts = [f"backlog message {n}" for n in range(6)]
        async with running(settings):
            for text in texts:
                tg.user_message(text, user_id=USER)
            await wait_until(lambda: len(final_replies(tg, USER)) >= 1)
        # The first process stopped with most of the backlog unanswered.
        assert len(final_replies(tg, USER)) < len(texts)

        async with running(settings):
            await wait_until(lambda: len(final_replies(tg, USER)) >= len(texts))
            await asyncio.sleep(0.5)  # nothing more (a second answer to one message) comes
        replies = final_replies(tg, USER)
        assert len(replies) == len(texts)
        assert not any(SORRY_GENERIC in r for r in replies)
        # Answered in the order sent: the conversation stored them in that order.
        assert stored_user_texts(settings, USER) == texts


async def test_a_reply_goes_out_through_a_telegram_outage_of_its_delivery(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    """Issue 19, seen 2: a 2 s outage of sendMessage lost the answer; from 5 s, the apology too."""
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = settings_for(tmp_path, tg, llm, "polling")
        async with running(settings):
            tg.outage("sendMessage", seconds=6.0)
            started = time.monotonic()
            tg.user_message("how do I sleep better?", user_id=USER)
            await wait_until(lambda: final_replies(tg, USER), timeout=40)
            assert time.monotonic() - started >= 5.0  # it did wait the outage out
        replies = final_replies(tg, USER)
        assert len(replies) == 1
        assert "m-coach" in replies[0]  # the model's answer, not an apology
        failed = [c for c in tg.calls_of("sendMessage", chat_id=USER) if c.status == 502]
        assert len(failed) >= 3


async def test_a_reply_pending_at_a_restart_is_delivered_by_the_next_run_not_answered_again(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = settings_for(tmp_path, tg, llm, "polling", shutdown_timeout=1.0)
        async with running(settings):
            tg.outage("sendMessage")
            tg.user_message("how do I sleep better?", user_id=USER)
            await wait_until(
                lambda: len([c for c in tg.calls_of("sendMessage", chat_id=USER) if c.status]) >= 3
            )
        coach_calls = len(llm.requests_for("m-coach"))
        assert final_replies(tg, USER) == []
        tg.end_outage("sendMessage")

        async with running(settings):
            await wait_until(lambda: final_replies(tg, USER))
            await asyncio.sleep(0.5)
        replies = final_replies(tg, USER)
        assert len(replies) == 1
        assert "m-coach" in replies[0]
        # Delivered from what was stored: the model was not asked again.
        assert len(llm.requests_for("m-coach")) == coach_calls


async def test_an_update_aiogram_cannot_read_is_skipped_and_logged_without_its_text(
    tmp_path: Path, tg: FakeTelegramServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 19, seen 6: one such update stopped polling for good, and its text was logged."""
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = settings_for(tmp_path, tg, llm, "polling")
        caplog.set_level(logging.INFO)
        async with running(settings) as runtime:
            # A message without the fields a Bot API of aiogram's version always sends.
            tg.push_update({"message": {"message_id": 77, "text": "my private words"}})
            tg.user_message("and now a normal one", user_id=USER)
            await wait_until(lambda: final_replies(tg, USER))
            assert runtime.feeder.undecodable == 1
        assert "my private words" not in caplog.text
        assert "cannot be read" in caplog.text


async def test_an_update_left_too_long_gets_an_apology_instead_of_an_answer(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.default.latency = 30.0  # the first run never gets to answer
        settings = settings_for(
            tmp_path, tg, llm, "polling", shutdown_timeout=0.5, stale_update_seconds=60
        )
        async with running(settings):
            tg.user_message("are you there?", user_id=USER)
            await wait_until(lambda: llm.requests)
        # The bot was away for two minutes.
        with sqlite3.connect(intake_path(settings)) as db:
            db.execute("UPDATE intake SET received_at = received_at - 120")
        llm.default.latency = 0.0
        asked = len(llm.requests)
        async with running(settings):
            await wait_until(lambda: final_replies(tg, USER))
            await asyncio.sleep(0.3)
        assert final_replies(tg, USER) == [STALE_APOLOGY]
        assert len(llm.requests) == asked
