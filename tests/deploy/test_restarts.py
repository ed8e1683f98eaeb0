"""A SIGKILL of the real bot process (`python -m bot`) with a chat's backlog loses nothing: the
next start answers every message, in order, on the SQLite intake and on the Redis stream."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.agent_replies import agent_reply
from tests.fakes.bot_process import BotProcess, clean_env
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer, unique_token

USER = 5151


@pytest.mark.parametrize("intake", ["sqlite", "redis"])
async def test_a_sigkill_with_a_backlog_then_a_restart_answers_every_message_in_order(
    tmp_path: Path, intake: str, request: pytest.FixtureRequest
) -> None:
    async with FakeTelegramServer(token=unique_token()) as tg, FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.default.latency = 0.3
        database = tmp_path / "bot.db"
        port = free_port()
        extra: dict[str, str] = {}
        if intake == "redis":
            extra["REDIS_URL"] = request.getfixturevalue("redis_url")
        env = clean_env(
            TELEGRAM_BOT_TOKEN=tg.token,
            TELEGRAM_API_BASE=tg.url,
            DEFAULT_MODEL="openai:gpt-4o-mini",
            OPENAI_API_KEY="sk-test-openai-key-000000",
            OPENAI_BASE_URL=llm.openai_base_url,
            DATABASE_URL=f"sqlite:///{database}",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            LOG_LEVEL="INFO",
            **extra,
        )
        texts = [f"killed backlog {n}" for n in range(8)]
        first = BotProcess(env, tmp_path / "first.log")
        await first.start()
        try:
            await first.wait_healthy()
            for text in texts:
                tg.user_message(text, user_id=USER)
            await tg.wait_for_call("sendMessage", chat_id=USER, timeout=30)
        finally:
            await first.kill()
        answered_before = len(tg.calls_of("sendMessage", chat_id=USER))
        assert answered_before < len(texts)

        second = BotProcess(env, tmp_path / "second.log")
        await second.start()
        try:
            await second.wait_healthy()
            calls = await tg.wait_for_call(
                "sendMessage", chat_id=USER, count=len(texts), timeout=60
            )
            await asyncio.sleep(0.5)
        finally:
            await second.stop()
        assert len(calls) == len(texts), second.tail()
        # Every message stored once, in the order sent (the one in flight at the kill was run
        # again by the second process: its reply may have gone out twice, its rows are once).
        with sqlite3.connect(database) as db:
            stored = [
                r[0]
                for r in db.execute(
                    "SELECT text FROM messages WHERE chat_id = ? AND role = 'user' ORDER BY id",
                    (USER,),
                )
            ]
        assert stored == texts
