"""Post-completion tasks on every backend (SQLite, InsForge over the real PostgreSQL): one task
per name, results newest first, a chat's results forgotten (`/forget`), a user's erased."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.storage.repositories import Storage, StorageConflict
from bot.storage.task_models import TaskResult, TaskRow

Ids = Callable[[], int]


def result(task: str, n: int, *, chat: int, user: int, score: float | None = 0.5) -> TaskResult:
    return TaskResult(
        task=task,
        kind="score" if score is not None else "note",
        turn_id=n,
        chat_id=chat,
        user_id=user,
        pipeline="support",
        model="openai:gpt-4o-mini",
        score=score,
        text=f"reason {n}",
        trace_id=f"t{n}",
    )


async def test_one_task_per_name_and_results_newest_first(storage: Storage) -> None:
    task = TaskRow(name="judge", model="fast", kind="score", sample=25, instruction="Rate it.")
    added = await storage.tasks.add(task)
    assert (added.name, added.model, added.kind, added.sample, added.pipeline) == (
        "judge",
        "fast",
        "score",
        25.0,
        None,
    )
    with pytest.raises(StorageConflict):
        await storage.tasks.add(task)
    await storage.tasks.add(TaskRow(name="tone", model="fast", pipeline="learn", instruction="x"))
    assert [t.name for t in await storage.tasks.list()] == ["judge", "tone"]
    for n in range(3):
        await storage.tasks.add_result(result("judge", n, chat=5, user=5, score=n / 2))
    found = await storage.tasks.results("judge", 2)
    assert [(r.turn_id, r.score, r.text) for r in found] == [
        (2, 1.0, "reason 2"),
        (1, 0.5, "reason 1"),
    ]
    assert await storage.tasks.remove("judge")
    assert not await storage.tasks.remove("judge")
    assert [t.name for t in await storage.tasks.list()] == ["tone"]


async def test_forgetting_a_chat_and_erasing_a_user(storage: Storage, uid: Ids) -> None:
    user, other, group = uid(), uid(), -uid()
    await storage.tasks.add_result(result("judge", 1, chat=user, user=user))
    await storage.tasks.add_result(result("judge", 2, chat=group, user=user, score=None))
    await storage.tasks.add_result(result("judge", 3, chat=group, user=other))
    await storage.tasks.add_result(result("judge", 4, chat=other, user=other))
    assert await storage.tasks.clear_chat(group) == 2
    assert (await storage.users.erase(user))["task_results"] == 1
    assert [r.turn_id for r in await storage.tasks.results("judge", 10)] == [4]
