"""Forgetting, on every backend (SQLite and InsForge over the real PostgreSQL): `/forget`'s facts
and `/deleteme`'s erasure of everything stored about one user, and nothing of anyone else."""

from __future__ import annotations

from collections.abc import Callable

from bot.storage.models import ChatSummary, Exercise, StoredMessage, User, UserSettings
from bot.storage.repositories import Storage
from tests.storage.test_replay_contract import replay_input

Ids = Callable[[], int]


async def test_clearing_facts_removes_only_that_users(storage: Storage, uid: Ids) -> None:
    user, other = uid(), uid()
    await storage.facts.add_many(user, ["likes tea", "lives in Oslo"])
    await storage.facts.add_many(other, ["likes tea"])
    assert await storage.facts.clear(user) == 2
    assert await storage.facts.list(user) == []
    assert await storage.facts.clear(user) == 0
    assert [f.fact for f in await storage.facts.list(other)] == ["likes tea"]


async def _seed(storage: Storage, user: int, group: int) -> None:
    await storage.users.touch(User(id=user, first_name="Ann"))
    await storage.settings.save(UserSettings(user_id=user, default_model="fast"))
    await storage.facts.add_many(user, ["likes tea"])
    await storage.summaries.save(ChatSummary(chat_id=user, summary="private talk"))
    for role in ("user", "assistant"):
        await storage.messages.add(
            StoredMessage(chat_id=user, user_id=user, role=role, text=f"private {role}")
        )
        await storage.messages.add(
            StoredMessage(chat_id=group, user_id=user, role=role, text=f"group {role}")
        )
    await storage.exercises.create(Exercise(chat_id=user, user_id=user, topic="t", question="q"))
    # What the agents sent their models for this user, in private and in the group (/replay).
    await storage.replay.add_many(
        [
            replay_input(1, chat=user, user=user, input_id=f"p-{user}"),
            replay_input(2, chat=group, user=user, input_id=f"g-{user}"),
        ]
    )


async def test_erasing_a_user_removes_everything_of_theirs_and_nothing_else(
    storage: Storage, uid: Ids
) -> None:
    user, other, group = uid(), uid(), -uid()
    await _seed(storage, user, group)
    await _seed(storage, other, group)

    erased = await storage.users.erase(user)
    assert erased == {
        "messages": 4,
        "summaries": 1,
        "facts": 1,
        "exercises": 1,
        "settings": 1,
        "user": 1,
        "replay_inputs": 2,
        "task_results": 0,
    }
    assert await storage.users.get(user) is None
    assert await storage.settings.get(user) is None
    assert await storage.facts.list(user) == []
    assert await storage.summaries.get(user) is None
    assert await storage.messages.recent(user) == []
    assert await storage.exercises.list_for_user(user) == []
    # The group keeps what the others said; only this user's part of it went.
    assert [m.text for m in await storage.messages.recent(group)] == [
        "group user",
        "group assistant",
    ]
    assert all(m.user_id == other for m in await storage.messages.recent(group))
    # Everyone else is untouched.
    assert await storage.users.get(other) is not None
    assert await storage.settings.get(other) is not None
    assert [f.fact for f in await storage.facts.list(other)] == ["likes tea"]
    assert len(await storage.messages.recent(other)) == 2
    # Erasing again finds nothing.
    assert set((await storage.users.erase(user)).values()) == {0}
