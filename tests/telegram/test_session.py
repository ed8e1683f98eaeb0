"""The Bot API session: JSON bodies for calls without files, aiogram's form for uploads."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError, TelegramNotFound, TelegramRetryAfter
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from bot.config import load_settings
from bot.telegram.dispatcher import create_bot
from bot.telegram.session import JsonAiohttpSession
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer

KEYBOARD = InlineKeyboardMarkup(
    inline_keyboard=[
        [
            InlineKeyboardButton(text="Good", callback_data="rate:1"),
            InlineKeyboardButton(text="Bad", callback_data="rate:0"),
        ]
    ]
)


def _bot(tg: FakeTelegramServer, **kwargs: object) -> Bot:
    session = JsonAiohttpSession(api=TelegramAPIServer.from_base(tg.url))
    return Bot(tg.token, session=session, **kwargs)  # type: ignore[arg-type]


async def test_the_app_bot_sends_json_with_nested_objects_as_objects(
    tg: FakeTelegramServer,
) -> None:
    settings = load_settings(_env_file=None, telegram_bot_token=tg.token, telegram_api_base=tg.url)
    bot = create_bot(settings)
    try:
        assert isinstance(bot.session, JsonAiohttpSession)
        sent = await bot.send_message(
            chat_id=42, text="<b>Hi</b> there", parse_mode="HTML", reply_markup=KEYBOARD
        )
        await bot.send_chat_action(chat_id=42, action="typing")
    finally:
        await bot.session.close()
    send, action = tg.calls[-2], tg.calls[-1]
    assert send.content_type == "application/json"
    # Numbers stay numbers and the keyboard an object (a form sends both as strings).
    assert send.params["chat_id"] == 42
    assert send.params["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "Good", "callback_data": "rate:1"},
                {"text": "Bad", "callback_data": "rate:0"},
            ]
        ]
    }
    assert send.params["parse_mode"] == "HTML"
    # Fields left unset are not sent at all.
    assert "message_thread_id" not in send.params
    assert "disable_notification" not in send.params
    # The answer is aiogram's parsed Message, as before.
    assert sent.text == "Hi there"
    assert sent.chat.id == 42
    assert action.method == "sendChatAction"
    assert action.params == {"chat_id": 42, "action": "typing"}


async def test_bot_defaults_are_applied_in_json_bodies(tg: FakeTelegramServer) -> None:
    bot = _bot(tg, default=DefaultBotProperties(parse_mode="HTML", protect_content=True))
    try:
        await bot.send_message(chat_id=7, text="<i>x</i>")
    finally:
        await bot.session.close()
    params = tg.calls[-1].params
    assert params["parse_mode"] == "HTML"
    assert params["protect_content"] is True


async def test_an_upload_still_goes_as_a_multipart_form(tg: FakeTelegramServer) -> None:
    bot = _bot(tg)
    try:
        # The fake has no sendDocument: the request still arrives and is recorded.
        with pytest.raises(TelegramNotFound):
            await bot.send_document(
                chat_id=7, document=BufferedInputFile(b"hello", filename="notes.txt")
            )
    finally:
        await bot.session.close()
    call = tg.calls[-1]
    assert call.method == "sendDocument"
    assert call.content_type == "multipart/form-data"
    assert call.params["chat_id"] == 7
    assert "document" in call.params


async def test_errors_are_aiograms_own(tg: FakeTelegramServer) -> None:
    bot = _bot(tg)
    try:
        tg.flood_next("sendMessage", retry_after=3)
        with pytest.raises(TelegramRetryAfter) as flood:
            await bot.send_message(chat_id=7, text="x")
        assert flood.value.retry_after == 3
    finally:
        await bot.session.close()
    closed = Bot(
        tg.token,
        session=JsonAiohttpSession(
            api=TelegramAPIServer.from_base(f"http://127.0.0.1:{free_port()}")
        ),
    )
    try:
        with pytest.raises(TelegramNetworkError, match="ClientConnectorError"):
            await closed.send_message(chat_id=7, text="x")
    finally:
        await closed.session.close()


async def test_json_and_form_sessions_make_the_same_call(tg: FakeTelegramServer) -> None:
    """What the JSON body says is what aiogram's form said, field for field."""
    form_bot = Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.url)))
    json_bot = _bot(tg)
    try:
        for bot in (form_bot, json_bot):
            await bot.send_message(
                chat_id=9,
                text="same",
                reply_markup=KEYBOARD,
                disable_notification=True,
                reply_parameters={"message_id": 1, "allow_sending_without_reply": True},
            )
    finally:
        await form_bot.session.close()
        await json_bot.session.close()
    form_call, json_call = tg.calls[-2], tg.calls[-1]
    assert form_call.content_type != "application/json"
    assert json_call.content_type == "application/json"
    normalized = {
        key: (int(value) if key == "chat_id" else value) for key, value in form_call.params.items()
    }
    normalized["disable_notification"] = normalized["disable_notification"] in (True, "true")
    assert json_call.params == normalized
