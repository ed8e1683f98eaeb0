"""Who may use the bot, end to end: the real Dispatcher long-polls the fake Bot API, models answer
on loopback through the real SDKs, storage is a real SQLite file. For every mode: what a stranger
is told, that no model is called for them and nothing of theirs is kept; approval by the button
letting them in at once on every replica; and a flood costing at most the rate limit's worth."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

from aiogram.types import Update

from bot.app import build_services
from bot.pipeline.observer import NullObserver
from bot.telegram.dispatcher import build_dispatcher, create_bot
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

STRANGER = 950
GROUP = -4242
COACH_REPLY = "Try a fixed wind-down routine (m-coach)."


async def quiet(tg: FakeTelegramServer, chat: int, since: int, seconds: float = 0.6) -> None:
    """Assert that the bot sends nothing to `chat` for a while."""
    await asyncio.sleep(seconds)
    assert tg.calls_of("sendMessage", chat_id=chat)[since:] == []


async def test_allowlist_refuses_strangers_once_and_calls_no_model(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(
        tmp_path,
        tg,
        llm,
        access_mode="allowlist",
        allowed_user_ids=[USER],
        allowed_chat_ids=[GROUP],
    )
    async with running_bot(settings, tg, llm) as harness:
        (refusal,) = await harness.say("hello, can I use you?", user_id=STRANGER)
        assert f"Your Telegram user id is {STRANGER}" in refusal
        sent = len(tg.calls_of("sendMessage", chat_id=STRANGER))
        tg.user_message("hello again?", user_id=STRANGER)
        tg.user_message("/learn sleep", user_id=STRANGER)
        await quiet(tg, STRANGER, sent)
        assert llm.requests == []  # no model was called for the stranger
        storage = harness.services.storage
        assert await storage.users.get(STRANGER) is None  # nothing of theirs beyond the refusal
        assert await storage.messages.recent(STRANGER, 10) == []
        # A listed user, and anyone in a listed group, are served.
        assert await harness.say("I work night shifts", user_id=USER) == [COACH_REPLY]
        mark = len(tg.calls)
        tg.user_message("@coach_test_bot hi all", user_id=STRANGER, chat_id=GROUP)
        await tg.wait_for(
            lambda c: c.chat_id == GROUP and c.text is not None and "m-coach" in c.text,
            since=mark,
        )
        # An unlisted group is refused once, by its chat id; its chatter is dropped silently.
        (group_refusal,) = await harness.say("@coach_test_bot hello", user_id=USER, chat_id=-77)
        assert "Its chat id is -77" in group_refusal
        tg.user_message("just chatting among ourselves", user_id=USER, chat_id=-77)
        tg.user_message("@coach_test_bot hello?", user_id=USER, chat_id=-77)
        await quiet(tg, -77, 1)
        # An admin lets the stranger in from chat.
        (allowed,) = await harness.say(f"/users allow {STRANGER}", user_id=ADMIN)
        assert allowed.startswith(f"Allowed {STRANGER}")
        assert await harness.say("now?", user_id=STRANGER) == [COACH_REPLY]
        (listing,) = await harness.say("/users", user_id=ADMIN)
        assert "Access: allowlist" in listing
        assert str(STRANGER) in listing
        (refused,) = await harness.say("/users", user_id=USER)
        assert "for the bot's admins" in refused


async def test_open_mode_serves_anyone_but_a_blocked_user_once_notified(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as harness:
        assert await harness.say("hi", user_id=STRANGER) == [COACH_REPLY]
        (blocked,) = await harness.say(f"/users block {STRANGER}", user_id=ADMIN)
        assert blocked.startswith(f"Blocked {STRANGER}")
        (admin_refused,) = await harness.say(f"/users block {ADMIN}", user_id=ADMIN)
        assert "admin" in admin_refused
        mark = len(llm.requests)
        (notice,) = await harness.say("hello?", user_id=STRANGER)
        assert notice == "Sorry, you can't use this bot."
        sent = len(tg.calls_of("sendMessage", chat_id=STRANGER))
        tg.user_message("hello???", user_id=STRANGER)
        await quiet(tg, STRANGER, sent)
        assert len(llm.requests) == mark


def _private_update(update_id: int, user_id: int, text: str, message_id: int) -> dict[str, Any]:
    user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": user_id, "type": "private", "first_name": f"User{user_id}"},
            "from": user,
            "text": text,
        },
    }


async def test_approval_by_the_button_answers_the_waiting_message_on_every_replica(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(tmp_path, tg, llm, access_mode="approval")
    # Replica B: its own services and dispatcher over the same database, fed directly (as the
    # webhook would feed it), sending through the same Bot API.
    async with (
        running_bot(settings, tg, llm) as harness,
        build_services(settings, observer=NullObserver()) as services_b,
    ):
        bot_b = create_bot(settings)
        dp_b = build_dispatcher(services_b)
        ids = itertools.count(10_000)

        async def feed_b(user_id: int, text: str) -> None:
            raw = _private_update(next(ids), user_id, text, next(ids))
            await dp_b.feed_update(bot_b, Update.model_validate(raw, context={"bot": bot_b}))

        try:
            mark = len(tg.calls)
            (waiting,) = await harness.say("I'd like help with my sleep", user_id=STRANGER)
            assert "I've asked them" in waiting
            (ask,) = await tg.wait_for_call("sendMessage", chat_id=ADMIN, since=mark)
            assert str(STRANGER) in ask.params["text"]
            sent = len(tg.calls_of("sendMessage", chat_id=STRANGER))
            tg.user_message("are you there?", user_id=STRANGER)
            await feed_b(STRANGER, "hello replica b?")  # b reads its copy of the table here
            await quiet(tg, STRANGER, sent)
            assert llm.requests == []

            # The admin presses Approve: the waiting message is answered.
            mark = len(tg.calls)
            ask_message = tg.chat_messages(ADMIN)[-1]
            tg.callback_query(
                f"acc:a:{STRANGER}", user_id=ADMIN, chat_id=ADMIN, message_id=ask_message.message_id
            )
            calls = await tg.wait_for_call(
                "sendMessage", chat_id=STRANGER, count=2, since=mark, timeout=15
            )
            texts = [c.params["text"] for c in calls]
            assert texts[0].startswith("Good news")
            assert tg.chat_messages(STRANGER)[-1].text == COACH_REPLY
            assert "approved by tg:900" in tg.chat_messages(ADMIN)[-1].text
            stored = await harness.services.storage.messages.recent(STRANGER, 10)
            assert [m.text for m in stored if m.role == "user"] == ["I'd like help with my sleep"]

            # Replica B lets them in at once too (its copy is younger than the 60 s ttl).
            mark = len(tg.calls)
            await feed_b(STRANGER, "and now on replica b")
            await tg.wait_for_call("sendMessage", chat_id=STRANGER, since=mark, timeout=15)
            assert tg.chat_messages(STRANGER)[-1].text == COACH_REPLY

            # A second press (another admin, a double tap) changes nothing.
            tg.callback_query(
                f"acc:d:{STRANGER}", user_id=ADMIN, chat_id=ADMIN, message_id=ask_message.message_id
            )
            answer = await tg.wait_for_call("answerCallbackQuery", since=mark)
            assert "already decided" in answer[0].params.get("text", "")
        finally:
            await bot_b.session.close()


async def test_deny_tells_the_stranger_once_and_nothing_is_answered(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(tmp_path, tg, llm, access_mode="approval")
    async with running_bot(settings, tg, llm) as harness:
        await harness.say("let me in", user_id=STRANGER)
        await tg.wait_for_call("sendMessage", chat_id=ADMIN)
        mark = len(tg.calls)
        tg.callback_query(f"acc:d:{STRANGER}", user_id=ADMIN, chat_id=ADMIN)
        (told,) = await tg.wait_for_call("sendMessage", chat_id=STRANGER, since=mark)
        assert told.params["text"] == "Sorry, the bot's admins did not let you in."
        sent = len(tg.calls_of("sendMessage", chat_id=STRANGER))
        tg.user_message("please?", user_id=STRANGER)
        await quiet(tg, STRANGER, sent)
        assert llm.requests == []
        # A forged Approve from a non-admin does nothing.
        tg.callback_query(f"acc:a:{STRANGER}", user_id=USER, chat_id=USER)
        await quiet(tg, STRANGER, sent, seconds=0.3)
        entry = await harness.services.storage.access.get(STRANGER)
        assert entry is not None
        assert entry.status == "blocked"


async def test_a_flood_costs_at_most_the_rate_limits_worth_of_model_calls(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(tmp_path, tg, llm, summary_every=20)
    harness: Harness
    async with running_bot(settings, tg, llm) as harness:
        for i in range(200):  # 200 messages in 10 s
            tg.user_message(f"message {i}", user_id=USER)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        in_flight = set(getattr(harness.dp, "_handle_update_tasks", ()))
        if in_flight:
            await asyncio.wait(in_flight, timeout=60)
        coach_turns = harness.agent_requests("coach")
        assert len(coach_turns) == 20  # USER_MESSAGES_PER_MINUTE, the default
        notices = [m for m in tg.chat_messages(USER) if "faster than I can keep up" in m.text]
        assert len(notices) == 1  # one kind notice in the minute
        # Admins are exempt.
        for i in range(25):
            tg.user_message(f"admin {i}", user_id=ADMIN)
        deadline = time.monotonic() + 60
        while len(harness.agent_requests("coach")) < 45 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(harness.agent_requests("coach")) == 45
