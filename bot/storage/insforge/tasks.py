"""`TaskRepo` over InsForge: `tasks` and `task_results` (insforge/migrations/019)."""

from __future__ import annotations

import builtins
from datetime import datetime

from bot.storage.insforge_client import InsForgeClient, eq
from bot.storage.sqlite.tasks import score_stats_row
from bot.storage.task_models import ScoreStats, TaskResult, TaskRow
from bot.storage.timeutil import iso_utc


class InsForgeTaskRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[TaskRow]:
        rows = await self._client.select("tasks", order="name.asc")
        return [TaskRow.model_validate(row) for row in rows]

    async def add(self, task: TaskRow) -> TaskRow:
        rows = await self._client.insert("tasks", task.model_dump(mode="json"))
        return TaskRow.model_validate(rows[0])

    async def remove(self, name: str) -> bool:
        return bool(await self._client.delete("tasks", {"name": eq(name)}, select="name"))

    async def add_result(self, result: TaskResult) -> TaskResult:
        rows = await self._client.insert(
            "task_results", result.model_dump(mode="json", exclude={"id"})
        )
        return TaskResult.model_validate(rows[0])

    async def results(self, task: str, limit: int) -> builtins.list[TaskResult]:
        rows = await self._client.select(
            "task_results", {"task": eq(task)}, order="id.desc", limit=limit
        )
        return [TaskResult.model_validate(row) for row in rows]

    async def clear_chat(self, chat_id: int) -> int:
        return len(await self._client.delete("task_results", {"chat_id": eq(chat_id)}, select="id"))

    async def score_stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        trial_id: int | None = None,
    ) -> builtins.list[ScoreStats]:
        rows = await self._client.rpc(
            "task_score_stats",
            {
                "p_since": iso_utc(since),
                "p_until": iso_utc(until),
                "p_agent": agent,
                "p_v0": versions[0],
                "p_v1": versions[1],
                "p_trial": trial_id,
            },
            read_only=True,
        )
        return [score_stats_row(dict(row)) for row in rows or []]
