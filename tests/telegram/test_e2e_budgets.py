"""Budgets end to end: the real Dispatcher long-polls the fake Bot API, every agent runs on its own
OpenRouter model through the real openai SDK, and each call reports its cost (`usage.cost`) the
way OpenRouter does. A user who reaches their daily budget is refused kindly (or the optional
agent is skipped, or the reply runs on the cheaper model, per policy), the overshoot is at most
one call's worth, and once the clock is past midnight in BUDGET_TIMEZONE they chat again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.storage.models import utcnow
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

COST = 0.01  # USD per call, as OpenRouter reports it
AGENTS = ("extraction", "strategist", "coach", "tutor", "trainer", "summarizer")
MODELS = {agent: f"openrouter:test/m-{agent}" for agent in AGENTS}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        server.default.text = agent_reply
        server.default.cost = COST
        # OpenRouter's catalog prices each model: what the reservations are made from.
        server.catalog = [
            {
                "id": model.split(":", 1)[1],
                "pricing": {"prompt": "0.000001", "completion": "0.00001"},
            }
            for model in (*MODELS.values(), "openrouter:test/m-cheap", "openrouter:test/m-default")
        ]
        yield server


def settings_for(tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, **extra: Any) -> Any:
    return make_settings(
        tmp_path,
        tg,
        llm,
        agent_models=dict(MODELS),
        default_model="openrouter:test/m-default",
        summary_every=20,  # no summarizer call in these short chats
        **extra,
    )


def calls(llm: FakeLLMServer, agent: str) -> int:
    return sum(1 for r in llm.requests if r.model == f"test/m-{agent}")


async def turn(harness: Harness, text: str, user_id: int = USER) -> str:
    """Send a message and return the bot's last message once the turn is over."""
    await harness.say(text, user_id=user_id)
    await harness.services.runner.wait_background()
    # The turn's settlements (and the 80 % alert they check) finish after its reply.
    if harness.services.budgets is not None:
        await harness.services.budgets.drain()
    return harness.tg.chat_messages(user_id)[-1].text


async def spent(harness: Harness, user_id: int = USER) -> float:
    budgets = harness.services.budgets
    assert budgets is not None
    key = f"user:{user_id}:day:{budgets.period_id('day')}"
    totals, _ = await budgets.spent([key])
    return totals[key]


async def test_a_user_at_the_daily_budget_is_refused_kindly_until_midnight(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    # A turn of the support pipeline is four calls (extraction, strategist, coach, summarizer).
    settings = settings_for(
        tmp_path, tg, llm, budget_user_daily_usd=0.05, budget_timezone="Europe/Berlin"
    )
    async with running_bot(settings, tg, llm) as harness:
        assert "m-coach" in await turn(harness, "I sleep badly")
        assert await spent(harness) == pytest.approx(4 * COST)
        # Second turn: one helper's reservation (its worst case, ~0.011) takes the day over the
        # limit, so the other helper is skipped and the coach's reservation is refused.
        refusal = await turn(harness, "and I nap at noon")
        assert refusal.startswith("You've reached your daily limit for this bot ($0.05)")
        assert "resets at midnight Europe/Berlin" in refusal
        assert calls(llm, "coach") == 1
        overshoot = await spent(harness) - 0.05
        assert overshoot <= 1.5 * COST  # at most one call's reservation
        mark = len(llm.requests)
        assert (await turn(harness, "hello?")).startswith("You've reached your daily limit")
        assert len(llm.requests) == mark  # nothing more is spent once the limit is reached
        assert harness.services.ledger is not None
        await harness.services.ledger.flush()
        (usage,) = await harness.say("/usage")
        assert "of $0.05 (spent)" in usage
        assert "resets at midnight Europe/Berlin" in usage
        # Admins are exempt.
        assert "m-coach" in await turn(harness, "admin here", user_id=ADMIN)

        # Past midnight in Berlin: a new day, a new budget.
        budgets = harness.services.budgets
        assert budgets is not None
        berlin = utcnow().astimezone(ZoneInfo("Europe/Berlin"))
        tomorrow = (berlin + timedelta(days=1)).replace(hour=0, minute=5)
        budgets.now = lambda: tomorrow
        mark = len(llm.requests)
        assert "m-coach" in await turn(harness, "good morning")
        # The new day's count holds this turn's calls only.
        assert await spent(harness) == pytest.approx(COST * (len(llm.requests) - mark))


async def test_optional_agents_are_skipped_and_a_downgrade_runs_on_the_cheaper_model(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = settings_for(
        tmp_path,
        tg,
        llm,
        budget_agent_daily_usd={"strategist": "0.01", "coach": "0.01"},
        budget_policy={"coach": "downgrade:openrouter:test/m-cheap"},
    )
    async with running_bot(settings, tg, llm) as harness:
        assert "m-coach" in await turn(harness, "first")
        # The strategist's budget is spent: skipped (its default policy); the coach's too: it
        # answers on the cheaper model.
        reply = await turn(harness, "second")
        assert "m-cheap" in reply
        assert calls(llm, "strategist") == 1
        assert calls(llm, "extraction") == 2  # no budget of its own: it runs every turn
        (shown,) = await harness.say("/budget", user_id=ADMIN)
        assert "agent strategist: $0.01/day, spent $0.0100 today (100%)" in shown
        assert "coach downgrade:openrouter:test/m-cheap" in shown


async def test_a_budget_set_from_chat_applies_and_admins_get_one_alert_at_80_percent(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    async with running_bot(settings_for(tmp_path, tg, llm), tg, llm) as harness:
        (answer,) = await harness.say(f"/budget user {USER} 0.09/day", user_id=ADMIN)
        assert answer == "Budget of user 901: $0.09/day. It applies from the next call."
        (refused,) = await harness.say("/budget user 5/day", user_id=USER)
        assert "for the bot's admins" in refused
        (bad,) = await harness.say("/budget user lots/day", user_id=ADMIN)
        assert bad.startswith("Not changed")

        def alerts() -> list[str]:
            return [m.text for m in tg.chat_messages(ADMIN) if "Budget alert" in m.text]

        await turn(harness, "one")  # $0.04 of $0.09: no alert yet
        assert alerts() == []
        await turn(harness, "two")  # $0.08: past 80 %, one alert
        await turn(harness, "three")  # refused: still one alert
        assert len(alerts()) == 1
        assert "user 901's daily budget" in alerts()[0]
        (off,) = await harness.say(f"/budget user {USER} off", user_id=ADMIN)
        assert off.startswith("Budget of user 901: off")
        assert "m-coach" in await turn(harness, "four")


async def test_a_restart_remembers_what_was_spent_today(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    # Without Redis the counters live in the process: a new process starts them from the
    # call ledger, so a restart is not a way round the budget.
    settings = settings_for(tmp_path, tg, llm, budget_user_daily_usd=0.05)
    async with running_bot(settings, tg, llm) as harness:
        await turn(harness, "one")
        assert (await turn(harness, "two")).startswith("You've reached your daily limit")
    async with running_bot(settings, tg, llm) as harness:
        mark = len(llm.requests)
        assert (await turn(harness, "three")).startswith("You've reached your daily limit")
        assert [r for r in llm.requests[mark:] if r.api != "models"] == []
