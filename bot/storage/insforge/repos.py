"""The repositories of `bot.storage.repositories` over InsForge: one HTTP request per method on
the hot paths.

The client repeats idempotent requests whose outcome it could not know (a timeout, a dropped
connection, 408, 5xx: InsForge may have committed them), so every write here is built to be
repeated safely, and every result to stay true when it was:

- messages and override history are "insert once" upserts on a client-made `idempotency_key`
  (`ignore-duplicates`, migration 007). A repeat of a write that had landed stores nothing and
  answers nothing, so the first row is read back by its key (a second request, on that path
  only). Plain inserts would have to give up after an unknown outcome instead, and a user's
  message or an admin's history line would be lost whenever InsForge's answer was;
- `deactivate` stamps the row with a time unique to the call, so when its repeated PATCH matches
  no active row it can tell "my first attempt turned it off" from "it was already off";
- `clear` counts before it deletes: a repeated DELETE answers only what the repeat deleted.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.storage.insforge_client import InsForgeClient, Row, eq
from bot.storage.models import (
    AgentModelConfig,
    ChatSummary,
    Exercise,
    ModelCatalogRow,
    ModelConfigChange,
    ModelPreference,
    StoredMessage,
    User,
    UserFact,
    UserSettings,
    new_idempotency_key,
    utcnow,
)
from bot.storage.repositories import StorageError, StorageNotFound
from bot.storage.timeutil import iso_utc


def _first(rows: list[Row], table: str) -> Row:
    if not rows:
        raise StorageError(f"InsForge returned no row for a write to {table}")
    return rows[0]


async def _insert_once(client: InsForgeClient, table: str, row: Row) -> Row:
    """Insert `row` unless a row with its `idempotency_key` exists; the stored row either way."""
    key = row["idempotency_key"]
    rows = await client.upsert(table, row, on_conflict="idempotency_key", ignore_duplicates=True)
    if not rows:
        # An earlier attempt of this same write landed and this one was ignored.
        rows = await client.select(table, {"idempotency_key": eq(key)}, limit=1)
    return _first(rows, table)


class _UniqueClock:
    """utcnow(), but never the same instant twice in this process (PostgreSQL keeps microseconds,
    and two calls can read the same one)."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        now = utcnow()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


_unique_now = _UniqueClock()


class InsForgeUserRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def touch(self, user: User) -> User:
        # first_seen is left out: the column default sets it on insert, a merge keeps it.
        rows = await self._client.upsert(
            "users",
            {
                "id": user.id,
                "username": user.username,
                "first_name": user.first_name,
                "last_name": user.last_name,
                "language_code": user.language_code,
                "last_seen": iso_utc(user.last_seen),
            },
            on_conflict="id",
        )
        return User.model_validate(_first(rows, "users"))

    async def get(self, user_id: int) -> User | None:
        rows = await self._client.select("users", {"id": eq(user_id)}, limit=1)
        return User.model_validate(rows[0]) if rows else None

    async def erase(self, user_id: int) -> dict[str, int]:
        # One DELETE per table, each safe to repeat: a retry after a lost answer deletes what
        # is left (and `/deleteme` again finishes what an outage interrupted).
        client, me = self._client, eq(user_id)
        written = await client.delete("messages", {"user_id": me}, select="id")
        private = await client.delete("messages", {"chat_id": me}, select="id")
        summaries = await client.delete("chat_summaries", {"chat_id": me}, select="chat_id")
        facts = await client.delete("user_facts", {"user_id": me}, select="id")
        set_by = await client.delete("exercises", {"user_id": me}, select="id")
        in_chat = await client.delete("exercises", {"chat_id": me}, select="id")
        settings = await client.delete("user_settings", {"user_id": me}, select="user_id")
        user = await client.delete("users", {"id": me}, select="id")
        replay_by = await client.delete("replay_inputs", {"user_id": me}, select="id")
        replay_in = await client.delete("replay_inputs", {"chat_id": me}, select="id")
        tasks_by = await client.delete("task_results", {"user_id": me}, select="id")
        tasks_in = await client.delete("task_results", {"chat_id": me}, select="id")
        return {
            "messages": len(written) + len(private),
            "summaries": len(summaries),
            "facts": len(facts),
            "exercises": len(set_by) + len(in_chat),
            "settings": len(settings),
            "user": len(user),
            "replay_inputs": len(replay_by) + len(replay_in),
            "task_results": len(tasks_by) + len(tasks_in),
        }


class InsForgeUserSettingsRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def get(self, user_id: int) -> UserSettings | None:
        rows = await self._client.select("user_settings", {"user_id": eq(user_id)}, limit=1)
        return UserSettings.model_validate(rows[0]) if rows else None

    async def save(self, settings: UserSettings) -> UserSettings:
        rows = await self._client.upsert(
            "user_settings",
            {
                "user_id": settings.user_id,
                "default_model": settings.default_model,
                "model_preference": settings.model_preference,
                "api_key_provider": settings.api_key_provider,
                "api_key_encrypted": settings.api_key_encrypted,
                "updated_at": iso_utc(utcnow()),
            },
            on_conflict="user_id",
        )
        return UserSettings.model_validate(_first(rows, "user_settings"))

    async def set_default_model(self, user_id: int, default_model: str | None) -> UserSettings:
        return await self._set(user_id, {"default_model": default_model})

    async def set_model_preference(self, user_id: int, preference: ModelPreference) -> UserSettings:
        return await self._set(user_id, {"model_preference": preference})

    async def set_api_key(
        self, user_id: int, provider: str | None, encrypted: str | None
    ) -> UserSettings:
        if (provider is None) != (encrypted is None):
            raise ValueError("give both the key's provider and the encrypted key, or neither")
        return await self._set(
            user_id, {"api_key_provider": provider, "api_key_encrypted": encrypted}
        )

    async def _set(self, user_id: int, values: Row) -> UserSettings:
        # A merge writes only the columns sent: a change made meanwhile to another column
        # (`/model` while a key is tested) is kept. A new row gets the column defaults.
        rows = await self._client.upsert(
            "user_settings",
            {"user_id": user_id, **values, "updated_at": iso_utc(utcnow())},
            on_conflict="user_id",
        )
        return UserSettings.model_validate(_first(rows, "user_settings"))


def message_row(message: StoredMessage) -> Row:
    """A message as the `messages` table stores it (a fresh idempotency key if it has none)."""
    return {
        "chat_id": message.chat_id,
        "user_id": message.user_id,
        "role": message.role,
        "text": message.text,
        "pipeline": message.pipeline,
        "trace_id": message.trace_id,
        "created_at": iso_utc(message.created_at),
        "idempotency_key": message.idempotency_key or new_idempotency_key(),
    }


class InsForgeMessageRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def add(self, message: StoredMessage) -> StoredMessage:
        row = await _insert_once(self._client, "messages", message_row(message))
        return StoredMessage.model_validate(row)

    async def add_many(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        # One upsert for the batch; ignore_duplicates keeps it idempotent (a retry after a lost
        # answer stores nothing twice).
        await self._client.upsert(
            "messages",
            [message_row(m) for m in messages],
            on_conflict="idempotency_key",
            ignore_duplicates=True,
        )

    async def recent(self, chat_id: int, limit: int = 20) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = await self._client.select(
            "messages", {"chat_id": eq(chat_id)}, order="id.desc", limit=limit
        )
        return [StoredMessage.model_validate(row) for row in reversed(rows)]

    async def count(self, chat_id: int) -> int:
        return await self._client.count("messages", {"chat_id": eq(chat_id)})

    async def id_of(self, idempotency_key: str) -> int | None:
        rows = await self._client.select(
            "messages", {"idempotency_key": eq(idempotency_key)}, select="id", limit=1
        )
        return int(rows[0]["id"]) if rows else None

    async def clear(self, chat_id: int) -> int:
        # Counted first: if the DELETE's answer is lost and it is repeated, the repeat answers
        # only what it deleted itself (nothing). The DELETE's own answer wins when larger (a
        # message stored in between went too).
        counted = await self._client.count("messages", {"chat_id": eq(chat_id)})
        if counted == 0:
            return 0
        rows = await self._client.delete("messages", {"chat_id": eq(chat_id)}, select="id")
        return max(len(rows), counted)


class InsForgeSummaryRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def get(self, chat_id: int) -> ChatSummary | None:
        rows = await self._client.select("chat_summaries", {"chat_id": eq(chat_id)}, limit=1)
        return ChatSummary.model_validate(rows[0]) if rows else None

    async def save(self, summary: ChatSummary) -> ChatSummary:
        rows = await self._client.upsert(
            "chat_summaries",
            {
                "chat_id": summary.chat_id,
                "summary": summary.summary,
                "message_count": summary.message_count,
                "updated_at": iso_utc(utcnow()),
            },
            on_conflict="chat_id",
        )
        return ChatSummary.model_validate(_first(rows, "chat_summaries"))

    async def clear(self, chat_id: int) -> None:
        await self._client.delete("chat_summaries", {"chat_id": eq(chat_id)}, select="chat_id")


class InsForgeFactRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def add_many(self, user_id: int, facts: Sequence[str]) -> list[UserFact]:
        unique = list(dict.fromkeys(fact.strip() for fact in facts if fact.strip()))
        if not unique:
            return []
        now = iso_utc(utcnow())
        rows = await self._client.upsert(
            "user_facts",
            [{"user_id": user_id, "fact": fact, "created_at": now} for fact in unique],
            on_conflict="user_id,fact",
            ignore_duplicates=True,
        )
        stored = [UserFact.model_validate(row) for row in rows]
        return sorted(stored, key=lambda fact: fact.id or 0)

    async def list(self, user_id: int, limit: int = 50) -> builtins.list[UserFact]:
        if limit <= 0:
            return []
        rows = await self._client.select(
            "user_facts", {"user_id": eq(user_id)}, order="id.desc", limit=limit
        )
        return [UserFact.model_validate(row) for row in reversed(rows)]

    async def clear(self, user_id: int) -> int:
        rows = await self._client.delete("user_facts", {"user_id": eq(user_id)}, select="id")
        return len(rows)


class InsForgeExerciseRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def create(self, exercise: Exercise) -> Exercise:
        rows = await self._client.insert(
            "exercises",
            {
                "chat_id": exercise.chat_id,
                "user_id": exercise.user_id,
                "topic": exercise.topic,
                "question": exercise.question,
                "answer": exercise.answer,
                "grade": exercise.grade,
                "feedback": exercise.feedback,
                "created_at": iso_utc(exercise.created_at),
                "graded_at": iso_utc(exercise.graded_at) if exercise.graded_at else None,
            },
        )
        return Exercise.model_validate(_first(rows, "exercises"))

    async def open_for_chat(self, chat_id: int) -> Exercise | None:
        rows = await self._client.select(
            "exercises",
            {"chat_id": eq(chat_id), "graded_at": "is.null"},
            order="id.desc",
            limit=1,
        )
        return Exercise.model_validate(rows[0]) if rows else None

    async def grade(
        self, exercise_id: int, *, answer: str, grade: float, feedback: str
    ) -> Exercise:
        values: dict[str, Any] = {
            "answer": answer,
            "grade": grade,
            "feedback": feedback,
            "graded_at": iso_utc(utcnow()),
        }
        rows = await self._client.update("exercises", values, {"id": eq(exercise_id)})
        if not rows:
            raise StorageNotFound(f"no exercise with id {exercise_id}", code="not_found")
        return Exercise.model_validate(rows[0])

    async def list_for_user(self, user_id: int, limit: int = 20) -> list[Exercise]:
        if limit <= 0:
            return []
        rows = await self._client.select(
            "exercises", {"user_id": eq(user_id)}, order="id.desc", limit=limit
        )
        return [Exercise.model_validate(row) for row in rows]


class InsForgeAgentModelConfigRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def get_all_active(self) -> list[AgentModelConfig]:
        rows = await self._client.select(
            "agent_model_config", {"is_active": eq(True)}, order="agent_name.asc"
        )
        return [AgentModelConfig.model_validate(row) for row in rows]

    async def get(self, agent_name: str) -> AgentModelConfig | None:
        rows = await self._client.select(
            "agent_model_config", {"agent_name": eq(agent_name)}, limit=1
        )
        return AgentModelConfig.model_validate(rows[0]) if rows else None

    async def upsert(self, agent_name: str, model_id: str, set_by: str | None) -> AgentModelConfig:
        # created_at is left out: set by the column default on insert, kept by a merge.
        rows = await self._client.upsert(
            "agent_model_config",
            {
                "agent_name": agent_name,
                "model_id": model_id,
                "is_active": True,
                "set_by": set_by,
                "updated_at": iso_utc(utcnow()),
            },
            on_conflict="agent_name",
        )
        return AgentModelConfig.model_validate(_first(rows, "agent_model_config"))

    async def deactivate(self, agent_name: str) -> bool:
        # `updated_at` doubles as this call's mark. The PATCH matches only an active row; when it
        # answers no row, either nothing was active, or an earlier attempt of this very PATCH
        # turned it off and its answer was lost. Only in the second case does the row carry our
        # mark (another call's reset, or a later set, would carry theirs).
        stamp = _unique_now()
        rows = await self._client.update(
            "agent_model_config",
            {"is_active": False, "updated_at": iso_utc(stamp)},
            {"agent_name": eq(agent_name), "is_active": eq(True)},
        )
        if rows:
            return True
        row = await self.get(agent_name)
        return row is not None and not row.is_active and row.updated_at == stamp


class InsForgeModelConfigHistoryRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def append(self, change: ModelConfigChange) -> ModelConfigChange:
        row = await _insert_once(
            self._client,
            "agent_model_config_history",
            {
                "agent_name": change.agent_name,
                "action": change.action,
                "old_model_id": change.old_model_id,
                "new_model_id": change.new_model_id,
                "changed_by": change.changed_by,
                "changed_at": iso_utc(change.changed_at),
                "idempotency_key": change.idempotency_key or new_idempotency_key(),
                "reverts_id": change.reverts_id,
            },
        )
        return ModelConfigChange.model_validate(row)

    async def list(
        self, agent_name: str | None = None, limit: int = 20
    ) -> builtins.list[ModelConfigChange]:
        if limit <= 0:
            return []
        filters = {"agent_name": eq(agent_name)} if agent_name is not None else None
        rows = await self._client.select(
            "agent_model_config_history", filters, order="id.desc", limit=limit
        )
        return [ModelConfigChange.model_validate(row) for row in rows]

    async def latest_id(self) -> int:
        rows = await self._client.select(
            "agent_model_config_history", None, select="id", order="id.desc", limit=1
        )
        return int(rows[0]["id"]) if rows else 0


class InsForgeModelCatalogRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[ModelCatalogRow]:
        rows = await self._client.select("model_catalog", None, order="alias.asc")
        return [ModelCatalogRow.model_validate(row) for row in rows]

    async def get(self, alias: str) -> ModelCatalogRow | None:
        rows = await self._client.select("model_catalog", {"alias": eq(alias)}, limit=1)
        return ModelCatalogRow.model_validate(rows[0]) if rows else None

    async def save(self, row: ModelCatalogRow) -> ModelCatalogRow:
        # A merge upsert on alias: repeating it (after a lost answer) stores the same row, and
        # created_at is left to the column default on insert and kept by a merge.
        rows = await self._client.upsert(
            "model_catalog",
            {
                "alias": row.alias,
                "spec": row.spec,
                "display_name": row.display_name,
                "timeout": row.timeout,
                "max_tokens": row.max_tokens,
                "temperature": row.temperature,
                "offered_to_users": row.offered_to_users,
                "updated_by": row.updated_by,
                "updated_at": iso_utc(utcnow()),
            },
            on_conflict="alias",
        )
        return ModelCatalogRow.model_validate(_first(rows, "model_catalog"))

    async def delete(self, alias: str) -> bool:
        # Counted as removed when the row is gone afterwards and was there before: a repeated
        # DELETE (its first answer lost) answers no row although the first one removed it.
        existed = await self.get(alias) is not None
        rows = await self._client.delete("model_catalog", {"alias": eq(alias)}, select="id")
        return bool(rows) or existed
