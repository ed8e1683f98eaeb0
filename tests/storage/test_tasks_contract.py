"""Post-completion tasks on every backend (SQLite, InsForge over the real PostgreSQL): one task
per name, results newest first, a chat's results forgotten (`/forget`), a user's erased."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from bot.storage.repositories import Storage, StorageConflict
from bot.storage.task_models import TaskResult, TaskRow
from tests.storage.test_ledger_contract import NOW, call

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


async def test_scores_are_credited_to_every_agent_x_model_of_the_turn(storage: Storage) -> None:
    await storage.tasks.add(TaskRow(name="judge", model="fast", kind="score", instruction="x"))
    calls = [
        # turn 1: coach on m-a, strategist on m-s; turn 2: coach on m-b; turn 3: coach on m-a
        call(1, turn=1, model="m-a"),
        call(2, turn=1, agent="strategist", model="m-s"),
        call(3, turn=2, model="m-b", version=2),
        call(4, turn=3, model="m-a"),
        call(5, turn=3, model="m-a", outcome="ProviderTimeout"),
        # the judge's own call: never credited
        call(6, turn=1, agent="judge", model="m-j"),
        replace(call(7, turn=4, model="m-a"), trial_id=9, trial_arm="candidate"),
    ]
    await storage.ledger.add_many(calls)
    for turn, score in ((1, 0.2), (2, 1.0), (3, 0.6), (4, 0.9)):
        await storage.tasks.add_result(result("judge", turn, chat=7, user=7, score=score))
    await storage.tasks.add_result(result("judge", 1, chat=7, user=7, score=None))  # a note
    since, until = NOW - timedelta(hours=1), NOW + timedelta(hours=1)
    found = {(s.agent, s.group): s for s in await storage.tasks.score_stats(since, until)}
    assert sorted(found) == [("coach", "m-a"), ("coach", "m-b"), ("strategist", "m-s")]
    coach_a = found[("coach", "m-a")]
    assert (coach_a.task, coach_a.n) == ("judge", 3)
    assert abs(coach_a.mean - (0.2 + 0.6 + 0.9) / 3) < 1e-9
    assert found[("strategist", "m-s")].n == 1
    assert found[("strategist", "m-s")].interval() is None
    low, high = coach_a.interval() or (0.0, 0.0)
    assert 0.0 <= low < coach_a.mean < high <= 1.0
    versioned = await storage.tasks.score_stats(since, until, agent="coach", versions=(2, None))
    assert [(s.group, s.n, s.mean) for s in versioned] == [("m-b", 1, 1.0)]
    arms = await storage.tasks.score_stats(since, until, trial_id=9)
    assert [(s.agent, s.group, s.n, s.mean) for s in arms] == [("coach", "candidate", 1, 0.9)]
    assert await storage.tasks.score_stats(NOW + timedelta(hours=2), NOW + timedelta(hours=3)) == []
