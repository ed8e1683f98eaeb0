"""Flood control waits out Telegram's 429 and retries; it gives up when told to wait too long."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramRetryAfter, TelegramServerError

from bot.telegram.flood import FloodControlMiddleware
from tests.fakes.telegram_server import FakeTelegramServer


async def test_retry_after_is_waited_out_and_the_call_succeeds(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    tg.flood_next("sendMessage", retry_after=1)
    message = await bot.send_message(11, "hello")
    attempts = tg.calls_of("sendMessage", chat_id=11)
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0
    assert message.message_id == tg.chat_messages(11)[0].message_id


async def test_too_long_a_wait_or_too_many_floods_reach_the_caller(tg: FakeTelegramServer) -> None:
    bot = tg.make_bot()
    bot.session.middleware(FloodControlMiddleware(max_wait=0.5, max_retries=1))
    try:
        tg.flood_next("sendMessage", retry_after=30)
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(12, "x")
        assert len(tg.calls_of("sendMessage")) == 1  # did not sleep 30 s, did not retry
    finally:
        await bot.session.close()


async def test_server_errors_are_retried_briefly(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.server_error_next("sendMessage", status=502, times=2)
    await bot.send_message(13, "x")
    assert [c.status for c in tg.calls_of("sendMessage")] == [502, 502, 200]
    tg.server_error_next("sendMessage", times=3)
    with pytest.raises(TelegramServerError):
        await bot.send_message(13, "y")


async def test_bad_requests_are_not_retried(tg: FakeTelegramServer, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(14, "<b>", parse_mode="HTML")
    assert len(tg.calls_of("sendMessage")) == 1
