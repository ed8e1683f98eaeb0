"""Issue 19, item 9: the command line and the console as a new user meets them. `python -m bot`
runs as a child process (in an empty folder, so no developer's .env is read); the console's
commands run on the real services with in-process models."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.app import build_services
from bot.check import configuration_problems
from bot.console import HELP, ConsoleSession
from bot.llm.local_runners.base import LOCAL_EXTRA_INSTALL
from bot.pipeline.observer import NullObserver
from bot.telegram.routers.start import USER_HELP
from tests.fakes.bot_process import clean_env
from tests.fakes.llm_server import FakeLLMServer, unused_port_url
from tests.services.fakes import FakeProviders
from tests.test_check import run_check
from tests.test_console import make_settings, reply_for

OPENAI = {"DEFAULT_MODEL": "openai:gpt-4o-mini", "OPENAI_API_KEY": "sk-newcomer-0123456789"}


async def test_a_token_that_is_not_one_gets_one_clear_line(tmp_path: Path) -> None:
    ran = await run_check(tmp_path, TELEGRAM_BOT_TOKEN="hello", **OPENAI, command="run")
    code, text = ran.code, ran.err
    assert code == 2
    assert "Traceback" not in text
    (line,) = text.strip().splitlines()
    assert line.startswith("TELEGRAM_BOT_TOKEN is not a bot token")
    assert "hello" not in line


async def test_an_unknown_log_level_is_named_not_a_traceback(tmp_path: Path) -> None:
    checked = await run_check(tmp_path, LOG_LEVEL="LOUD", **OPENAI)
    code, text = checked.code, checked.text
    assert code == 2
    assert "Traceback" not in text
    assert "LOG_LEVEL: 'LOUD' is not a log level; use one of DEBUG, INFO" in text


async def test_check_exits_2_for_a_missing_key_and_without_a_token(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "OPENAI_BASE_URL": unused_port_url(),
        **OPENAI,
    }
    checked = await run_check(tmp_path, **env)
    assert checked.code == 2, checked.text  # no TELEGRAM_BOT_TOKEN: the bot cannot run
    assert "TELEGRAM_BOT_TOKEN is not set" in checked.line("configuration")
    env.update(TELEGRAM_BOT_TOKEN="123456:ABCdef", DEFAULT_MODEL="anthropic:claude-sonnet-4-5")
    checked = await run_check(tmp_path, **env)
    assert checked.code == 2, checked.text
    assert "ANTHROPIC_API_KEY is not set" in checked.line("configuration")


def test_check_fails_an_mlx_model_whose_extra_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.services.model_checks as checks

    settings = make_settings(tmp_path, default_model="mlx:tiny", mlx_model_path=str(tmp_path))
    settings.telegram_bot_token = None
    assert not any("mlx" in p for p in configuration_problems(settings))
    monkeypatch.setattr(checks, "local_extra_installed", lambda: False)
    (problem,) = [p for p in configuration_problems(settings) if "mlx" in p]
    assert LOCAL_EXTRA_INSTALL in problem
    assert LOCAL_EXTRA_INSTALL == ".venv/bin/pip install -e '.[local]'"  # README's install line


async def test_console_is_quiet_at_info_and_ctrl_c_at_the_prompt_exits(tmp_path: Path) -> None:
    async with FakeLLMServer() as server:
        server.default.text = reply_for
        env = clean_env(
            DATABASE_URL=f"sqlite:///{tmp_path / 'bot.db'}",
            OPENAI_BASE_URL=server.openai_base_url,
            OPENROUTER_BASE_URL=server.openrouter_base_url,
            LOG_LEVEL="INFO",
            **OPENAI,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "console",
            env=env,
            cwd=tmp_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(b"I sleep badly\n")
        await process.stdin.drain()
        seen = b""
        while b"bot> Try a fixed wind-down" not in seen or not seen.rstrip().endswith(b"you>"):
            chunk = await asyncio.wait_for(process.stdout.read(1024), 30)
            assert chunk, seen.decode()
            seen += chunk
        # Idle at the prompt, stdin still open: Ctrl-C leaves.
        os.kill(process.pid, signal.SIGINT)
        rest = await asyncio.wait_for(process.stdout.read(), 30)
        code = await asyncio.wait_for(process.wait(), 30)
    shown = (seen + rest).decode()
    assert code == 130, shown
    assert "HTTP Request" not in shown  # no httpx line per model call
    assert "Traceback" not in shown


async def test_the_console_has_the_telegram_commands_and_help(tmp_path: Path) -> None:
    lines = ["/train fractions", "/stop", "/setkey sk-not-a-provider-0123 openai", "/forget"]
    out: list[str] = []
    feed = iter(lines)

    async def read() -> str | None:
        return next(feed, None)

    async with build_services(
        make_settings(tmp_path), providers=FakeProviders(), observer=NullObserver()
    ) as services:
        await services.storage.facts.add_many(1, ["likes tea"])
        session = ConsoleSession(services, read, out.append)
        assert await session.run() == 0
        assert await services.storage.facts.list(1) == []
    text = "".join(out)
    assert "Back to chat." in text  # /stop, as in Telegram
    # The key first, the provider second: read as meant, never repeated.
    assert "This bot is not set up to store users' keys" in text
    assert "sk-not" not in text.replace("/setkey sk-not", "")
    assert "the 1 fact I had noted about you" in text
    for command in ("/stop", "/model", "/setkey", "/forget", "/learn", "/train"):
        assert command in HELP
        assert command in USER_HELP
    assert "/chat" not in HELP
    logging.getLogger("httpx").setLevel(logging.NOTSET)
