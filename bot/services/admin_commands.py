"""The admin commands' logic, shared by the Telegram bot and the console.

Both front ends parse their input and call these; every method returns the plain text to show,
so `/setmodel` says the same thing wherever it is typed. Nothing here knows Telegram.

    admin = AdminCommands.from_services(services)
    text = await admin.set_model("strategist", "anthropic/claude-sonnet-4.5", by="tg:42")
    text = await admin.models(user_id=42)

Errors the admin can fix (unknown agent, id not in OpenRouter's catalog, empty id) become a
"Not changed: ..." answer; a storage failure before the override is written becomes one too, and
is logged for the operator. Once it is written the answer says it changed, and says so truthfully
when its history line could not be written or other replicas could not be told at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import AGENT_NAMES, Settings
from bot.pipeline.pipelines import AGENT_HOME_PIPELINE
from bot.services.model_catalog import ModelCatalog
from bot.services.model_config import (
    ModelConfigService,
    OverrideChange,
    UnknownAgentError,
    normalize_model_id,
)
from bot.services.model_resolution import ModelResolver, UserModelChoice
from bot.storage.repositories import ModelConfigHistoryRepo, StorageError

if TYPE_CHECKING:
    from datetime import datetime

    from bot.app import Services

log = logging.getLogger(__name__)

UserModelLoader = Callable[[int | None], Awaitable[UserModelChoice | None]]

AGENT_ROLES: dict[str, str] = {
    "extraction": "notes facts about the user (background)",
    "strategist": "plans the reply",
    "coach": "writes the chat reply",
    "tutor": "writes /learn lessons",
    "trainer": "sets and grades /train exercises",
    "summarizer": "keeps the chat summary (background)",
}

SETMODEL_USAGE = (
    "Usage: /setmodel <agent> <openrouter-model-id>\n"
    "e.g. /setmodel strategist anthropic/claude-sonnet-4.5\n"
    "Agents: " + ", ".join(AGENT_NAMES)
)
RESETMODEL_USAGE = "Usage: /resetmodel <agent>\nAgents: " + ", ".join(AGENT_NAMES)
HISTORY_USAGE = "Usage: /modelhistory [agent]\nAgents: " + ", ".join(AGENT_NAMES)

STORAGE_PROBLEM = "Not changed: the database did not answer. Please try again in a minute."
HISTORY_PROBLEM = (
    "Changed, but the history could not be written (the database failed): /modelhistory will "
    "not list this change."
)


def _when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(slots=True)
class AdminCommands:
    settings: Settings
    model_config: ModelConfigService
    resolver: ModelResolver
    history: ModelConfigHistoryRepo | None
    load_user_model: UserModelLoader
    catalog: ModelCatalog | None = None

    @classmethod
    def from_services(cls, services: Services) -> AdminCommands:
        return cls(
            settings=services.settings,
            model_config=services.model_config,
            resolver=services.resolver,
            history=services.storage.model_history,
            load_user_model=services.conversation.load_user_model,
            catalog=services.catalog,
        )

    def propagation_note(self, change: OverrideChange) -> str:
        """When the change reaches every replica (this one: at once)."""
        ttl = f"{self.settings.model_config_ttl:g} s"
        if change.replicas_notified:
            return "Effective now, here and on every other replica."
        if change.replicas_notified is False:
            return (
                f"Effective now here; within {ttl} on other replicas (they could not be told "
                "at once: the Redis announcement failed)."
            )
        return f"Effective now here; within {ttl} on other replicas (at once with Redis)."

    def _outcome_notes(self, change: OverrideChange) -> list[str]:
        lines = []
        if not change.history_written:
            lines.append(HISTORY_PROBLEM)
        if not self.model_config.overrides_enabled:
            lines.append("Stored, but ignored until OPENROUTER_API_KEY is set.")
        else:
            lines.append(self.propagation_note(change))
        return lines

    async def _current(self, agent: str) -> str:
        model, source, _note = await self.resolver.explain(
            agent, pipeline=AGENT_HOME_PIPELINE.get(agent)
        )
        return f"{model} [{source}]"

    async def set_model(self, agent: str, model_id: str, *, by: str) -> str:
        agent = agent.strip().lower()
        if agent not in AGENT_NAMES:
            return f"Not changed: {UnknownAgentError(agent)}"
        try:
            model_id = normalize_model_id(model_id)
        except ValueError as exc:
            return f"Not changed: {exc}"
        unverified = None
        if self.catalog is not None:
            check = await self.catalog.check(model_id)
            if check.status == "missing":
                hint = (
                    "Did you mean: " + ", ".join(check.suggestions) + "?"
                    if check.suggestions
                    else "No similar id found; see https://openrouter.ai/models"
                )
                return f"Not changed: {model_id!r} is not in OpenRouter's model catalog. {hint}"
            if check.status == "unverified":
                unverified = (
                    "Note: OpenRouter's model list could not be fetched, so this id was not "
                    f"checked. If it is wrong, undo it with /resetmodel {agent}."
                )
        try:
            old = await self._current(agent)
            change = await self.model_config.set_override(agent, model_id, by)
        except UnknownAgentError as exc:
            return f"Not changed: {exc}"
        except StorageError as exc:
            log.error("setmodel %s -> %s by %s failed: %s", agent, model_id, by, exc)
            return STORAGE_PROBLEM
        row = change.row
        assert row is not None  # a set always leaves an active row
        lines = [f"{row.agent_name} now runs on openrouter:{row.model_id} (was {old})."]
        lines.extend(self._outcome_notes(change))
        if unverified:
            lines.append(unverified)
        return "\n".join(lines)

    async def reset_model(self, agent: str, *, by: str) -> str:
        agent = agent.strip().lower()
        if agent not in AGENT_NAMES:
            return f"Not changed: {UnknownAgentError(agent)}"
        try:
            change = await self.model_config.reset_override(agent, by)
        except StorageError as exc:
            log.error("resetmodel %s by %s failed: %s", agent, by, exc)
            return STORAGE_PROBLEM
        now = await self._current(agent)
        if not change.changed:
            return f"{agent} had no override; it runs on {now}."
        previous = change.previous_model_id
        was = f"openrouter:{previous}" if previous else "an override"
        lines = [f"{agent} is back on its configured model {now} (was {was})."]
        lines.extend(self._outcome_notes(change))
        return "\n".join(lines)

    async def models(self, user_id: int | None = None) -> str:
        """Every agent: effective model, its source, and who set an override, when."""
        try:
            user = await self.load_user_model(user_id)
            overrides = await self.model_config.get_all()
        except StorageError as exc:
            log.error("models: storage failed: %s", exc)
            return "The database did not answer. Please try again in a minute."
        width = max(len(a) for a in AGENT_NAMES)
        lines = []
        for agent in AGENT_NAMES:
            model, source, note = await self.resolver.explain(
                agent, pipeline=AGENT_HOME_PIPELINE.get(agent), user=user
            )
            line = f"{agent:<{width}}  {model}  [{source}]"
            row = overrides.get(agent)
            if row is not None and source == "override":
                line += f"  set by {row.set_by or 'unknown'}, {_when(row.updated_at)}"
            if note:
                line += f"  ({note})"
            lines.append(line)
        return "\n".join(lines)

    def agents(self) -> str:
        width = max(len(a) for a in AGENT_NAMES)
        return "\n".join(f"{agent:<{width}}  {AGENT_ROLES.get(agent, '')}" for agent in AGENT_NAMES)

    async def model_history(self, agent: str | None = None, limit: int = 15) -> str:
        if agent is not None:
            agent = agent.strip().lower()
            if agent not in AGENT_NAMES:
                return str(UnknownAgentError(agent)).capitalize()
        if self.history is None:
            return "No history is kept by this storage."
        try:
            changes = await self.history.list(agent, limit)
        except StorageError as exc:
            log.error("modelhistory: storage failed: %s", exc)
            return "The database did not answer. Please try again in a minute."
        if not changes:
            return f"No model changes for {agent} yet." if agent else "No model changes yet."
        lines = []
        for change in changes:
            if change.action == "set":
                what = f"{change.old_model_id or 'configured'} -> {change.new_model_id}"
            else:
                what = f"{change.old_model_id} -> configured (reset)"
            lines.append(
                f"{_when(change.changed_at)}  {change.agent_name}: {what}"
                f"  by {change.changed_by or 'unknown'}"
            )
        return "\n".join(lines)
