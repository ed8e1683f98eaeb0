"""The admin commands' logic, shared by the Telegram bot and the console.

Both front ends hand over the command and its argument text; every command answers the plain
text to show, so `/setmodel` says the same thing wherever it is typed. Nothing here knows
Telegram.

    admin = AdminCommands.from_services(services)
    reply = await admin.handle("setmodel", "role:chat fast", by="tg:42")
    reply.text, reply.monospace

Commands: `/setmodel <target> <model>`, `/resetmodel <target>`, `/rollback <target>`,
`/modelhistory [target]`, `/models`, `/agents`, and `/catalog ...` (`bot.services.
catalog_commands`). A target is an agent, `pipeline:<name>`, `role:<role>` or `default`; a model
a catalog alias, a `provider:model` spec or a bare OpenRouter id.

Input the admin can fix (an unknown target or alias, a provider without its key, an id not in
OpenRouter's list, an empty model) changes nothing and answers one "Not changed: ..." line; so
does a storage failure before the change is written (logged for the operator). Once it is
written the answer says it changed, and says so truthfully when its history line could not be
written or other replicas could not be told at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.config import AGENT_NAMES, Settings
from bot.llm.specs import ModelSpecError
from bot.observatory.stats import ScoreSource
from bot.pipeline.pipelines import AGENT_HOME_PIPELINE, build_pipelines
from bot.pipeline.steps import Pipeline
from bot.replay.commands import ReplayCommands, ReplayRequest
from bot.replay.run import Replayer
from bot.services.catalog_commands import CATALOG_USAGE, CatalogCommands
from bot.services.command_replies import (
    HISTORY_PROBLEM,
    READ_PROBLEM,
    STORAGE_PROBLEM,
    outcome_notes,
    propagation_note,
    when,
)
from bot.services.model_catalog import Picked
from bot.services.model_checks import ModelChecker, ModelProblem
from bot.services.model_config import (
    ModelConfigService,
    OverrideChange,
    normalize_model_id,
)
from bot.services.model_levels import (
    AGENT_ROLES,
    ROLES,
    Target,
    UnknownTargetError,
    UserModelChoice,
    parse_target,
    target_names,
)
from bot.services.model_resolution import ModelResolver, Resolution
from bot.services.openrouter_models import OpenRouterModels
from bot.services.trial_commands import TrialCommands
from bot.services.trials import Trials
from bot.storage.models import ModelConfigChange
from bot.storage.repositories import LedgerRepo, ModelConfigHistoryRepo, StorageError
from bot.tasks.commands import TaskCommands
from bot.tasks.service import Tasks

if TYPE_CHECKING:
    from bot.app import Services

__all__ = [
    "ADMIN_COMMANDS",
    "CATALOG_USAGE",
    "HISTORY_PROBLEM",
    "HISTORY_USAGE",
    "RESETMODEL_USAGE",
    "ROLLBACK_USAGE",
    "SETMODEL_USAGE",
    "STORAGE_PROBLEM",
    "AdminCommands",
    "AdminReply",
]

log = logging.getLogger(__name__)

UserModelLoader = Callable[[int | None], Awaitable[UserModelChoice | None]]

# What each agent does, for `/agents` (its role is in `model_levels.AGENT_ROLES`).
AGENT_DUTIES: dict[str, str] = {
    "extraction": "notes facts about the user (background)",
    "strategist": "plans the reply",
    "coach": "writes the chat reply",
    "tutor": "writes /learn lessons",
    "trainer": "sets and grades /train exercises",
    "summarizer": "keeps the chat summary (background)",
}

ADMIN_COMMANDS = (
    "setmodel",
    "resetmodel",
    "rollback",
    "models",
    "agents",
    "modelhistory",
    "catalog",
    "trial",
    "replay",
    "task",
)

TARGETS = "Targets: " + target_names()
SETMODEL_USAGE = (
    "Usage: /setmodel <target> <model>\n"
    "model: a catalog alias (see /catalog), provider:model, or an OpenRouter id\n"
    "e.g. /setmodel strategist anthropic/claude-sonnet-4.5, /setmodel role:chat fast\n" + TARGETS
)
RESETMODEL_USAGE = "Usage: /resetmodel <target>\n" + TARGETS
ROLLBACK_USAGE = "Usage: /rollback <target> (undoes its latest change)\n" + TARGETS
HISTORY_USAGE = "Usage: /modelhistory [target]\n" + TARGETS + ", catalog:<alias>"
MODELS_USAGE = (
    "Usage: /models [user id]: each agent's model, level and who set it; with a Telegram user "
    "id, as that user's messages get them (their model and /prefer preference)."
)


@dataclass(frozen=True, slots=True)
class AdminReply:
    text: str
    # Tables read best in monospace (Telegram: <pre>).
    monospace: bool = False
    # A confirmation to offer before anything runs (`/replay`): Telegram shows a button carrying
    # this data, the console tells the admin to repeat the command with `confirm`.
    confirm: str | None = None


def _default_pipelines() -> dict[str, Pipeline]:
    return build_pipelines(None)


@dataclass(slots=True)
class AdminCommands:
    settings: Settings
    model_config: ModelConfigService
    resolver: ModelResolver
    history: ModelConfigHistoryRepo | None
    load_user_model: UserModelLoader
    openrouter_models: OpenRouterModels | None = None
    pipelines: Mapping[str, Pipeline] = field(default_factory=_default_pipelines)
    checker: ModelChecker | None = None
    # `/trial`: the running trials and the ledger their figures come from.
    trials: Trials | None = None
    ledger: LedgerRepo | None = None
    # `/replay`: None when no inputs are kept (STORE_PROMPTS=false).
    replayer: Replayer | None = None
    # `/task`: the post-completion tasks; their scores' figures (`/trial`'s judge rows).
    tasks: Tasks | None = None
    scores: ScoreSource | None = None

    def __post_init__(self) -> None:
        if self.checker is None:
            self.checker = ModelChecker(self.settings, self.openrouter_models)

    @classmethod
    def from_services(cls, services: Services) -> AdminCommands:
        return cls(
            settings=services.settings,
            model_config=services.model_config,
            resolver=services.resolver,
            history=services.storage.model_history,
            load_user_model=services.conversation.load_user_model,
            openrouter_models=services.openrouter_models,
            pipelines=services.pipelines,
            trials=services.trials,
            ledger=services.storage.ledger if services.ledger is not None else None,
            replayer=services.replayer,
            tasks=services.tasks,
            scores=services.storage.tasks if services.ledger is not None else None,
        )

    @property
    def catalog_commands(self) -> CatalogCommands:
        assert self.checker is not None
        return CatalogCommands(self.settings, self.model_config, self.checker)

    async def check_model(self, model: str) -> tuple[Picked, list[str]]:
        """What model text names (as /setmodel reads it), and notes; raises `ModelProblem`."""
        assert self.checker is not None
        snapshot = await self.model_config.snapshot()
        return await self.checker.check(normalize_model_id(model), snapshot.catalog)

    @property
    def replay_commands(self) -> ReplayCommands:
        return ReplayCommands(self.replayer, self.check_model, self.settings.replay_keep)

    async def replay(self, request: ReplayRequest, *, by: str) -> list[str]:
        """Run a confirmed `/replay`; the report's messages."""
        return await self.replay_commands.run(request, by=by)

    def task_commands(self, tasks: Tasks) -> TaskCommands:
        async def assign(name: str, model: str | None, by: str) -> str:
            if model is None:
                return await self.reset_model(name, by=by)
            return await self.set_model(name, model, by=by)

        return TaskCommands(tasks, self.check_model, assign)

    def trial_commands(self, trials: Trials) -> TrialCommands:
        check = self.check_model

        async def set_model(agent: str, model: str, by: str) -> str:
            return await self.set_model(agent, model, by=by)

        return TrialCommands(
            trials,
            self.ledger,
            check,
            set_model,
            default_min_calls=self.settings.trial_min_calls,
            scores=self.scores,
        )

    # --- one entry point for both front ends ---

    async def handle(
        self, command: str, args: str | None, *, by: str, user_id: int | None = None
    ) -> AdminReply:
        """Run `/<command> <args>` and answer its text (usage when the arguments do not fit)."""
        words = (args or "").split()
        name = command.lower().lstrip("/")
        if name == "setmodel":
            if len(words) != 2:
                return AdminReply(SETMODEL_USAGE)
            return AdminReply(await self.set_model(words[0], words[1], by=by))
        if name in ("resetmodel", "rollback"):
            if len(words) != 1:
                return AdminReply(RESETMODEL_USAGE if name == "resetmodel" else ROLLBACK_USAGE)
            if name == "resetmodel":
                return AdminReply(await self.reset_model(words[0], by=by))
            return AdminReply(await self.rollback(words[0], by=by))
        if name == "modelhistory":
            if len(words) > 1:
                return AdminReply(HISTORY_USAGE)
            return AdminReply(await self.model_history(words[0] if words else None), True)
        if name == "models":
            if len(words) > 1 or (words and not words[0].lstrip("-").isdigit()):
                return AdminReply(MODELS_USAGE)
            if words:
                return AdminReply(await self.models(int(words[0]), of_user=True), True)
            return AdminReply(await self.models(user_id), True)
        if name == "agents":
            return AdminReply(self.agents(), True)
        if name == "trial":
            if self.trials is None:
                return AdminReply("Trials are not available here.")
            text, monospace = await self.trial_commands(self.trials).handle(args, by=by)
            return AdminReply(text, monospace)
        if name == "replay":
            asked = await self.replay_commands.ask(args)
            return AdminReply(asked.text, confirm=asked.confirm)
        if name == "task":
            if self.tasks is None:
                return AdminReply("Tasks are not available here.")
            text, monospace = await self.task_commands(self.tasks).handle(args, by=by)
            return AdminReply(text, monospace)
        if name == "catalog":
            text, monospace = await self.catalog_commands.handle(args or "", by=by)
            return AdminReply(text, monospace)
        raise ValueError(f"not an admin command: {command}")

    # --- assignments ---

    async def set_model(self, target: str, model: str, *, by: str) -> str:
        try:
            parsed = parse_target(target)
            model_id = normalize_model_id(model)
            snapshot = await self.model_config.snapshot()
            assert self.checker is not None
            picked, notes = await self.checker.check(model_id, snapshot.catalog)
            before = await self._effective(parsed)
            change = await self.model_config.set_override(parsed.name, model_id, by)
        except (UnknownTargetError, ModelProblem, ValueError) as exc:
            return f"Not changed: {exc}"
        except StorageError as exc:
            log.error("setmodel %s -> %s by %s failed: %s", target, model, by, exc)
            return STORAGE_PROBLEM
        if parsed.kind == "agent":
            lines = [f"{parsed.name} now runs on {picked.label} (was {before})."]
        else:
            was = self._text_label(change.previous_model_id)
            lines = [f"{parsed.name} is now {picked.label} (was {was})."]
            lines.append(await self._reach(parsed))
        lines.extend(outcome_notes(self.settings, change))
        lines.extend(notes)
        return "\n".join(lines)

    async def reset_model(self, target: str, *, by: str) -> str:
        try:
            parsed = parse_target(target)
            change = await self.model_config.reset_override(parsed.name, by)
        except UnknownTargetError as exc:
            return f"Not changed: {exc}"
        except StorageError as exc:
            log.error("resetmodel %s by %s failed: %s", target, by, exc)
            return STORAGE_PROBLEM
        if parsed.kind == "agent":
            now = await self._effective(parsed)
            if not change.changed:
                return f"{parsed.name} had no override; it runs on {now}."
            was = self._text_label(change.previous_model_id)
            lines = [f"{parsed.name} is back on its configured model {now} (was {was})."]
        else:
            if not change.changed:
                return f"{parsed.name} was not set; nothing changed."
            was = self._text_label(change.previous_model_id)
            lines = [f"{parsed.name} is no longer set (was {was}).", await self._reach(parsed)]
        lines.extend(outcome_notes(self.settings, change))
        return "\n".join(lines)

    async def rollback(self, target: str, *, by: str) -> str:
        try:
            parsed = parse_target(target)
            line = await self.model_config.rollback_candidate(parsed.name)
            if line is None:
                return f"Nothing to roll back for {parsed.name}: it has no change left to undo."
            restore = line.old_model_id
            notes: list[str] = []
            if restore is not None:
                snapshot = await self.model_config.snapshot()
                assert self.checker is not None
                try:
                    _picked, notes = await self.checker.check(restore, snapshot.catalog)
                except ModelProblem as exc:
                    return f"Not changed: the model before that change, {restore}, {exc}"
            change = await self.model_config.rollback(parsed.name, line, by)
        except UnknownTargetError as exc:
            return f"Not changed: {exc}"
        except StorageError as exc:
            log.error("rollback %s by %s failed: %s", target, by, exc)
            return STORAGE_PROBLEM
        undone = (
            f"#{line.id} of {when(line.changed_at)} by {line.changed_by or 'unknown'}: "
            f"{_history_what(line)}"
        )
        restored = self._text_label(restore) if restore is not None else "its configured model"
        lines = [f"{parsed.name} is back on {restored} (undid {undone})."]
        if parsed.kind == "agent":
            lines.append(f"It runs on {await self._effective(parsed)}.")
        else:
            lines.append(await self._reach(parsed))
        lines.extend(outcome_notes(self.settings, change))
        lines.extend(notes)
        return "\n".join(lines)

    # --- what runs where ---

    async def models(self, user_id: int | None = None, *, of_user: bool = False) -> str:
        """Per pipeline, each agent's effective model, its level, and who set it: for the
        asking admin, or (`of_user`, `/models <user id>`) as that user's messages get them."""
        try:
            user = await self.load_user_model(user_id)
            snapshot = await self.model_config.snapshot()
        except StorageError as exc:
            log.error("models: storage failed: %s", exc)
            return READ_PROBLEM
        width = max(len(a) for a in AGENT_NAMES)
        lines = []
        preference = user.preference if user is not None else "any"
        if of_user:
            lines.append(
                f"For user {user_id}: model {user.model if user and user.model else 'not chosen'}"
                f", preference {preference}."
            )
        elif preference != "any":
            lines.append(f"Your preference: {preference}.")
        for name, pipeline in self.pipelines.items():
            lines.append(name)
            for agent in pipeline.agents():
                try:
                    explained = await self.resolver.explain(agent, pipeline=name, user=user)
                except ModelSpecError as exc:
                    lines.append(f"  {agent:<{width}}  none: {exc}")
                    continue
                found = explained.resolution
                line = f"  {agent:<{width}}  {found.label}  [{found.level}]  {_origin(found)}"
                if explained.note:
                    line += f"  ({explained.note})"
                lines.append(line)
        lines.append(f"Configuration version {snapshot.version}.")
        return "\n".join(lines)

    def agents(self) -> str:
        width = max(len(a) for a in AGENT_NAMES)
        return (
            "\n".join(
                f"{agent:<{width}}  {AGENT_ROLES[agent]:<4}  {AGENT_DUTIES.get(agent, '')}"
                for agent in AGENT_NAMES
            )
            + "\nRoles: "
            + "; ".join(f"{role}: {what}" for role, what in ROLES.items())
        )

    async def model_history(self, target: str | None = None, limit: int = 15) -> str:
        key: str | None = None
        if target is not None:
            text = target.strip().lower()
            if text.startswith("catalog:") and len(text) > len("catalog:"):
                key = text
            else:
                try:
                    key = parse_target(text).name
                except UnknownTargetError as exc:
                    return str(exc).capitalize()
        if self.history is None:
            return "No history is kept by this storage."
        try:
            changes = await self.history.list(key, limit)
        except StorageError as exc:
            log.error("modelhistory: storage failed: %s", exc)
            return READ_PROBLEM
        if not changes:
            return f"No model changes for {key} yet." if key else "No model changes yet."
        return "\n".join(
            f"#{c.id} {when(c.changed_at)}  {c.agent_name}: {_history_what(c)}"
            f"  by {c.changed_by or 'unknown'}"
            for c in changes
        )

    # --- helpers ---

    def propagation_note(self, change: OverrideChange) -> str:
        return propagation_note(self.settings, change)

    def _text_label(self, model: str | None) -> str:
        """Stored model text as answers show it (the entry's label when it names one)."""
        if model is None:
            return "not set"
        try:
            return self.resolver.interpret(model).label
        except ValueError:
            return model

    async def _effective(self, target: Target) -> str:
        agent = target.value
        explained = await self.resolver.explain(agent, pipeline=AGENT_HOME_PIPELINE.get(agent))
        return f"{explained.resolution.label} [{explained.resolution.level}]"

    async def _reach(self, target: Target) -> str:
        """Which agents the target's assignment reaches now, and which a more specific level
        keeps: `Used by: coach, tutor. Not by: trainer (override).`"""
        pairs: list[tuple[str, str | None]]
        if target.kind == "pipeline":
            pipeline = self.pipelines.get(target.value)
            pairs = [(a, target.value) for a in (pipeline.agents() if pipeline else [])]
        elif target.kind == "role":
            pairs = [
                (a, AGENT_HOME_PIPELINE.get(a))
                for a in AGENT_NAMES
                if AGENT_ROLES[a] == target.value
            ]
        else:
            pairs = [(a, AGENT_HOME_PIPELINE.get(a)) for a in AGENT_NAMES]
        used: list[str] = []
        kept: list[str] = []
        for agent, home in pairs:
            found = (await self.resolver.explain(agent, pipeline=home)).resolution
            if found.target == target.name:
                used.append(agent)
            else:
                kept.append(f"{agent} ({found.level})")
        text = f"Used by: {', '.join(used) or 'no agent'}."
        if kept:
            text += f" Not by: {', '.join(kept)}."
        return text


def _origin(found: Resolution) -> str:
    """`set by tg:42 (@ann), <when>`, `from AGENT_MODELS[coach]`, `your choice`."""
    if found.level == "user":
        return "your choice"
    by = found.set_by or "unknown"
    if by.isupper():  # an environment variable: say which entry of it
        return f"from {found.target or by}"
    if found.set_at is not None:
        return f"set by {by}, {when(found.set_at)}"
    return f"set by {by}"


def _history_what(change: ModelConfigChange) -> str:
    if change.agent_name.startswith("catalog:"):
        if change.action == "add":
            return f"added {change.new_model_id}"
        if change.action == "remove":
            return f"removed ({change.old_model_id})"
        return f"{change.old_model_id} -> {change.new_model_id}"
    old = change.old_model_id or "configured"
    new = change.new_model_id or "configured"
    suffix = {"reset": " (reset)", "rollback": " (rollback)"}.get(change.action, "")
    return f"{old} -> {new}{suffix}"
