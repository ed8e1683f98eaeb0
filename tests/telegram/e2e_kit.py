"""The whole bot on loopback: the real Dispatcher long-polling the fake Bot API server, the real
services on a real SQLite file, models on the loopback LLM server through the real SDKs.

    async with running_bot(tmp_path, tg, llm) as harness:
        replies = await harness.say("hello")             # the bot's final message(s) to the chat
        harness.requests_for_agent("strategist")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher

from bot.app import Services, build_services
from bot.config import Settings
from bot.pipeline.observer import NullObserver, PipelineObserver
from bot.telegram.dispatcher import build_dispatcher, create_bot, install_notifiers
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.telegram_server import BotMessage, FakeTelegramServer
from tests.telegram.conftest import polling

ADMIN = 900
USER = 901
# Every agent on its own model, so a test can tell from the LLM server who asked what.
AGENT_MODELS = {
    "extraction": "openai:m-extraction",
    "strategist": "openai:m-strategist",
    "coach": "anthropic:m-coach",
    "tutor": "openai:m-tutor",
    "trainer": "openai:m-trainer",
    "summarizer": "openai:m-summarizer",
}
OVERRIDE = "anthropic/claude-sonnet-4.5"


def make_settings(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "telegram_bot_token": tg.token,
        "telegram_api_base": tg.url,
        "admin_ids": [ADMIN],
        "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
        "default_model": "openai:m-default",
        "agent_models": dict(AGENT_MODELS),
        "openai_api_key": "sk-test-openai-000000000000",
        "openai_base_url": llm.openai_base_url,
        "anthropic_api_key": "sk-ant-test-00000000000000",
        "anthropic_base_url": llm.anthropic_base_url,
        "openrouter_api_key": "sk-or-test-0000000000000000",
        "openrouter_base_url": llm.openrouter_base_url,
        "bot_secret_key": "a-long-random-secret-for-the-tests-0123456789",
        "llm_max_retries": 0,
        "llm_timeout": 10,
        "shutdown_timeout": 5,
        # Every turn runs every agent, the summarizer included (its cadence has its own test).
        "summary_every": 1,
    }
    values.update(extra)
    return Settings(**values)


@dataclass
class Harness:
    tg: FakeTelegramServer
    llm: FakeLLMServer
    services: Services
    dp: Dispatcher
    bot: Bot

    async def say(
        self,
        text: str,
        *,
        user_id: int = USER,
        chat_id: int | None = None,
        replies: int = 1,
        timeout: float = 15.0,
    ) -> list[str]:
        """Send `text`; wait for the bot's next `replies` sendMessage calls to that chat."""
        chat = user_id if chat_id is None else chat_id
        mark = len(self.tg.calls)
        self.tg.user_message(text, user_id=user_id, chat_id=chat)
        calls = await self.tg.wait_for_call(
            "sendMessage", chat_id=chat, count=replies, since=mark, timeout=timeout
        )
        return [_visible(self.tg, chat, c.result["message_id"]) for c in calls]

    async def send_document(
        self,
        data: bytes,
        name: str,
        *,
        user_id: int = USER,
        done: str = "Added ",
        timeout: float = 15.0,
    ) -> str:
        """Send a document in the user's private chat; wait until the bot's status message
        reads its outcome (starting with `done`) and return that text."""
        self.tg.user_document(data, file_name=name, user_id=user_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            shown = [m.text for m in self.tg.chat_messages(user_id)]
            if shown and shown[-1].startswith(done):
                return shown[-1]
            if loop.time() > deadline:
                raise AssertionError(f"no {done!r} message; the chat shows {shown[-3:]}")
            await asyncio.sleep(0.02)

    async def press(self, data: str, *, user_id: int = USER) -> None:
        """Press an inline button carrying `data` under the bot's latest message; wait for the
        bot's answer to the callback."""
        mark = len(self.tg.calls)
        self.tg.callback_query(data, user_id=user_id)
        await self.tg.wait_for_call("answerCallbackQuery", since=mark)

    def agent_requests(self, agent: str, since: int = 0) -> list[RecordedRequest]:
        model = AGENT_MODELS[agent].split(":", 1)[1]
        return [r for r in self.llm.requests[since:] if r.model == model]

    def messages(self, chat: int) -> list[BotMessage]:
        return self.tg.chat_messages(chat)


def _visible(tg: FakeTelegramServer, chat: int, message_id: int) -> str:
    for message in tg.chat_messages(chat, include_deleted=True):
        if message.message_id == message_id:
            return message.text
    raise AssertionError(f"message {message_id} not found in chat {chat}")


@asynccontextmanager
async def running_bot(
    settings: Settings,
    tg: FakeTelegramServer,
    llm: FakeLLMServer,
    *,
    observer: PipelineObserver | None = None,
    traced: bool = False,
) -> AsyncIterator[Harness]:
    """Build the services, the bot and the dispatcher; poll for the block; close all."""
    kwargs: dict[str, Any] = {} if traced else {"observer": observer or NullObserver()}
    async with build_services(settings, **kwargs) as services:
        bot = create_bot(settings)
        try:
            dp = build_dispatcher(services)
            install_notifiers(services, bot)
            async with polling(dp, bot):
                yield Harness(tg, llm, services, dp, bot)
                # Let updates in flight finish, as the runtime does before it stops polling.
                in_flight = set(getattr(dp, "_handle_update_tasks", ()))
                if in_flight:
                    await asyncio.wait(in_flight, timeout=10)
            await services.runner.wait_background()
        finally:
            with contextlib.suppress(Exception):
                await bot.session.close()
