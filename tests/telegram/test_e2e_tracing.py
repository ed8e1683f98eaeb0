"""Trace review from Telegram, end to end with tracing on: the real Langfuse SDK exports to a
loopback OTLP receiver; `/trace` links the chat's latest trace and 👍/👎 become scores on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.telegram.routers.common import trace_review
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.fakes.telegram_server import FakeTelegramServer
from tests.observability.kit import children, generations, one
from tests.telegram.e2e_kit import ADMIN, AGENT_MODELS, USER, make_settings, running_bot

SUPPORT_AGENTS = ["coach", "extraction", "strategist", "summarizer"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


async def test_trace_link_and_rating_buttons(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, receiver: OtlpReceiver
) -> None:
    settings = make_settings(
        tmp_path,
        tg,
        llm,
        langfuse_public_key=f"pk-lf-test-{uuid.uuid4().hex[:12]}",
        langfuse_secret_key=f"sk-lf-{uuid.uuid4().hex}",
        langfuse_base_url=receiver.base_url,
    )
    async with running_bot(settings, tg, llm, traced=True) as bot:
        tracing = trace_review(bot.services)
        assert tracing is not None

        (reply,) = await bot.say("I sleep badly", user_id=ADMIN)
        assert reply == "Try a fixed wind-down routine (m-coach)."
        # The buttons come with the reply itself: no edit afterwards.
        (sent,) = tg.calls_of("sendMessage", chat_id=ADMIN)
        assert sent.params.get("reply_markup")
        assert tg.calls_of("editMessageReplyMarkup", chat_id=ADMIN) == []
        stored = await bot.services.storage.messages.recent(ADMIN, 2)
        trace_id = stored[-1].trace_id
        assert trace_id is not None
        assert stored[0].trace_id == trace_id  # the question and the answer: one trace
        (message,) = tg.chat_messages(ADMIN)
        assert sent.result["message_id"] == message.message_id
        buttons = message.reply_markup["inline_keyboard"][0]
        assert [b["text"] for b in buttons] == ["👍", "👎"]
        turn = stored[0].id  # the user's message: the call ledger's turn
        assert [b["callback_data"] for b in buttons] == [
            f"rate:up:{trace_id}:{ADMIN}:{turn}:0",
            f"rate:down:{trace_id}:{ADMIN}:{turn}:0",
        ]

        (link,) = await bot.say("/trace", user_id=ADMIN)
        assert link == (
            f"Latest trace of this chat: {receiver.base_url}/project/proj-loopback/traces/"
            f"{trace_id}"
        )
        (refused,) = await bot.say("/trace", user_id=USER)
        assert refused == "Sorry, that command is for the bot's admins."

        mark = len(tg.calls)
        # The buttons of a reply sent before they named the user's message (four fields)
        # still rate its trace (those from before the ledger, three: test_hostile_input).
        tg.callback_query(
            f"rate:down:{trace_id}:{ADMIN}:{turn}", user_id=ADMIN, message_id=message.message_id
        )
        (answer,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
        assert answer.params["text"] == "Thanks for the feedback!"
        await tg.wait_for_call("editMessageReplyMarkup", chat_id=ADMIN, since=mark)
        assert tg.chat_messages(ADMIN)[0].reply_markup is None  # one rating per reply

        await bot.services.runner.wait_background()  # the summarizer, after the reply
        await bot.services.observer.flush()  # type: ignore[attr-defined]
        assert await receiver.wait_until_async(lambda r: len(r.scores()) >= 1)
        (score,) = receiver.scores()
        assert score["traceId"] == trace_id
        assert score["name"] == "user_rating"
        assert score["value"] == 0.0
        assert score["dataType"] == "BOOLEAN"

    # The trace itself reached Langfuse: the turn's root, one span per agent of the support
    # pipeline, and in each the generation of its one model call.
    def trace(r: OtlpReceiver) -> list[ReceivedSpan]:
        return [span for span in r.spans() if span.trace_id == trace_id]

    assert await receiver.wait_until_async(lambda r: len(trace(r)) >= 10)
    spans = trace(receiver)
    root = one(spans, "support")
    assert root.parent_id is None
    steps = children(spans, root)
    assert sorted(step.name for step in steps) == sorted([*SUPPORT_AGENTS, "archives"])
    for step in steps:
        assert step.observation_type == "agent"
        assert step.metadata("success") is True
        if step.name == "archives":  # the search of the user's notes calls no model
            assert children(spans, step) == []
            continue
        (generation,) = children(spans, step)
        assert generation.observation_type == "generation"
        assert generation.metadata("source") == "agent"
        provider, model = AGENT_MODELS[step.name].split(":", 1)
        assert generation.metadata("provider") == provider
        assert generation.attributes["langfuse.observation.model.name"] == model
    assert len(spans) == 1 + 5 + 4
    # One generation per model call the LLM server saw, nothing more.
    calls = [r.model for r in llm.requests if r.api in ("openai", "anthropic")]
    assert sorted(calls) == sorted(
        g.attributes["langfuse.observation.model.name"] for g in generations(spans)
    )
    assert {span.trace_id for span in receiver.spans()} == {trace_id}


async def test_without_tracing_replies_have_no_buttons_and_trace_says_so(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as bot:
        await bot.say("hello", user_id=ADMIN)
        assert tg.calls_of("editMessageReplyMarkup") == []
        (reply,) = await bot.say("/trace", user_id=ADMIN)
        assert reply.startswith("Tracing is off")


async def test_the_trace_names_each_models_level_who_set_it_and_the_configuration_version(
    tmp_path: Path,
    tg: FakeTelegramServer,
    llm: FakeLLMServer,
    receiver: OtlpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        tmp_path,
        tg,
        llm,
        langfuse_public_key=f"pk-lf-test-{uuid.uuid4().hex[:12]}",
        langfuse_secret_key=f"sk-lf-{uuid.uuid4().hex}",
        langfuse_base_url=receiver.base_url,
    )
    admin = f"tg:{ADMIN} (@user{ADMIN})"
    with caplog.at_level("INFO", logger="bot.services.model_resolution"):
        async with running_bot(settings, tg, llm, traced=True) as bot:
            await bot.say('/catalog add planner openai:m-planner name="Planner"', user_id=ADMIN)
            await bot.say("/setmodel role:plan planner", user_id=ADMIN)
            await bot.say("I sleep badly", user_id=USER)
            await bot.services.runner.wait_background()
            stored = await bot.services.storage.messages.recent(USER, 2)
            trace_id = stored[-1].trace_id
            await bot.services.observer.flush()  # type: ignore[attr-defined]

    def trace(r: OtlpReceiver) -> list[ReceivedSpan]:
        return [span for span in r.spans() if span.trace_id == trace_id]

    assert await receiver.wait_until_async(lambda r: len(trace(r)) >= 9)
    spans = trace(receiver)
    steps = {step.name: step for step in children(spans, one(spans, "support"))}
    strategist = steps["strategist"]
    assert [strategist.metadata(k) for k in ("level", "set_by", "alias", "config_version")] == [
        "role",
        admin,
        "planner",
        2,
    ]
    (generation,) = children(spans, strategist)
    assert [generation.metadata(k) for k in ("agent", "level", "set_by", "config_version")] == [
        "strategist",
        "role",
        admin,
        2,
    ]
    coach = steps["coach"]
    assert [coach.metadata(k) for k in ("level", "set_by", "alias")] == [
        "agent",
        "AGENT_MODELS",
        "m-coach",
    ]
    # The logs name it too: each agent's model, its level and who set it, once per change.
    logged = [r.getMessage() for r in caplog.records]
    assert (
        f"strategist in support runs on Planner (openai:m-planner) [role, set by {admin}] "
        "(configuration version 2)"
    ) in logged
