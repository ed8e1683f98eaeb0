"""The bot-wide budget of live updates: drafts and edits give way under load, replies never."""

from __future__ import annotations

import asyncio

from aiogram import Bot

from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.streaming import ReplyStreamer
from tests.fakes.telegram_server import FakeTelegramServer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _spent_budget() -> LiveUpdateBudget:
    budget = LiveUpdateBudget(per_second=1, clock=Clock())
    assert budget.try_take()  # another chat spent it
    return budget


def test_the_budget_allows_a_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    budget = LiveUpdateBudget(per_second=4, clock=clock)
    assert [budget.try_take() for _ in range(6)] == [True] * 4 + [False] * 2
    clock.now += 0.5  # two updates' worth
    assert [budget.try_take() for _ in range(3)] == [True, True, False]
    clock.now += 60  # idle for a minute: no more than one burst is saved up
    assert sum(budget.try_take() for _ in range(10)) == 4
    assert (budget.granted, budget.refused) == (10, 9)


async def test_a_spent_budget_skips_live_updates_but_never_the_reply(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    budget = _spent_budget()
    streamer = ReplyStreamer(bot, 601, draft_interval=0.01, budget=budget)
    await streamer.start()
    for word in ("Every ", "word ", "arrives."):
        await streamer.push(word)
        await asyncio.sleep(0.03)
    ids = await streamer.finish()

    assert tg.calls_of("sendMessageDraft", chat_id=601) == []
    (message,) = tg.chat_messages(601)
    assert ids == [message.message_id]
    assert message.text == "Every word arrives."
    assert budget.refused >= 2  # the "Thinking…" draft and at least one text draft


async def test_begin_with_a_spent_budget_makes_no_task_and_sends_no_draft(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    budget = _spent_budget()
    streamer = ReplyStreamer(bot, 603, draft_interval=0.01, budget=budget)
    tasks_before = asyncio.all_tasks()
    streamer.begin()
    assert asyncio.all_tasks() == tasks_before  # nothing to send, so nothing runs behind
    assert budget.refused == 1
    await streamer.push("Still answered.")
    ids = await streamer.finish()

    assert tg.calls_of("sendMessageDraft", chat_id=603) == []
    (message,) = tg.chat_messages(603)
    assert ids == [message.message_id]
    assert message.text == "Still answered."


async def test_with_budget_to_spare_live_updates_go_out_as_usual(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    budget = LiveUpdateBudget(per_second=1000)
    streamer = ReplyStreamer(bot, 602, draft_interval=0.01, budget=budget)
    await streamer.start()
    for word in ("Every ", "word ", "arrives."):
        await streamer.push(word)
        await asyncio.sleep(0.05)
    await streamer.finish()

    drafts = tg.calls_of("sendMessageDraft", chat_id=602, ok=True)
    assert len(drafts) >= 2  # "Thinking…" and at least one text draft
    assert budget.refused == 0
    assert budget.granted == len(drafts)


async def test_a_group_reply_over_budget_comes_as_one_new_message(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    clock = Clock()
    budget = LiveUpdateBudget(per_second=1, clock=clock)
    budget.try_take()
    streamer = ReplyStreamer(bot, -603, budget=budget)
    await streamer.start()  # no placeholder: nothing to edit later
    await streamer.push("Hello, group.")
    ids = await streamer.finish()

    assert tg.calls_of("editMessageText") == []
    (message,) = tg.chat_messages(-603)
    assert ids == [message.message_id]
    assert message.text == "Hello, group."
