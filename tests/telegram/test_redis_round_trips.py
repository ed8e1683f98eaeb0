"""Redis round trips per turn (decision 0023), counted where Redis sees them (MONITOR).

The real runtime on the webhook with Redis (the intake, the chat queue, the FSM, the rate limit
and the budget counters on it), a user budget with a limit and the allowlist on, as in
production: once a chat is warm, a plain turn is the update's store-and-queue script, the FSM's
state read, the rate limit's script, the budget counters' scripts and the update's done-and-leave
transaction. Nothing else; a change that adds a round trip fails here. The counters' calls share
round trips (decision 0029): the two parallel agents' reservations go as one, their settlements
ride with the coach's reservation, and the coach's settlement goes on its own.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import redis.asyncio as redis

from bot.intake.redis import _RECLAIM
from bot.services import budget_counters
from bot.telegram.runtime import BotRuntime
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.redis_monitor import RedisCommands, Seen, round_trips
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.test_no_message_lost import USER, final_replies, running, settings_for
from tests.telegram.test_shutdown import wait_until

RECLAIM_SHA = hashlib.sha1(_RECLAIM.encode()).hexdigest()
# A database of its own, emptied first: the counts are of this bot alone.
REDIS_URL = "redis://127.0.0.1:6379/12"
# Decision 0023. Before it: 16 round trips (22 commands) for this turn's 3 model calls; 10
# before 0029 (a reservation and a settlement each).
PLAIN_TURN = {
    # the update stored and queued, the rate limit, the counters: (extraction + strategist
    # reserve), (their settlements + coach reserve), (coach settle)
    "EVALSHA": 5,
    "GET": 1,  # the FSM's state
    # done and out of the chat's queue, in one transaction
    "MULTI": 1,
    "XDEL": 1,
    "HDEL": 2,
    "ZREM": 1,
    "EXEC": 1,
}


def turn_commands(seen: list[Seen]) -> list[Seen]:
    """Not the turn's: the intake's lease renewal and its look for orphans (every 5 s), a new
    pooled connection's handshake and an idle one's health check."""
    return [
        c
        for c in seen
        if not (c.name == "SET" and ":replica:" in c.key)
        and not (c.name == "EVALSHA" and c.key == RECLAIM_SHA)
        and c.name not in ("PING", "HELLO")
    ]


async def one_turn(
    runtime: BotRuntime, tg: FakeTelegramServer, seen: RedisCommands, text: str
) -> list[Seen]:
    answered = len(final_replies(tg, USER))
    mark = await seen.mark()
    tg.user_message(text, user_id=USER)
    await wait_until(lambda: len(final_replies(tg, USER)) > answered)
    await runtime.services.runner.wait_background()
    await wait_until(lambda: not runtime.feeder.tasks)
    if runtime.services.budgets is not None:
        await runtime.services.budgets.drain()  # the settlements after the reply
    return turn_commands(await seen.seen(mark))


async def test_a_plain_turn_makes_a_fixed_number_of_redis_round_trips(
    tmp_path: Path, tg: FakeTelegramServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that the parallel agents' settlements wait for the coach's reservation on a
    # slow machine too (20 ms in production), short of the intake's periodic reclaim.
    monkeypatch.setattr(budget_counters, "SETTLE_WINDOW", 0.3)
    flush = redis.from_url(REDIS_URL)
    await flush.flushdb()
    await flush.aclose()
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        settings = settings_for(
            tmp_path,
            tg,
            llm,
            "webhook",
            redis_url=REDIS_URL,
            budget_user_daily_usd=1000.0,
            access_mode="allowlist",
            allowed_user_ids=[USER],
            summary_every=20,  # no summary in these turns
        )
        async with RedisCommands(REDIS_URL) as seen, running(settings) as runtime:
            await one_turn(runtime, tg, seen, "I sleep badly after night shifts")
            plain = await one_turn(runtime, tg, seen, "what should I do about it?")
    assert dict(Counter(c.name for c in plain)) == PLAIN_TURN
    assert round_trips(plain) == 7


async def test_a_chats_updates_queued_on_one_replica_wait_without_polling_redis(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    """Updates of one chat that arrive while it is busy wait on this process's lock, in order,
    and ask Redis for the chat's head once each when their turn comes. They used to poll it
    every 20 ms each: in a burst, thousands of waiters polling were most of the bot's CPU and
    its throughput fell from ~30 to ~10 messages a second (2026-12-03)."""
    flush = redis.from_url(REDIS_URL)
    await flush.flushdb()
    await flush.aclose()
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.default.latency = 0.15  # each of a turn's calls: the chat stays busy ~0.5 s a turn
        settings = settings_for(tmp_path, tg, llm, "webhook", redis_url=REDIS_URL, summary_every=20)
        async with RedisCommands(REDIS_URL) as seen, running(settings) as runtime:
            await one_turn(runtime, tg, seen, "warm up")
            mark = await seen.mark()
            for n in range(4):
                tg.user_message(f"message number {n}", user_id=USER)
            await wait_until(lambda: len(final_replies(tg, USER)) == 5, timeout=30)
            await runtime.services.runner.wait_background()
            await wait_until(lambda: not runtime.feeder.tasks)
            commands = turn_commands(await seen.seen(mark))
    replies = [r for r in final_replies(tg, USER)[1:]]
    assert len(replies) == 4
    head_checks = [c for c in commands if c.name == "ZRANGE"]
    # The first joined at the head (the store script said so); each of the other three checks
    # once when the one before it has left. Polling made dozens.
    assert len(head_checks) <= 3, len(head_checks)
