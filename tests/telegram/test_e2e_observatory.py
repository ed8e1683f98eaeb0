"""End to end: the call ledger through the real Telegram layer, the real pipeline and the real
SDKs against the loopback model server; `/stats` must show exactly what the model server
received and answered (calls per agent and model, tokens, OpenRouter's costs and genai-prices'
costs, errors, fallbacks) and the 👍 given, with tracing off."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from bot.observatory.stats import usd
from bot.telegram import change_reports
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

# Each agent on its own model, so the server's requests say which agent asked.
AGENT_MODELS = {
    "extraction": "anthropic:claude-3-5-haiku-latest",  # priced from genai-prices
    "strategist": "openai:gpt-4o-mini",  # priced from genai-prices
    "coach": "openrouter:openai/gpt-4o-mini",  # OpenRouter reports its cost
    "tutor": "openai:m-tutor",
    "trainer": "openai:m-trainer",
    "summarizer": "openai:m-summarizer",  # no price anywhere: unpriced
}
FALLBACK = "openai:gpt-4o"
OPENROUTER_COST = 0.0012
SERVED = "openai/gpt-4o-mini-2024-07-18"  # the id OpenRouter's answer names

AGENT_OF = {spec.split(":", 1)[1]: agent for agent, spec in AGENT_MODELS.items()} | {
    "gpt-4o": "coach"  # the fallback, only the coach needs it here
}
PROVIDER_OF = {"gpt-4o-mini": "openai", "gpt-4o": "openai", "claude-3-5-haiku-latest": "anthropic"}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        server.default.text = agent_reply
        yield server


@pytest.fixture
async def harness(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> AsyncIterator[Harness]:
    settings = make_settings(
        tmp_path, tg, llm, agent_models=dict(AGENT_MODELS), fallback_models=[FALLBACK]
    )
    async with running_bot(settings, tg, llm) as running:
        yield running


@dataclass
class Expected:
    calls: int = 0
    turns: set[int] = field(default_factory=set)
    errors: int = 0
    fallbacks: int = 0
    prompt: int = 0
    completion: int = 0
    cost: float = 0.0
    unpriced: int = 0
    rated_up: int = 0
    rated: int = 0

    def lines(self, title: str, indent: str) -> list[str]:
        turns = len(self.turns)
        unpriced = f" ({self.unpriced} calls unpriced, not counted)" if self.unpriced else ""
        errors = f"{100 * self.errors / self.calls:.1f}%"
        fallbacks = f"{100 * self.fallbacks / self.calls:.1f}%"
        return [
            f"{title}: {self.calls} calls, {turns} turns",
            f"{indent}cost {usd(self.cost)}, {usd(self.cost / turns)} per turn{unpriced}",
            f"{indent}tokens {self.prompt} in, {self.completion} out; errors {self.errors} "
            f"({errors}); fallbacks {self.fallbacks} ({fallbacks})",
            f"{indent}👍 {self.rated_up} of {self.rated} ratings (fewer than 30: no share yet)",
        ]


def blocks(text: str) -> dict[str, list[str]]:
    """`/stats`'s text as {title: its lines without the latency line}."""
    found: dict[str, list[str]] = {}
    title = ""
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        head = re.match(r"^ {0,2}(\S[^:]*): \d+ calls", line)
        if head:
            title = head.group(1)
            found[title] = [line.strip()]
        elif "latency p50" not in line:
            found[title].append(line.strip())
    return found


async def test_stats_show_what_the_model_server_received_and_answered(
    harness: Harness, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    llm.script(
        "openai/gpt-4o-mini",
        agent_reply,
        cost=OPENROUTER_COST,
        served_model=SERVED,
        fault=Fault.STATUS,
        status=503,
        fault_times=1,  # the coach's first call fails: the fallback answers it
    )
    (first,) = await harness.say("I sleep badly")
    assert first == "Try a fixed wind-down routine (gpt-4o)."
    await harness.services.runner.wait_background()
    turn_requests = [len(llm.requests)]
    (second,) = await harness.say("What about naps?")
    assert second == "Try a fixed wind-down routine (openai/gpt-4o-mini)."
    await harness.services.runner.wait_background()

    # 👍 on the first reply (tracing is off: the buttons carry the turn alone).
    stored = await harness.services.storage.messages.recent(USER, 4)
    turns = [m.id for m in stored if m.role == "user"]
    assert all(isinstance(t, int) for t in turns)
    (reply_message,) = [m for m in tg.chat_messages(USER) if m.text == first]
    up = reply_message.reply_markup["inline_keyboard"][0][0]
    assert up["text"] == "👍"
    assert up["callback_data"] == f"rate:up::{USER}:{turns[0]}:0"
    mark = len(tg.calls)
    tg.callback_query(up["callback_data"], user_id=USER, message_id=reply_message.message_id)
    (answer,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
    assert answer.params["text"] == "Thanks for the feedback!"

    assert harness.services.ledger is not None
    await harness.services.ledger.flush()
    (text,) = await harness.say("/stats", user_id=ADMIN)

    # What the model server saw, grouped as the ledger must: per agent, and per agent x the
    # model that answered (the one asked, when the call failed).
    answered = {id(a.request): a for a in llm.answers}
    per_model: dict[tuple[str, str], Expected] = defaultdict(Expected)
    per_agent: dict[str, Expected] = defaultdict(Expected)
    fallback_requests = 0
    for n, request in enumerate(llm.requests):
        agent = AGENT_OF[request.model]
        turn = turns[0] if n < turn_requests[0] else turns[1]
        answer = answered.get(id(request))
        model = answer.model if answer is not None else request.model
        for figures in (per_model[agent, model], per_agent[agent]):
            figures.calls += 1
            figures.turns.add(turn)
            if request.model == "gpt-4o":
                figures.fallbacks += 1
            if answer is None:
                figures.errors += 1
                continue
            figures.prompt += answer.prompt_tokens
            figures.completion += answer.completion_tokens
            if answer.cost is not None:
                figures.cost += answer.cost
            elif request.model in PROVIDER_OF:
                price = calc_price(
                    Usage(
                        input_tokens=answer.prompt_tokens, output_tokens=answer.completion_tokens
                    ),
                    request.model,
                    provider_id=PROVIDER_OF[request.model],
                )
                figures.cost += float(price.total_price)
            else:
                figures.unpriced += 1
            if turn == turns[0] and figures is per_model[agent, model]:
                figures.rated_up, figures.rated = 1, 1
        if request.model == "gpt-4o":
            fallback_requests += 1
    for agent in per_agent:
        if any(
            turns[0] in figures.turns and figures.errors < figures.calls
            for (a, _m), figures in per_model.items()
            if a == agent
        ):
            per_agent[agent].rated_up, per_agent[agent].rated = 1, 1
    assert fallback_requests == 1
    assert ("coach", "gpt-4o") in per_model  # the fallback is under the coach, as what answered
    assert ("coach", SERVED) in per_model  # OpenRouter's own id for the model that answered
    assert per_model["coach", "openai/gpt-4o-mini"].errors == 1

    shown = blocks(text)
    expected: dict[str, list[str]] = {}
    for agent, figures in per_agent.items():
        expected[agent] = figures.lines(agent, "")
    for (agent, model), figures in per_model.items():
        expected[f"{agent} x {model}"] = figures.lines(f"{agent} x {model}", "")
    assert shown == expected
    assert text.startswith("Model calls of every agent, last 24h:")
    assert f"cost {usd(OPENROUTER_COST)}" in text


@pytest.fixture
async def reporting(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """The bot with change reports after 2 calls, checked every 0.1 s (60 s in production)."""
    monkeypatch.setattr(change_reports, "CHECK_EVERY", 0.1)
    settings = make_settings(
        tmp_path, tg, llm, agent_models=dict(AGENT_MODELS), change_report_after_calls=2
    )
    async with running_bot(settings, tg, llm) as running:
        yield running


async def test_a_change_report_arrives_after_the_configured_calls_and_its_button_rolls_back(
    reporting: Harness, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    (before,) = await reporting.say("I sleep badly")
    assert before == "Try a fixed wind-down routine (openai/gpt-4o-mini)."
    (changed,) = await reporting.say("/setmodel coach openai:gpt-4o", user_id=ADMIN)
    assert changed.startswith("coach now runs on")
    mark = len(tg.calls)
    (one,) = await reporting.say("And naps?")
    assert one == "Try a fixed wind-down routine (gpt-4o)."
    assert not [
        c for c in tg.calls_of("sendMessage", chat_id=ADMIN)[-1:] if "Change report" in c.text
    ]  # one call on the new model: not yet
    (two,) = await reporting.say("And coffee?")
    assert two == "Try a fixed wind-down routine (gpt-4o)."

    (report_call,) = await tg.wait_for_call("sendMessage", chat_id=ADMIN, since=mark, timeout=15)
    (report,) = [
        m for m in tg.chat_messages(ADMIN) if m.message_id == report_call.result["message_id"]
    ]
    lines = report.text.splitlines()
    assert lines[0] == "Change report: coach"
    assert lines[1].startswith("coach: (configured) -> openai:gpt-4o (set by tg:900")
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[3:]}
    assert rows["models"][1:] == ["openai/gpt-4o-mini", "gpt-4o"]
    assert rows["calls"][1:] == ["1", "2"]
    assert rows["errors"][1:] == ["0", "(0.0%)", "0", "(0.0%)"]
    (button,) = report.reply_markup["inline_keyboard"][0]
    assert button["text"] == "Roll back"

    # Once per change: later checks find it taken.
    await asyncio.sleep(0.5)
    assert [m.text for m in tg.chat_messages(ADMIN)].count(report.text) == 1

    mark = len(tg.calls)
    tg.callback_query(button["callback_data"], user_id=USER, message_id=report.message_id)
    (refused,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
    assert refused.params["text"] == "Sorry, that command is for the bot's admins."
    assert (await reporting.services.model_config.get_override("coach")) == "openai:gpt-4o"

    mark = len(tg.calls)
    tg.callback_query(button["callback_data"], user_id=ADMIN, message_id=report.message_id)
    (done,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
    assert done.params["text"] == "Done."
    (said,) = await tg.wait_for_call("sendMessage", chat_id=ADMIN, since=mark)
    assert said.text.startswith("coach is back on its configured model")
    assert await reporting.services.model_config.get_override("coach") is None
    (after,) = await reporting.say("And tea?")
    assert after == "Try a fixed wind-down routine (openai/gpt-4o-mini)."


async def test_stats_of_one_agent_sends_its_chart(harness: Harness, tg: FakeTelegramServer) -> None:
    await harness.say("I sleep badly")
    assert harness.services.ledger is not None
    await harness.services.ledger.flush()
    mark = len(tg.calls)
    (text,) = await harness.say("/stats coach 1h", user_id=ADMIN)
    assert text.startswith("Model calls of coach, last 1h:")
    assert "coach x openai/gpt-4o-mini: 1 calls, 1 turns" in text
    await tg.wait_for_call("sendPhoto", chat_id=ADMIN, since=mark)
    (chat, png, caption) = tg.photos[-1]
    assert chat == ADMIN
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert caption == "coach, last 1h: p95 latency and cost per turn"
    (refused,) = await harness.say("/stats", user_id=USER)
    assert refused == "Sorry, that command is for the bot's admins."
    (wrong,) = await harness.say("/stats nobody", user_id=ADMIN)
    assert wrong.startswith("I don't know 'nobody'.")
    (usage,) = await harness.say("/usage")
    # Four calls (extraction, strategist, coach, summarizer); the coach's OpenRouter answer
    # reported no cost here and the summarizer's model has no price: two unpriced.
    title, today, month, note = usage.splitlines()
    assert title == "Your usage (USD):"
    assert today.startswith("Today: 4 model calls, $")
    assert "no limit; resets at midnight UTC" in today
    assert month.startswith("This month: 4 model calls, $")
    assert note == "(2 calls this month have no known price and are not counted.)"
