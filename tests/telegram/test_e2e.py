"""End to end: the real Dispatcher long-polls the fake Bot API; models answer on loopback through
the real openai/anthropic SDKs; storage is a real SQLite file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.storage.sqlite import SQLiteStorage
from bot.telegram.routers.admin import REFUSAL
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, Fault, Script
from tests.fakes.telegram_server import FakeTelegramServer, utf16_len
from tests.telegram.e2e_kit import ADMIN, OVERRIDE, USER, Harness, make_settings, running_bot


@pytest.fixture
async def harness(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> AsyncIterator[Harness]:
    async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as running:
        yield running


async def test_start_greets_and_lists_the_commands(harness: Harness) -> None:
    (reply,) = await harness.say("/start")
    assert reply.startswith("Hi User901!")
    assert "/learn <topic>" in reply
    assert "/setmodel" not in reply  # admin commands only for admins
    (admin_help,) = await harness.say("/help", user_id=ADMIN)
    assert "/setmodel <target> <model>" in admin_help
    assert "/catalog" in admin_help
    assert "/rollback <target>" in admin_help
    assert harness.llm.requests == []  # no model was asked


async def test_a_turn_through_every_agent(harness: Harness) -> None:
    (reply,) = await harness.say("I work night shifts and sleep badly")
    assert reply == "Try a fixed wind-down routine (m-coach)."
    assert harness.tg.calls_of("sendMessageDraft", chat_id=USER)  # streamed as a draft
    assert harness.tg.calls_of("sendChatAction", chat_id=USER)  # "typing…" meanwhile
    (lesson,) = await harness.say("/learn sleep hygiene")
    assert lesson == "Try a fixed wind-down routine (m-tutor)."
    (exercise,) = await harness.say("/train sleep")
    assert exercise == "Exercise (sleep):\nName two habits that improve sleep."
    await harness.services.runner.wait_background()
    for agent in ("extraction", "strategist", "coach", "tutor", "trainer", "summarizer"):
        assert harness.agent_requests(agent), f"{agent}'s model got no request"
    # The coach went through the real anthropic SDK, the rest through the openai one.
    assert {r.api for r in harness.agent_requests("coach")} == {"anthropic"}
    assert {r.api for r in harness.agent_requests("strategist")} == {"openai"}
    stored = await harness.services.storage.messages.recent(USER, 10)
    assert [(m.role, m.pipeline) for m in stored] == [
        ("user", "support"),
        ("assistant", "support"),
        ("user", "learn"),
        ("assistant", "learn"),
        ("user", "train"),
        ("assistant", "train"),
    ]


async def test_train_round_trip_grades_the_answer_and_offers_the_next(harness: Harness) -> None:
    (first,) = await harness.say("/train sleep")
    assert first.startswith("Exercise (sleep):")
    mark = len(harness.llm.requests)
    (graded,) = await harness.say("No screens, and a fixed bedtime.")
    assert graded == (
        "Score: 8/10. Good answer; add one more habit.\n\n"
        "Exercise (sleep):\nName two habits that improve sleep."
    )
    trainer = harness.agent_requests("trainer", since=mark)
    assert len(trainer) == 2  # one grade, one new exercise
    assert "No screens, and a fixed bedtime." in trainer[0].last_user_text
    exercises = await harness.services.storage.exercises.list_for_user(USER)
    answered = [e for e in exercises if e.grade is not None]
    assert [e.answer for e in answered] == ["No screens, and a fixed bedtime."]
    assert len(exercises) == 2  # the graded one and the next, open
    (stopped,) = await harness.say("/stop")
    assert stopped.startswith("Training stopped")
    mark = len(harness.llm.requests)
    (chat,) = await harness.say("thanks!")
    assert chat == "Try a fixed wind-down routine (m-coach)."  # back to the support pipeline
    assert harness.agent_requests("trainer", since=mark) == []


async def test_setmodel_by_an_admin_changes_exactly_one_agent_on_the_next_message(
    harness: Harness,
) -> None:
    await harness.say("hello", user_id=USER)
    (confirm,) = await harness.say(f"/setmodel strategist {OVERRIDE}", user_id=ADMIN)
    assert confirm.startswith(
        f"strategist now runs on openrouter:{OVERRIDE} (was openai:m-strategist [agent])."
    )
    assert "Effective now here; within 60 s on other replicas (at once with Redis)." in confirm
    mark = len(harness.llm.requests)
    await harness.say("and now?", user_id=USER)
    await harness.services.runner.wait_background()
    later = harness.llm.requests[mark:]
    moved = [r for r in later if r.model == OVERRIDE]
    assert len(moved) == 1
    assert moved[0].path.startswith("/api/v1/")  # OpenRouter, with the shared key
    assert moved[0].headers["authorization"] == "Bearer sk-or-test-0000000000000000"
    assert harness.agent_requests("strategist", since=mark) == []
    for agent in ("extraction", "coach", "summarizer"):
        assert harness.agent_requests(agent, since=mark), f"{agent} moved too"
    history = await harness.services.storage.model_history.list("strategist")
    assert history[0].changed_by == f"tg:{ADMIN} (@user{ADMIN})"


async def test_setmodel_by_a_non_admin_is_refused_and_changes_nothing(harness: Harness) -> None:
    (reply,) = await harness.say(f"/setmodel strategist {OVERRIDE}", user_id=USER)
    assert reply == REFUSAL
    (reply,) = await harness.say("/models", user_id=USER)
    assert reply == REFUSAL
    mark = len(harness.llm.requests)
    await harness.say("hello", user_id=USER)
    assert [r.model for r in harness.llm.requests[mark:] if r.model == OVERRIDE] == []
    assert harness.agent_requests("strategist", since=mark)
    assert await harness.services.storage.model_config.get_all_active() == []
    openrouter = harness.services.openrouter_models
    assert openrouter is not None
    assert openrouter.fetches == 0  # refused before anything was looked up


async def test_unknown_agent_and_model_missing_from_the_catalog(harness: Harness) -> None:
    (unknown,) = await harness.say(f"/setmodel stratgist {OVERRIDE}", user_id=ADMIN)
    assert unknown == (
        "Not changed: unknown target 'stratgist'; did you mean 'strategist'?; targets: "
        "extraction, strategist, coach, tutor, trainer, summarizer, "
        "pipeline:<support|learn|train>, role:<chat|plan|post>, default"
    )
    (missing,) = await harness.say("/setmodel coach anthropic/claude-sonet-4.5", user_id=ADMIN)
    assert "'anthropic/claude-sonet-4.5' is not in OpenRouter's model catalog" in missing
    assert f"Did you mean: {OVERRIDE}" in missing
    (usage,) = await harness.say("/setmodel coach", user_id=ADMIN)
    assert usage.startswith("Usage: /setmodel <target> <model>")
    assert await harness.services.storage.model_config.get_all_active() == []
    assert [r.api for r in harness.llm.requests] == ["models"]  # one catalog fetch, cached


async def test_models_after_a_change_shows_source_who_and_when(harness: Harness) -> None:
    await harness.say(f"/setmodel coach {OVERRIDE}", user_id=ADMIN)
    (table,) = await harness.say("/models", user_id=ADMIN)
    support = table.split("learn\n")[0]
    lines = {line.split()[0]: line for line in support.splitlines()[1:]}
    assert f"openrouter:{OVERRIDE}  [override]  set by tg:{ADMIN} (@user{ADMIN})," in lines["coach"]
    assert "openai:m-strategist  [agent]  from AGENT_MODELS[strategist]" in lines["strategist"]
    assert set(lines) == {"extraction", "strategist", "coach", "summarizer"}
    assert table.splitlines()[-1].startswith("Configuration version ")
    (history,) = await harness.say("/modelhistory coach", user_id=ADMIN)
    assert f"coach: configured -> {OVERRIDE}  by tg:{ADMIN}" in history
    (reset,) = await harness.say("/resetmodel coach", user_id=ADMIN)
    assert reset.startswith("coach is back on its configured model anthropic:m-coach [agent]")
    (table,) = await harness.say("/models", user_id=ADMIN)
    assert "override" not in table


async def test_a_ten_thousand_character_reply_arrives_whole_in_several_messages(
    harness: Harness,
) -> None:
    long_reply = "\n\n".join(
        f"Paragraph {i}: " + "keep the same wind-down routine every night. " * 7 for i in range(32)
    )
    assert len(long_reply) >= 10_000
    harness.llm.scripts["m-coach"] = Script(text=long_reply)
    mark = len(harness.tg.calls)
    harness.tg.user_message("tell me everything", user_id=USER)
    calls = await harness.tg.wait_for_call("sendMessage", chat_id=USER, count=3, since=mark)
    await asyncio.sleep(0.2)  # nothing more is coming...
    sent = [c for c in harness.tg.calls_of("sendMessage", chat_id=USER, ok=True) if c.index >= mark]
    assert len(sent) == len(calls) == 3
    texts = [m.text for m in harness.messages(USER)]
    assert all(utf16_len(t) <= 4096 for t in texts)
    assert "".join("".join(t.split()) for t in texts) == "".join(long_reply.split())


async def test_a_429_from_telegram_is_waited_out_and_the_reply_still_arrives(
    harness: Harness,
) -> None:
    harness.tg.flood_next("sendMessage", retry_after=1)
    (reply,) = await harness.say("hello")
    assert reply == "Try a fixed wind-down routine (m-coach)."
    statuses = [c.status for c in harness.tg.calls_of("sendMessage", chat_id=USER)]
    assert statuses == [429, 200]
    first, second = harness.tg.calls_of("sendMessage", chat_id=USER)
    assert second.at - first.at >= 0.9  # retry_after was respected


async def test_two_quick_messages_are_answered_in_order(harness: Harness) -> None:
    harness.llm.scripts["m-coach"] = Script(
        # The user's words: the last paragraph of the turn (Anthropic merges the background
        # notes and the message into one user turn).
        text=lambda r: f"re: {r.last_user_text.rsplit(chr(10) * 2, 1)[-1]}",
        token_delay=0.05,
    )
    mark = len(harness.tg.calls)
    harness.tg.user_message("first question, a long one", user_id=USER)
    harness.tg.user_message("second", user_id=USER)
    await harness.tg.wait_for_call("sendMessage", chat_id=USER, count=2, since=mark)
    assert [m.text for m in harness.messages(USER)] == [
        "re: first question, a long one",
        "re: second",
    ]
    stored = await harness.services.storage.messages.recent(USER, 10)
    # Handled one after the other: the second question was stored after the first answer.
    assert [m.text for m in stored] == [
        "first question, a long one",
        "re: first question, a long one",
        "second",
        "re: second",
    ]


async def test_a_total_model_outage_gets_an_apology_and_the_next_message_works(
    harness: Harness,
) -> None:
    harness.llm.default = Script(fault=Fault.SERVER_ERROR)
    (apology,) = await harness.say("hello?")
    assert apology == (
        "Sorry, I can't reach the language model right now. Please try again in a minute."
    )
    harness.llm.default = Script(text=agent_reply)
    (reply,) = await harness.say("hello again")
    assert reply == "Try a fixed wind-down routine (m-coach)."


async def test_groups_answer_only_when_mentioned_or_replied_to(harness: Harness) -> None:
    group = -5001
    tg = harness.tg
    tg.user_message("just chatting among ourselves", user_id=USER, chat_id=group)
    mark = len(tg.calls)
    tg.user_message("@coach_test_bot how do I sleep better?", user_id=USER, chat_id=group)
    await tg.wait_for(
        lambda c: (
            c.method in ("editMessageText", "sendMessage")
            and c.chat_id == group
            and c.text is not None
            and "m-coach" in c.text
        ),
        since=mark,
    )
    (answer,) = tg.chat_messages(group)
    assert answer.text == "Try a fixed wind-down routine (m-coach)."
    assert tg.calls_of("sendMessageDraft") == []  # no drafts in groups: an edited placeholder
    coach = [r for r in harness.llm.requests if r.model == "m-coach"]
    assert len(coach) == 1  # the unaddressed message was not answered
    # The mention is not the question (the turn opens with the background notes).
    assert coach[0].last_user_text.endswith("\n\nhow do I sleep better?")
    mark = len(tg.calls)
    tg.user_message(
        "and on weekends?", user_id=USER, chat_id=group, reply_to_message_id=answer.message_id
    )
    await tg.wait_for(
        lambda c: c.method == "editMessageText" and c.chat_id == group and "m-coach" in str(c.text),
        since=mark,
    )
    await harness.services.runner.wait_background()
    assert len([r for r in harness.llm.requests if r.model == "m-coach"]) == 2


async def test_an_override_survives_a_restart(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(tmp_path, tg, llm)
    async with running_bot(settings, tg, llm) as first:
        await first.say(f"/setmodel strategist {OVERRIDE}", user_id=ADMIN)
    mark = len(llm.requests)
    async with running_bot(settings, tg, llm) as second:
        await second.say("hello after the restart")
        assert [r.model for r in llm.requests[mark:] if r.model == OVERRIDE] == [OVERRIDE]
        assert second.agent_requests("strategist", since=mark) == []


async def test_setkey_tests_stores_encrypted_deletes_and_pays_for_the_users_agents(
    harness: Harness,
) -> None:
    tg = harness.tg
    user_key = "sk-user-own-key-1234567890abcdef"
    await harness.say(f"/setmodel strategist {OVERRIDE}", user_id=ADMIN)
    (menu,) = await harness.say("/model")
    # What writes the replies when the user chooses nothing: here the coach's AGENT_MODELS.
    assert menu.startswith("Your model: the bot's default (anthropic:m-coach)")
    mark = len(tg.calls)
    # The first offered: openai:m-default.
    tg.callback_query(f"model:m-default:{USER}", user_id=USER)
    await tg.wait_for_call("answerCallbackQuery", since=mark)
    await tg.wait_for_call("editMessageText", chat_id=USER, since=mark)
    stored = await harness.services.storage.settings.get(USER)
    assert stored is not None
    assert stored.default_model == "m-default"  # its catalog alias

    update = tg.user_message(f"/setkey openai {user_key}", user_id=USER)
    mark = len(tg.calls)
    (reply,) = await tg.wait_for_call("sendMessage", chat_id=USER, since=mark)
    deleted = tg.calls_of("deleteMessage", chat_id=USER)
    assert [c.params["message_id"] for c in deleted] == [update["message"]["message_id"]]
    assert deleted[0].index < reply.index  # gone before anything else was said
    text = str(reply.text)
    assert user_key not in text
    assert text.startswith("Your openai key works and is saved, encrypted. It pays for: ")
    paid = text.split("It pays for: ")[1].split(" (")[0].split(", ")
    assert paid == ["extraction", "coach", "tutor", "trainer", "summarizer"]  # not the override
    test_call = [
        r for r in harness.llm.requests if r.headers.get("authorization", "").endswith(user_key)
    ]
    assert len(test_call) == 1
    assert test_call[0].body["max_tokens"] == 5
    row = await harness.services.storage.settings.get(USER)
    assert row is not None
    assert row.api_key_provider == "openai"
    assert row.api_key_encrypted is not None
    assert user_key not in row.api_key_encrypted

    mark = len(harness.llm.requests)
    await harness.say("now on my own key")
    await harness.services.runner.wait_background()
    mine = [
        r
        for r in harness.llm.requests[mark:]
        if r.headers.get("authorization") == f"Bearer {user_key}"
    ]
    assert {r.model for r in mine} == {"m-default"}
    assert [r.model for r in harness.llm.requests[mark:] if r.model == OVERRIDE] == [OVERRIDE]
    assert all(user_key not in str(c.params) for c in tg.calls if c.method != "getUpdates")


async def test_setkey_with_a_refused_key_stores_nothing_but_still_deletes_it(
    harness: Harness,
) -> None:
    harness.llm.scripts["m-default"] = Script(fault=Fault.BAD_REQUEST)
    update = harness.tg.user_message("/setkey openai sk-wrong-key-000000000000", user_id=USER)
    mark = len(harness.tg.calls)
    (reply,) = await harness.tg.wait_for_call("sendMessage", chat_id=USER, since=mark)
    assert "did not save it" in str(reply.text)
    assert "sk-wrong" not in str(reply.text)
    assert [c.params["message_id"] for c in harness.tg.calls_of("deleteMessage")] == [
        update["message"]["message_id"]
    ]
    assert await harness.services.storage.settings.get(USER) is None


async def test_forget_clears_the_chat_history_and_summary(harness: Harness) -> None:
    await harness.say("remember this")
    await harness.services.runner.wait_background()
    storage = harness.services.storage
    assert await storage.messages.count(USER) == 2
    assert await storage.summaries.get(USER) is not None
    (reply,) = await harness.say("/forget")
    assert reply.startswith("Done")
    assert await storage.messages.count(USER) == 0
    assert await storage.summaries.get(USER) is None


async def test_while_storage_is_down_replies_go_on_with_one_note_and_messages_come_later(
    harness: Harness,
) -> None:
    storage = harness.services.storage
    assert isinstance(storage, SQLiteStorage)
    from bot.storage.repositories import StorageUnavailable
    from bot.telegram.routers.common import MEMORY_NOTE

    async def broken_add(message: object) -> object:
        raise StorageUnavailable("database is locked")

    original = storage.messages.add
    storage.messages.add = broken_add  # type: ignore[method-assign]
    try:
        (reply,) = await harness.say("hello")
        (second,) = await harness.say("hello again")
    finally:
        storage.messages.add = original  # type: ignore[method-assign]
    assert reply == f"Try a fixed wind-down routine (m-coach).\n\n{MEMORY_NOTE}"
    assert second == "Try a fixed wind-down routine (m-coach)."  # told once per chat
    assert await harness.services.conversation.continuity.flush()
    stored = [(m.role, m.text) for m in await storage.messages.recent(USER, 10)]
    assert stored == [
        ("user", "hello"),
        ("assistant", "Try a fixed wind-down routine (m-coach)."),
        ("user", "hello again"),
        ("assistant", "Try a fixed wind-down routine (m-coach)."),
    ]


async def test_a_reply_cut_off_mid_stream_keeps_its_text_and_says_why(harness: Harness) -> None:
    harness.llm.script(
        "m-coach", text=agent_reply, fault=Fault.CUT_STREAM, error_after_tokens=3, token_delay=0
    )
    (reply,) = await harness.say("hello?")
    partial, _, notice = reply.partition("\n\n")
    assert partial
    assert "Try a fixed wind-down routine (m-coach).".startswith(partial)
    assert partial != "Try a fixed wind-down routine (m-coach)."  # it really was cut off
    assert notice.startswith("(Sorry")
    assert notice.endswith("try again.)") or notice.endswith("in a minute.)")
    # The broken exchange is not stored as the bot's answer; the next message works.
    stored = await harness.services.storage.messages.recent(USER, 10)
    assert [m.role for m in stored] == ["user"]
    harness.llm.scripts.pop("m-coach")
    (reply,) = await harness.say("hello again")
    assert reply == "Try a fixed wind-down routine (m-coach)."


async def test_a_reply_that_could_not_be_saved_is_sent_with_a_note_on_that_message(
    harness: Harness,
) -> None:
    storage = harness.services.storage
    assert isinstance(storage, SQLiteStorage)
    from bot.storage.repositories import StorageUnavailable

    original = storage.messages.add

    async def reply_not_saved(message: Any) -> Any:
        if message.role == "assistant":
            raise StorageUnavailable("database is locked")
        return await original(message)

    storage.messages.add = reply_not_saved  # type: ignore[method-assign]
    # No room to keep it for later either (the queue of messages waiting for the database).
    harness.services.conversation.continuity.max_pending = 0
    try:
        mark = len(harness.tg.calls)
        update = harness.tg.user_message("hello", user_id=USER)
        calls = await harness.tg.wait_for_call(
            "sendMessage", chat_id=USER, count=2, since=mark, timeout=15
        )
    finally:
        storage.messages.add = original  # type: ignore[method-assign]
    reply, note = (c.text for c in calls)
    assert reply == "Try a fixed wind-down routine (m-coach)."
    assert note is not None
    assert note.startswith("(I couldn't save this conversation")
    # It answers the very message whose exchange was not saved.
    replied_to = calls[1].params["reply_parameters"]["message_id"]
    assert replied_to == update["message"]["message_id"]
    asked = [m for m in await storage.messages.recent(USER, 10) if m.role == "user"]
    assert [m.text for m in asked] == ["hello"]


async def test_the_pipeline_does_not_wait_for_the_thinking_draft(harness: Harness) -> None:
    """A Telegram round trip (50-200 ms from its servers) is not on the reply's critical path:
    the first model call goes out while the "Thinking…" draft is still on its way, and the
    reply still lands after that draft."""
    harness.tg.set_latency("sendMessageDraft", 0.5)
    mark, since = len(harness.tg.calls), len(harness.llm.requests)
    (reply,) = await harness.say("I work night shifts and sleep badly")
    assert reply == "Try a fixed wind-down routine (m-coach)."
    drafts = harness.tg.calls_of("sendMessageDraft", chat_id=USER)
    thinking = min(drafts, key=lambda call: call.at)
    assert thinking.index >= mark
    # The model server stamps wall-clock time, the Bot API server the monotonic clock.
    to_monotonic = time.monotonic() - time.time()
    first_model_call = min(r.received_at for r in harness.llm.requests[since:]) + to_monotonic
    assert first_model_call < thinking.at + 0.25
    [final] = [c for c in harness.tg.calls[mark:] if c.method == "sendMessage"]
    assert final.at >= thinking.at + 0.5
