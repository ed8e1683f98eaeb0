"""`TaskRepo` over SQLite: `tasks` and `task_results` (schema step 15)."""

from __future__ import annotations

import builtins
import sqlite3
from datetime import datetime

from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.task_models import ScoreStats, TaskResult, TaskRow
from bot.storage.timeutil import iso_utc

_RESULT_COLUMNS = (
    "task, kind, at, turn_id, chat_id, user_id, pipeline, model, score, text, trace_id"
)


# The turns each agent x model (or trial arm) answered in, then the scores of those turns. A
# task's own calls (and any task's) are not credited with scores. Only the scored turns' calls
# are read (by turn_id, SQLite step 12's index): a scan of the window's calls made `/stats 30d`
# over a million calls take ~0.8 s even with no score task (decision 0016).
SCORE_STATS = """
WITH served AS (
    SELECT DISTINCT turn_id, agent,
        CASE WHEN :trial IS NULL THEN model ELSE trial_arm END AS grp
    FROM ledger_calls
    WHERE turn_id IN (SELECT turn_id FROM task_results WHERE score IS NOT NULL)
        AND outcome = 'ok' AND turn_id IS NOT NULL AND at >= :since AND at < :until
        AND (:agent IS NULL OR agent = :agent)
        AND (:v0 IS NULL OR config_version >= :v0)
        AND (:v1 IS NULL OR config_version < :v1)
        AND (:trial IS NULL OR trial_id = :trial)
        AND agent NOT IN (SELECT name FROM tasks)
)
SELECT r.task, s.agent, s.grp, COUNT(*) AS n, AVG(r.score) AS mean,
    AVG(r.score * r.score) AS mean_square
FROM task_results r JOIN served s ON s.turn_id = r.turn_id
WHERE r.score IS NOT NULL AND s.grp IS NOT NULL
GROUP BY r.task, s.agent, s.grp
ORDER BY s.agent, s.grp, r.task
"""


def score_stats_row(row: dict[str, object]) -> ScoreStats:
    return ScoreStats(
        str(row["task"]),
        str(row["agent"]),
        str(row["grp"]),
        int(row["n"]),  # type: ignore[call-overload]
        float(row["mean"]),  # type: ignore[arg-type]
        float(row["mean_square"]),  # type: ignore[arg-type]
    )


def _dict(row: sqlite3.Row) -> dict[str, object]:
    return dict(zip(row.keys(), row, strict=True))


class SQLiteTaskRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def list(self) -> builtins.list[TaskRow]:
        rows = await self._db.read("SELECT * FROM tasks ORDER BY name", action="read the tasks")
        return [TaskRow.model_validate(_dict(row)) for row in rows]

    async def add(self, task: TaskRow) -> TaskRow:
        rows = await self._db.write(
            "INSERT INTO tasks (name, model, pipeline, sample, kind, instruction, created_by, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                task.name,
                task.model,
                task.pipeline,
                task.sample,
                task.kind,
                task.instruction,
                task.created_by,
                iso_utc(task.created_at),
            ),
            action="add a task",
        )
        return TaskRow.model_validate(_dict(rows[0]))

    async def remove(self, name: str) -> bool:
        rows = await self._db.write(
            "DELETE FROM tasks WHERE name = ? RETURNING name", (name,), action="remove a task"
        )
        return bool(rows)

    async def add_result(self, result: TaskResult) -> TaskResult:
        rows = await self._db.write(
            f"INSERT INTO task_results ({_RESULT_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                result.task,
                result.kind,
                iso_utc(result.at),
                result.turn_id,
                result.chat_id,
                result.user_id,
                result.pipeline,
                result.model,
                result.score,
                result.text,
                result.trace_id,
            ),
            action="store a task's result",
        )
        return TaskResult.model_validate(_dict(rows[0]))

    async def results(self, task: str, limit: int) -> builtins.list[TaskResult]:
        rows = await self._db.read(
            "SELECT * FROM task_results WHERE task = ? ORDER BY id DESC LIMIT ?",
            (task, limit),
            action="read a task's results",
        )
        return [TaskResult.model_validate(_dict(row)) for row in rows]

    async def clear_chat(self, chat_id: int) -> int:
        rows = await self._db.write(
            "DELETE FROM task_results WHERE chat_id = ? RETURNING id",
            (chat_id,),
            action="forget task results",
        )
        return len(rows)

    async def score_stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        trial_id: int | None = None,
    ) -> builtins.list[ScoreStats]:
        rows = await self._db.read_aside(
            SCORE_STATS,
            {
                "since": iso_utc(since),
                "until": iso_utc(until),
                "agent": agent,
                "v0": versions[0],
                "v1": versions[1],
                "trial": trial_id,
            },
            action="read the judge scores",
        )
        return [score_stats_row(_dict(row)) for row in rows]
