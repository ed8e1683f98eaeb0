"""`Tasks`: the post-completion tasks, shared by replicas, and the steps they add to a turn.

    tasks = Tasks(storage.tasks, ttl=settings.model_config_ttl)
    pipeline = await tasks.extend(pipelines["support"], turn)   # + Background(task steps)
    await tasks.add(TaskRow(name="tone", model="fast", kind="score", instruction="..."))

The tasks are read from storage at most once per `ttl` (MODEL_CONFIG_TTL, like the model
configuration), at once after a local change, and at once after another replica's (Redis,
`task:<name>` on the model configuration's channel). Each read also tells the model targets the
task names (`model_levels.set_task_names`), so `/setmodel <task> <model>` works on every replica.

`extend` draws each task's sample per turn (`random`: a share of turns, not of users) and adds one
optional background step per task that applies; a turn no task applies to runs its pipeline as it
is. A result is stored (`TaskRepo.add_result`), and a score also goes to Langfuse as a score on the
turn's trace (`scorer`, the tracing's `score`; idempotent per task and turn).
"""

from __future__ import annotations

import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from bot.observatory.capture import Turn
from bot.pipeline.steps import Background, Pipeline, Step
from bot.services.model_levels import set_task_names
from bot.services.stored_copy import StoredCopy
from bot.storage.repositories import TaskRepo
from bot.storage.task_models import TaskResult, TaskRow
from bot.tasks.agent import TaskAgent

log = logging.getLogger(__name__)

TASK_TARGET = "task:"
# trace id, score name, value, comment, score id -> recorded?
Scorer = Callable[..., Awaitable[bool]]


class Tasks:
    def __init__(
        self,
        repo: TaskRepo,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.repo = repo
        self._draw = draw
        self._tasks = StoredCopy[dict[str, TaskRow]](
            self._read, {}, what="the tasks", ttl=ttl, clock=clock
        )
        self._listeners: list[Callable[[str], object]] = []
        self.scorer: Scorer | None = None

    async def current(self) -> Mapping[str, TaskRow]:
        return await self._tasks.get()

    def invalidate(self) -> None:
        self._tasks.invalidate()

    def add_change_listener(self, listener: Callable[[str], object]) -> None:
        self._listeners.append(listener)

    async def _read(self) -> dict[str, TaskRow]:
        tasks = {row.name: row for row in await self.repo.list()}
        set_task_names(tasks)
        return tasks

    # --- a turn ---

    async def extend(self, pipeline: Pipeline, turn: Turn) -> Pipeline:
        """`pipeline` with a background step per task drawn for this turn (or as it is)."""
        tasks = await self.current()
        if not tasks:
            return pipeline
        chosen = [
            task
            for task in tasks.values()
            if task.pipeline in (None, pipeline.name)
            and (task.sample >= 100 or self._draw() * 100 < task.sample)
        ]
        if not chosen:
            return pipeline
        replying = tuple(
            step.key
            for stage in pipeline.stages
            for step in ([stage] if isinstance(stage, Step) else stage.steps)
            if step.agent.replies
        )
        steps = [Step(TaskAgent(task, turn, replying, self), optional=True) for task in chosen]
        return Pipeline(pipeline.name, [*pipeline.stages, Background(*steps)])

    async def record(self, task: TaskRow, result: TaskResult) -> None:
        await self.repo.add_result(result)
        if result.score is not None and self.scorer is not None and result.trace_id:
            await self.scorer(
                result.trace_id,
                task.name,
                result.score,
                result.text,
                score_id=f"task-{task.name}-{result.turn_id or result.trace_id}",
            )

    # --- changes ---

    async def add(self, task: TaskRow) -> TaskRow:
        added = await self.repo.add(task)
        set_task_names([*self._tasks.peek(), task.name])
        await self._changed(task.name)
        return added

    async def remove(self, name: str) -> bool:
        removed = await self.repo.remove(name)
        await self._changed(name)
        return removed

    async def _changed(self, name: str) -> None:
        self.invalidate()
        for listener in self._listeners:
            try:
                sent = listener(f"{TASK_TARGET}{name}")
                if inspect.isawaitable(sent):
                    await sent
            except Exception as exc:
                log.warning("could not publish the task change of %s: %s", name, exc)
