"""`python -m bot check`, run as an operator runs it, against services on loopback: one line per
service, `ok` or `FAIL` with the variable to look at, exit code 0 only when everything answered,
and never a secret in what it prints."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

from bot.check import collect_checks
from bot.config import Settings
from tests.fakes.bot_process import clean_env
from tests.fakes.llm_server import FakeLLMServer, unused_port_url
from tests.fakes.telegram_server import FakeTelegramServer

OPENAI_KEY = "sk-check-openai-key-0123456789"
BOT_SECRET = "bot-secret-key-for-the-check-test-0123456789"


@dataclass
class Checked:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def line(self, service: str) -> str:
        for line in self.out.splitlines():
            if line[4:].strip().startswith(service):
                return line
        raise AssertionError(f"no line for {service!r} in:\n{self.out}")


async def run_check(tmp_path: Path, *, command: str = "check", **env: str) -> Checked:
    """`python -m bot check` (or another `command`) as an operator runs it."""
    # In an empty folder, so no developer's .env is read.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        command,
        env=clean_env(**env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return Checked(process.returncode, out.decode(), err.decode())


def base_env(tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE": tg.url,
        "DEFAULT_MODEL": "openai:gpt-4o-mini",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": llm.openai_base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "BOT_SECRET_KEY": BOT_SECRET,
    }


async def test_every_service_answering_prints_ok_lines_and_exits_0(
    tmp_path: Path, redis_url: str
) -> None:
    async with FakeTelegramServer() as tg, FakeLLMServer() as llm:
        checked = await run_check(tmp_path, **base_env(tmp_path, tg, llm), REDIS_URL=redis_url)

    assert checked.code == 0, checked.text
    for service in ("configuration", "database", "telegram", "redis", "provider openai"):
        assert checked.line(service).startswith("ok "), checked.out
    assert f"@{tg.bot_username}" in checked.line("telegram")
    assert "2 model(s)" in checked.line("provider openai")
    assert "polling" in checked.line("webhook")
    for secret in (tg.token, OPENAI_KEY, BOT_SECRET):
        assert secret not in checked.text


async def test_an_unreachable_service_and_a_rejected_token_fail_and_exit_1(
    tmp_path: Path,
) -> None:
    async with FakeTelegramServer() as tg, FakeLLMServer() as llm:
        wrong_token = "987654321:a-token-telegram-does-not-know"
        env = base_env(tmp_path, tg, llm)
        env.update(
            TELEGRAM_BOT_TOKEN=wrong_token,
            REDIS_URL=unused_port_url().replace("http://", "redis://") + "/0",
        )
        checked = await run_check(tmp_path, **env)

    assert checked.code == 1, checked.text
    assert checked.line("redis").startswith("FAIL"), checked.out
    telegram = checked.line("telegram")
    assert telegram.startswith("FAIL")
    assert "TELEGRAM_BOT_TOKEN was rejected" in telegram
    # The services that did answer still say so.
    assert checked.line("database").startswith("ok ")
    assert checked.line("provider openai").startswith("ok ")
    for secret in (wrong_token, OPENAI_KEY, BOT_SECRET):
        assert secret not in checked.text


async def test_a_missing_provider_key_fails_the_configuration_line(tmp_path: Path) -> None:
    async with FakeTelegramServer() as tg, FakeLLMServer() as llm:
        env = base_env(tmp_path, tg, llm)
        env["DEFAULT_MODEL"] = "anthropic:claude-sonnet-4-5"
        checked = await run_check(tmp_path, **env)

    assert checked.code == 2, checked.text  # the configuration, not a service
    configuration = checked.line("configuration")
    assert configuration.startswith("FAIL")
    assert "ANTHROPIC_API_KEY" in configuration


async def test_a_webhook_without_a_secret_is_reported_by_name_and_exits_2(
    tmp_path: Path,
) -> None:
    async with FakeTelegramServer() as tg, FakeLLMServer() as llm:
        env = base_env(tmp_path, tg, llm)
        env["WEBHOOK_URL"] = "https://bot.example.com/webhook"
        checked = await run_check(tmp_path, **env)

    assert checked.code == 2, checked.text
    assert "WEBHOOK_SECRET" in checked.err
    assert "Traceback" not in checked.text


async def test_a_webhook_with_its_secret_is_reported_without_the_secret(tmp_path: Path) -> None:
    secret = "a-webhook-secret-0123456789"
    async with FakeTelegramServer() as tg, FakeLLMServer() as llm:
        env = base_env(tmp_path, tg, llm)
        env.update(WEBHOOK_URL="https://bot.example.com/webhook", WEBHOOK_SECRET=secret)
        checked = await run_check(tmp_path, **env)

    assert checked.code == 0, checked.text
    webhook = checked.line("webhook")
    assert webhook.startswith("ok ")
    assert "https://bot.example.com/webhook" in webhook
    assert "secret set" in webhook
    assert secret not in checked.text


async def test_an_error_that_quotes_the_token_in_a_url_is_scrubbed(tmp_path: Path) -> None:
    """httpx puts the request URL in its errors, and Telegram's URLs carry the bot token."""
    async with FakeLLMServer() as not_telegram:  # answers 404 to /bot<token>/getMe
        token = "123456789:the-token-in-the-url"
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            telegram_bot_token=token,
            telegram_api_base=not_telegram.url,
            database_url=f"sqlite:///{tmp_path / 'bot.db'}",
        )
        results = {r.service: r for r in await collect_checks(settings)}

    telegram = results["telegram"]
    assert not telegram.ok
    assert "404" in telegram.detail
    assert "/bot***/getMe" in telegram.detail  # the URL is there, the token is not
    assert token not in telegram.line()
