"""`/task` (admins), shared by Telegram and the console: text in, text out.

    /task add <name> <model> [on=<pipeline>] [sample=<percent>] [kind=note|score] <task text>
    /task list
    /task show <name>          its newest results
    /task remove <name>

`add` checks the model as `/setmodel` does and makes it the task's override (in the history,
`/setmodel <name> ...` changes it later); `remove` resets that override and deletes the task
(its results stay until pruned with the turns' rows: `/forget`, `/deleteme`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import AGENT_NAMES, PIPELINE_NAMES
from bot.quoting import quoted
from bot.services.command_replies import READ_PROBLEM, STORAGE_PROBLEM, when
from bot.services.model_catalog import Picked
from bot.storage.repositories import StorageConflict, StorageError
from bot.storage.task_models import TaskKind, TaskRow
from bot.tasks.service import Tasks

log = logging.getLogger(__name__)

TASK_USAGE = (
    "Usage: /task add <name> <model> [on=<pipeline>] [sample=<percent>] [kind=note|score] "
    "<task text>, /task list, /task show <name>, /task remove <name>"
)
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
RESERVED = frozenset({*AGENT_NAMES, "default", "replay"})
SHOW_LAST = 10
MAX_TEXT = 2000

Check = Callable[[str], Awaitable[tuple[Picked, list[str]]]]
# target, model, by -> the answer of /setmodel (or /resetmodel, model None)
Assign = Callable[[str, str | None, str], Awaitable[str]]


class TaskRefused(ValueError):
    pass


@dataclass(slots=True)
class TaskCommands:
    tasks: Tasks
    check: Check
    assign: Assign

    async def handle(self, args: str | None, *, by: str) -> tuple[str, bool]:
        words = (args or "").split()
        verb = words[0].lower() if words else ""
        try:
            if verb == "add":
                return await self.add(args or "", by=by), False
            if verb == "list" and len(words) == 1:
                return await self.list(), True
            if verb in ("show", "remove") and len(words) == 2:
                name = words[1].lower()
                if verb == "show":
                    return await self.show(name), True
                return await self.remove(name, by=by), False
            return TASK_USAGE, False
        except TaskRefused as exc:
            return str(exc), False
        except StorageError as exc:
            log.error("/task %s by %s failed: %s", (args or "")[:80], by, exc)
            return (STORAGE_PROBLEM if verb in ("add", "remove") else READ_PROBLEM), False

    async def add(self, args: str, *, by: str) -> str:
        task = parse_add(args, by=by)
        if task.name in await self.tasks.current():
            raise TaskRefused(f"Not added: a task named {task.name} exists (/task remove it).")
        try:
            picked, notes = await self.check(task.model)
        except ValueError as exc:  # ModelProblem: the answer /setmodel gives
            raise TaskRefused(f"Not added: {exc}") from None
        try:
            await self.tasks.add(task)
        except StorageConflict:
            raise TaskRefused(f"Not added: a task named {task.name} exists.") from None
        assigned = await self.assign(task.name, task.model, by)
        where = f"{task.pipeline} turns" if task.pipeline else "turns of every pipeline"
        lines = [
            f"Task {task.name} added ({task.kind}): after {task.sample:g}% of {where}, on "
            f"{picked.label}. /task show {task.name} shows its results.",
            assigned,
            *notes,
        ]
        return "\n".join(lines)

    async def list(self) -> str:
        tasks = await self.tasks.current()
        if not tasks:
            return "No tasks yet. " + TASK_USAGE
        return "\n".join(
            f"{t.name}  {t.kind}  on {t.pipeline or 'every pipeline'}  {t.sample:g}%  "
            f"added by {t.created_by or 'an admin'} {when(t.created_at)}\n  {_clip(t.instruction)}"
            for t in tasks.values()
        )

    async def show(self, name: str) -> str:
        task = (await self.tasks.current()).get(name)
        if task is None:
            raise TaskRefused(f"No task named {quoted(name)} (/task list).")
        results = await self.tasks.repo.results(name, SHOW_LAST)
        head = f"{task.name} ({task.kind}, {task.sample:g}%): {_clip(task.instruction)}"
        if not results:
            return head + "\nNo results yet."
        lines = [head]
        for r in results:
            value = f"{r.score:.2f} " if r.score is not None else ""
            lines.append(
                f"{when(r.at)}  turn {r.turn_id}  {r.pipeline}  {r.model}\n  {value}{_clip(r.text)}"
            )
        return "\n".join(lines)

    async def remove(self, name: str, *, by: str) -> str:
        if not await self.tasks.remove(name):
            return f"No task named {quoted(name)} (/task list)."
        reset = await self.assign(name, None, by)
        return f"Task {name} removed: it runs after no more turns.\n{reset}"


def parse_add(args: str, *, by: str) -> TaskRow:
    words = args.split()
    if len(words) < 4:
        raise TaskRefused(TASK_USAGE)
    name, model = words[1].lower(), words[2]
    if not NAME.fullmatch(name) or name in RESERVED:
        raise TaskRefused(
            f"Not added: {quoted(words[1])} cannot be a task's name (a lower-case word of "
            f"letters, digits, - or _, not an agent's name: {', '.join(AGENT_NAMES)})."
        )
    pipeline: str | None = None
    sample = 100.0
    kind: TaskKind = "note"
    rest = words[3:]
    while rest and "=" in rest[0]:
        key, _, value = rest.pop(0).partition("=")
        key = key.lower()
        if key == "on":
            if value.lower() not in PIPELINE_NAMES:
                raise TaskRefused(
                    f"Not added: {quoted(value)} is not a pipeline ({', '.join(PIPELINE_NAMES)})."
                )
            pipeline = value.lower()
        elif key == "sample":
            try:
                sample = float(value.rstrip("%"))
            except ValueError:
                raise TaskRefused(f"Not added: sample must be a percent. {TASK_USAGE}") from None
            if not 0 < sample <= 100:
                raise TaskRefused("Not added: sample must be above 0 and at most 100 percent.")
        elif key == "kind" and value.lower() in ("note", "score"):
            kind = "score" if value.lower() == "score" else "note"
        else:
            raise TaskRefused(f"Not added: I don't know {quoted(key + '=' + value)}. {TASK_USAGE}")
    text = " ".join(rest).strip()
    if not text:
        raise TaskRefused(f"Not added: the task needs its text. {TASK_USAGE}")
    if len(text) > MAX_TEXT:
        raise TaskRefused(
            f"Not added: the task text is {len(text)} characters (at most {MAX_TEXT})."
        )
    return TaskRow(
        name=name,
        model=model,
        pipeline=pipeline,
        sample=sample,
        kind=kind,
        instruction=text,
        created_by=by,
    )


def _clip(text: str, size: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"
