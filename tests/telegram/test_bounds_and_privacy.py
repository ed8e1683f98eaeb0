"""Issue 19, items 5 and 7, end to end (the real Dispatcher, SDKs and SQLite on loopback): a model
that never stops still gives a bounded reply, no prompt outgrows its budget, and what a user
tells the bot in private stays out of group prompts and out of the system role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.agents.coach import CoachAgent
from bot.agents.strategist import StrategistAgent
from bot.llm.bounds import estimate_tokens
from bot.llm.specs import parse_spec
from bot.storage.models import ChatSummary, StoredMessage
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, make_settings, running_bot

GROUP = -5005
FACT = "Secretly training for a marathon in Oslo."
SUMMARY = "They talked about the Oslo marathon plan."


def system_text(request: RecordedRequest) -> str:
    """Everything a request puts in the system role, in either wire format."""
    parts = [json.dumps(request.body.get("system") or "")]
    parts += [str(m.get("content")) for m in request.messages if m.get("role") == "system"]
    return "\n".join(parts)


def prompt_tokens(request: RecordedRequest) -> int:
    return sum(estimate_tokens(str(m.get("content"))) for m in request.messages) + estimate_tokens(
        json.dumps(request.body.get("system") or "")
    )


async def test_a_model_that_never_stops_gives_a_bounded_reply_default_and_catalog(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.script("m-coach", "and more words ", endless=True)
        settings = make_settings(tmp_path, tg, llm)
        async with running_bot(settings, tg, llm) as bot:
            mark = len(llm.requests)
            # 3000 tokens of "and more words " make three messages.
            replies = await bot.say("tell me everything", replies=3, timeout=30)
            text = "".join(m.text for m in bot.messages(USER))
            assert replies
            # The coach's default bound, sent and kept: 3000 tokens (~12 KB), three messages.
            assert estimate_tokens(text) <= CoachAgent.max_tokens
            assert estimate_tokens(text) > CoachAgent.max_tokens // 2
            assert len(bot.messages(USER)) <= 3
            coach = [r for r in llm.requests[mark:] if r.model == "m-coach"]
            assert [r.body["max_tokens"] for r in coach] == [CoachAgent.max_tokens]
            # Every agent sends its own bound.
            strategist = [r for r in llm.requests[mark:] if r.model == "m-strategist"]
            assert strategist[0].body["max_tokens"] == StrategistAgent.max_tokens

            # An admin's catalog entry for the model overrides the agent's bound.
            (added,) = await bot.say(
                "/catalog add brief anthropic:m-coach max_tokens=50", user_id=ADMIN
            )
            assert added.startswith("Added brief"), added
            await bot.say("/setmodel coach brief", user_id=ADMIN)
            mark = len(llm.requests)
            before = len(bot.messages(USER))
            await bot.say("and again", timeout=30)
            (short,) = bot.messages(USER)[before:]
            assert estimate_tokens(short.text) <= 50
            coach = [r for r in llm.requests[mark:] if r.model == "m-coach"]
            assert [r.body["max_tokens"] for r in coach] == [50]


async def test_no_prompt_outgrows_its_budget_after_a_huge_reply(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    budget = 600
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = make_settings(tmp_path, tg, llm, prompt_budget_tokens=budget)
        async with running_bot(settings, tg, llm) as bot:
            storage = bot.services.storage
            # What a runaway model left before the bounds: a 200 KB reply, and long turns.
            for i in range(8):
                await storage.messages.add(
                    StoredMessage(chat_id=USER, user_id=USER, role="user", text=f"q{i} " * 2000)
                )
                await storage.messages.add(
                    StoredMessage(chat_id=USER, user_id=USER, role="assistant", text="x" * 200_000)
                )
            await storage.facts.add_many(USER, [f"fact number {i} " * 20 for i in range(50)])
            await storage.summaries.save(
                ChatSummary(chat_id=USER, summary="s " * 1000, message_count=16)
            )
            mark = len(llm.requests)
            await bot.say("how am I doing?")
            await bot.services.runner.wait_background()
            requests = [r for r in llm.requests[mark:] if r.api in ("openai", "anthropic")]
            assert len(requests) >= 4  # extraction, strategist, coach, summarizer
            for request in requests:
                # The budget, plus what is not history or notes: the agent's own prompt, the
                # user's message, the plan, the labels, this exchange for the summarizer.
                fixed = estimate_tokens(system_text(request)) + 600
                assert prompt_tokens(request) <= budget + fixed, request.model


async def test_private_facts_stay_out_of_group_prompts_and_the_system_role(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as bot:
            storage = bot.services.storage
            await storage.facts.add_many(USER, [FACT])
            await storage.summaries.save(ChatSummary(chat_id=USER, summary=SUMMARY))

            mark = len(llm.requests)
            await bot.say("what should I focus on this week?")
            await bot.services.runner.wait_background()
            private: list[RecordedRequest] = llm.requests[mark:]
            # In private, the facts and the summary are shown, but never as the system's words.
            assert any(FACT in json.dumps(r.body) for r in private)
            assert any(SUMMARY in json.dumps(r.body) for r in private)
            for request in private:
                shown = system_text(request)
                assert FACT not in shown
                assert SUMMARY not in shown
                assert "what should I focus on" not in shown

            known = await storage.facts.list(USER)
            mark = len(llm.requests)
            await bot.say("@coach_test_bot any tips for the team?", chat_id=GROUP)
            await bot.services.runner.wait_background()
            group: list[Any] = llm.requests[mark:]
            assert group  # the group was answered
            for request in group:
                assert FACT not in json.dumps(request.body)
                assert SUMMARY not in json.dumps(request.body)
            # Nothing said in the group becomes one of the user's private facts.
            assert [r for r in group if r.model == parse_spec("openai:m-extraction").model] == []
            assert await storage.facts.list(USER) == known
