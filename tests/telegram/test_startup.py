"""Start-up reaches Telegram first: a rejected token says so, an outage is retried, then named."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from bot.app import build_services
from bot.config import ConfigError
from bot.pipeline.observer import NullObserver
from bot.telegram.runtime import BotRuntime, TelegramUnreachable
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, unused_port_url
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import make_settings

ROOT = Path(__file__).resolve().parents[2]


async def test_a_rejected_token_is_a_configuration_error_naming_the_variable(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        settings = make_settings(tmp_path, tg, llm, telegram_bot_token="999:not-this-bot")
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services)
            try:
                with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN was rejected"):
                    await runtime.start()
            finally:
                await runtime.stop()
    assert tg.calls_of("getUpdates") == []  # nothing went on after the refusal


async def test_an_unreachable_bot_api_is_retried_then_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tg = FakeTelegramServer()  # never started: nothing listens at its address
    async with FakeLLMServer() as llm:
        settings = make_settings(tmp_path, tg, llm, telegram_api_base=unused_port_url())
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services, startup_wait=1.5)
            started = time.monotonic()
            try:
                with pytest.raises(TelegramUnreachable, match="TELEGRAM_API_BASE"):
                    await runtime.start()
            finally:
                await runtime.stop()
    # It kept trying (with backoff) for most of the wait, then gave up without sleeping past it.
    assert 0.4 <= time.monotonic() - started < 10
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) >= 1


async def test_telegram_errors_at_start_up_are_waited_out(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    # The flood middleware retries a 5xx twice itself; these outlast it, so start-up retries too.
    tg.server_error_next("getMe", status=502, times=3)
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = make_settings(
            tmp_path, tg, llm, webhook_host="127.0.0.1", webhook_port=free_port()
        )
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services, startup_wait=20)
            try:
                await runtime.start()
                assert len(tg.calls_of("getMe")) >= 4
                assert tg.calls_of("getMe", ok=True)
            finally:
                runtime.request_stop()
                await runtime.stop()


async def test_python_m_bot_with_a_rejected_token_exits_with_a_message(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT),
        "TELEGRAM_BOT_TOKEN": "999:not-this-bot",
        "TELEGRAM_API_BASE": tg.url,
        "OPENAI_API_KEY": "sk-test-0000000000000000",
        "WEBHOOK_PORT": str(free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 2, stderr
    assert "TELEGRAM_BOT_TOKEN was rejected" in stderr
    assert "Traceback" not in stderr
    assert "not-this-bot" not in stderr  # the token itself is never printed
