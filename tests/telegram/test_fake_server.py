"""The fake Bot API server answers the real aiogram Bot the way Telegram does."""

from __future__ import annotations

import asyncio

import pytest
from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest, TelegramConflictError, TelegramNotFound
from aiogram.methods import GetUpdates
from aiohttp import web

from tests.fakes.telegram_server import FakeTelegramServer, TelegramHTMLError, parse_telegram_html
from tests.telegram.conftest import eventually


async def test_get_me_identifies_the_bot(tg: FakeTelegramServer, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username) == (tg.bot_id, tg.bot_username)


async def test_wrong_token_is_unauthorized(tg: FakeTelegramServer) -> None:
    from aiogram.exceptions import TelegramUnauthorizedError

    other = Bot("42:wrong", session=tg.make_bot().session)
    try:
        with pytest.raises(TelegramUnauthorizedError):
            await other.get_me()
    finally:
        await other.session.close()


async def test_long_poll_waits_for_a_push_and_offset_confirms(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    poll = asyncio.create_task(bot(GetUpdates(timeout=5)))
    await asyncio.sleep(0.05)
    assert not poll.done()  # nothing queued: the request is held open
    pushed = tg.user_message("hi", user_id=7)
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [pushed["update_id"]]
    assert updates[0].message is not None
    assert updates[0].message.text == "hi"
    # Not confirmed yet: returned again; confirmed by offset: gone.
    again = await bot(GetUpdates(timeout=0))
    assert [u.update_id for u in again] == [pushed["update_id"]]
    assert await bot(GetUpdates(offset=pushed["update_id"] + 1, timeout=0)) == []


async def test_limit_and_entities_of_commands_and_mentions(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    for i in range(3):
        tg.user_message(f"/learn@coach_test_bot topic {i} @someone", user_id=5, chat_id=-100)
    updates = await bot(GetUpdates(limit=2, timeout=0))
    assert len(updates) == 2
    message = updates[0].message
    assert message is not None
    assert message.chat.type == "supergroup"
    assert message.entities is not None
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bot_command", 0, len("/learn@coach_test_bot")),
        ("mention", len("/learn@coach_test_bot topic 0 "), len("@someone")),
    ]


async def test_reply_to_a_bot_message_carries_it(tg: FakeTelegramServer, bot: Bot) -> None:
    sent = await bot.send_message(-5, "question?")
    tg.user_message("answer", user_id=3, chat_id=-5, reply_to_message_id=sent.message_id)
    (update,) = await bot(GetUpdates(timeout=0))
    assert update.message is not None
    assert update.message.reply_to_message is not None
    assert update.message.reply_to_message.from_user is not None
    assert update.message.reply_to_message.from_user.id == tg.bot_id
    assert update.message.reply_to_message.text == "question?"


async def test_send_message_ids_increase_and_html_is_checked(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    first = await bot.send_message(1, "<b>a &amp; b</b>", parse_mode="HTML")
    second = await bot.send_message(1, "<b>unclosed", parse_mode=None)
    assert second.message_id == first.message_id + 1
    assert [m.text for m in tg.chat_messages(1)] == ["a & b", "<b>unclosed"]
    with pytest.raises(TelegramBadRequest, match="can't parse entities"):
        await bot.send_message(1, "<b>unclosed", parse_mode="HTML")
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(1, "😀" * 2049)  # 4098 UTF-16 units
    await bot.send_message(1, "<i>" + "x" * 4096 + "</i>", parse_mode="HTML")  # tags are free


def test_html_parser_matches_telegram_rules() -> None:
    assert (
        parse_telegram_html('<a href="https://x">l</a> &lt;&#65;&#x42;&quot; & x') == 'l <AB" & x'
    )
    assert parse_telegram_html('<pre><code class="language-py">x</code></pre>') == "x"
    for bad, fragment in [
        ("<br>", 'Unsupported start tag "br"'),
        ("x</i>", "Unexpected end tag"),
        ("<b><i>x</b></i>", 'expected "</i>", found "</b>"'),
        ("<b>x", 'start tag "b"'),
        ("a < b", 'Unsupported start tag ""'),
        ("&nbsp;", 'Unsupported HTML entity "&nbsp;"'),
    ]:
        with pytest.raises(TelegramHTMLError, match=fragment):
            parse_telegram_html(bad)


async def test_edit_delete_and_not_modified(tg: FakeTelegramServer, bot: Bot) -> None:
    sent = await bot.send_message(2, "one")
    await bot.edit_message_text(chat_id=2, message_id=sent.message_id, text="two")
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(chat_id=2, message_id=sent.message_id, text="two")
    assert [(m.text, m.edits) for m in tg.chat_messages(2)] == [("two", 1)]
    assert await bot.delete_message(chat_id=2, message_id=sent.message_id)
    assert tg.chat_messages(2) == []
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(chat_id=2, message_id=sent.message_id, text="three")


async def test_drafts_only_in_private_chats(tg: FakeTelegramServer, bot: Bot) -> None:
    assert await bot.send_message_draft(chat_id=9, draft_id=1, text="<i>par</i>", parse_mode="HTML")
    assert tg.drafts[(9, 1)] == "par"
    with pytest.raises(TelegramBadRequest):
        await bot.send_message_draft(chat_id=-9, draft_id=1, text="x")
    tg.disable_method("sendMessageDraft")
    with pytest.raises(TelegramNotFound):
        await bot.send_message_draft(chat_id=9, draft_id=1, text="x")


async def test_faults_are_injected_in_order_then_clear(tg: FakeTelegramServer) -> None:
    plain = tg.make_bot()  # no flood middleware: the raw errors
    try:
        from aiogram.exceptions import TelegramRetryAfter, TelegramServerError

        tg.flood_next("sendMessage", retry_after=3)
        tg.server_error_next("sendMessage", status=502)
        with pytest.raises(TelegramRetryAfter) as flood:
            await plain.send_message(1, "a")
        assert flood.value.retry_after == 3
        with pytest.raises(TelegramServerError):
            await plain.send_message(1, "a")
        await plain.send_message(1, "a")
        assert [c.status for c in tg.calls_of("sendMessage")] == [429, 502, 200]
    finally:
        await plain.session.close()


async def test_wait_for_sees_calls_made_later(tg: FakeTelegramServer, bot: Bot) -> None:
    waiter = asyncio.create_task(tg.wait_for_call("sendMessage", chat_id=4, count=2, timeout=5))
    await bot.send_message(3, "other chat")
    await bot.send_message(4, "one")
    await bot.send_message(4, "two")
    calls = await waiter
    assert [c.text for c in calls] == ["one", "two"]
    with pytest.raises(TimeoutError):
        await tg.wait_for(lambda c: c.method == "deleteMessage", timeout=0.05)


async def test_webhook_mode_posts_updates_with_the_secret(tg: FakeTelegramServer, bot: Bot) -> None:
    received: list[tuple[str | None, int]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        received.append((request.headers.get("X-Telegram-Bot-Api-Secret-Token"), body["update_id"]))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        await bot.set_webhook(f"http://127.0.0.1:{port}/hook", secret_token="s3cret")
        assert (await bot.get_webhook_info()).url.endswith("/hook")
        with pytest.raises(TelegramConflictError):
            await bot(GetUpdates(timeout=0))
        first = tg.user_message("a", user_id=1)
        second = tg.user_message("b", user_id=1)
        await eventually(lambda: len(received) == 2)
        assert received == [("s3cret", first["update_id"]), ("s3cret", second["update_id"])]
        assert await tg.post_to_webhook({"update_id": 99}, secret="wrong") == 200
        assert received[-1] == ("wrong", 99)
        await bot.delete_webhook()
        assert (await bot.get_webhook_info()).url == ""
    finally:
        await runner.cleanup()
