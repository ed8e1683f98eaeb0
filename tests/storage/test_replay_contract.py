"""Replay inputs on every backend (SQLite, InsForge over the real PostgreSQL): stored once per
`input_id`, read newest-n oldest first, pruned to the newest `keep` per agent, forgotten per chat
(`/forget`) and per user (`/deleteme`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from bot.storage.replay_models import ReplayInput
from bot.storage.repositories import Storage

Ids = Callable[[], int]
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def replay_input(
    n: int,
    *,
    agent: str = "coach",
    chat: int = 7,
    user: int | None = 7,
    schema: str | None = None,
    input_id: str | None = None,
) -> ReplayInput:
    return ReplayInput(
        at=T0 + timedelta(seconds=n),
        agent=agent,
        pipeline="support",
        chat_id=chat,
        user_id=user,
        turn_id=100 + n,
        preference="any",
        spec="openai:gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        messages=[
            {"role": "system", "content": "You are a coach."},
            {"role": "user", "content": f"message {n} — ünïcode ✓"},
        ],
        schema=schema,
        temperature=0.3 if n % 2 else None,
        max_tokens=400,
        streamed=n % 2 == 0,
        output=f"answer {n}",
        latency_ms=120.5 + n,
        prompt_tokens=30 + n,
        completion_tokens=5,
        cost_usd=0.0001 if n % 2 else None,
        input_id=input_id or f"in-{agent}-{chat}-{n}",
    )


async def test_inputs_round_trip_exactly_and_once(storage: Storage) -> None:
    items = [
        replay_input(n, schema="bot.agents.strategist:ReplyPlan" if n == 1 else None)
        for n in range(3)
    ]
    await storage.replay.add_many(items)
    await storage.replay.add_many(items[1:])  # a repeated write (a lost answer) adds nothing
    found = await storage.replay.recent("coach", 10)
    assert [f.input_id for f in found] == ["in-coach-7-0", "in-coach-7-1", "in-coach-7-2"]
    for stored, item in zip(found, items, strict=True):
        assert stored.id is not None
        stored.id = None
        assert stored == item
    assert [f.input_id for f in await storage.replay.recent("coach", 2)] == [
        "in-coach-7-1",
        "in-coach-7-2",
    ]
    assert await storage.replay.recent("tutor", 5) == []


async def test_prune_keeps_the_newest_per_agent(storage: Storage) -> None:
    await storage.replay.add_many([replay_input(n) for n in range(6)])
    await storage.replay.add_many([replay_input(n, agent="tutor") for n in range(2)])
    assert await storage.replay.prune(3) == 3
    assert [f.input_id for f in await storage.replay.recent("coach", 10)] == [
        "in-coach-7-3",
        "in-coach-7-4",
        "in-coach-7-5",
    ]
    assert len(await storage.replay.recent("tutor", 10)) == 2
    assert await storage.replay.prune(3) == 0
    assert await storage.replay.prune(0) == 5


async def test_forgetting_a_chat_and_erasing_a_user(storage: Storage, uid: Ids) -> None:
    user, other, group = uid(), uid(), -uid()
    await storage.replay.add_many(
        [
            replay_input(1, chat=user, user=user),
            replay_input(2, chat=group, user=user),
            replay_input(3, chat=group, user=other),
            replay_input(4, chat=other, user=other),
        ]
    )
    assert await storage.replay.clear_chat(group) == 2
    assert [f.turn_id for f in await storage.replay.recent("coach", 10)] == [101, 104]
    erased = await storage.users.erase(user)
    assert erased["replay_inputs"] == 1
    assert [f.user_id for f in await storage.replay.recent("coach", 10)] == [other]
