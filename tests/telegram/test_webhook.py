"""Webhook mode: never open to the world. WEBHOOK_URL needs a WEBHOOK_SECRET of the characters
Telegram allows and an https:// address (plain http only on loopback); the running bot registers
its webhook with the secret and answers 401, handling nothing, to a request without it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import build_services
from bot.config import ConfigError, load_settings
from bot.pipeline.observer import NullObserver
from bot.telegram.runtime import BotRuntime
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import USER, make_settings

SECRET = "Webhook_secret-0123456789"


def settings_error(**values: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, **values)
    return str(caught.value)


def test_a_webhook_without_a_secret_refuses_to_start() -> None:
    message = settings_error(webhook_url="https://bot.example.com/webhook")
    assert "WEBHOOK_SECRET" in message


@pytest.mark.parametrize(
    "secret",
    ["has spaces", "semi;colon", "ünïcode", "x" * 257],
    ids=["space", "punctuation", "non-ascii", "too-long"],
)
def test_a_secret_telegram_would_refuse_names_the_variable_and_not_the_value(secret: str) -> None:
    message = settings_error(webhook_url="https://bot.example.com/webhook", webhook_secret=secret)
    assert "WEBHOOK_SECRET" in message
    assert "A-Z" in message  # says what is allowed
    assert secret not in message


def test_a_webhook_on_the_open_internet_must_be_https() -> None:
    message = settings_error(webhook_url="http://bot.example.com/webhook", webhook_secret=SECRET)
    assert "WEBHOOK_URL" in message
    assert "https" in message


@pytest.mark.parametrize(
    "url",
    [
        "https://bot.example.com/webhook",
        "http://127.0.0.1:8080/webhook",
        "http://localhost:8080/webhook",
    ],
)
def test_https_or_loopback_with_a_good_secret_is_accepted(url: str) -> None:
    secret = "A" * 256
    settings = load_settings(_env_file=None, webhook_url=url, webhook_secret=secret)
    assert settings.webhook_url == url
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == secret


def test_without_a_webhook_no_secret_is_needed() -> None:
    settings = load_settings(_env_file=None, webhook_url="", webhook_secret="")
    assert settings.webhook_url is None
    assert settings.webhook_secret is None


async def test_the_bot_registers_its_secret_and_refuses_requests_without_it(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        port = free_port()
        url = f"http://127.0.0.1:{port}/webhook"
        settings = make_settings(
            tmp_path,
            tg,
            llm,
            webhook_url=url,
            webhook_secret=SECRET,
            webhook_host="127.0.0.1",
            webhook_port=port,
        )
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services)
            await runtime.start()
            try:
                (registered,) = tg.calls_of("setWebhook", ok=True)
                assert registered.params["url"] == url
                assert registered.params["secret_token"] == SECRET
                tg.webhook_url = ""  # this test posts each update itself

                update = tg.user_message("hello", user_id=USER)
                assert await tg.post_to_webhook(update, secret="wrong-secret", url=url) == 401
                assert await tg.post_to_webhook(update, secret="", url=url) == 401
                await asyncio.sleep(0.3)
                assert tg.calls_of("sendMessage", chat_id=USER) == []
                assert [r for r in llm.requests if r.api != "models"] == []  # nothing handled

                assert await tg.post_to_webhook(update, secret=SECRET, url=url) == 200
                (reply,) = await tg.wait_for_call("sendMessage", chat_id=USER, timeout=15)
                assert "wind-down" in str(reply.text)
            finally:
                runtime.request_stop()
                await runtime.stop()
