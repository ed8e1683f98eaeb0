"""The repositories of `bot.storage.repositories` over SQLite: one statement per method."""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Sequence
from typing import Any

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
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import iso_utc


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 (sqlite3.Row is not a Mapping)


def _one(rows: list[sqlite3.Row], what: str) -> dict[str, Any]:
    if not rows:
        raise StorageError(f"SQLite returned no row for {what}")
    return _row(rows[0])


class SQLiteUserRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def touch(self, user: User) -> User:
        rows = await self._db.write(
            "INSERT INTO users (id, username, first_name, last_name, language_code, "
            "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET username = excluded.username, "
            "first_name = excluded.first_name, last_name = excluded.last_name, "
            "language_code = excluded.language_code, last_seen = excluded.last_seen "
            "RETURNING *",
            (
                user.id,
                user.username,
                user.first_name,
                user.last_name,
                user.language_code,
                iso_utc(user.first_seen),
                iso_utc(user.last_seen),
            ),
            action="save a user",
        )
        return User.model_validate(_one(rows, "users"))

    async def get(self, user_id: int) -> User | None:
        rows = await self._db.read(
            "SELECT * FROM users WHERE id = ?", (user_id,), action="read a user"
        )
        return User.model_validate(_row(rows[0])) if rows else None

    async def erase(self, user_id: int) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            # One transaction: the user is erased entirely or not at all.
            return {
                kind: conn.execute(sql, (user_id,) * sql.count("?")).rowcount
                for kind, sql in _ERASE
            }

        return await self._db.transaction(work, action="erase a user")


# `UserRepo.erase`, table by table (a private chat's id is its user's).
_ERASE = (
    ("messages", "DELETE FROM messages WHERE user_id = ? OR chat_id = ?"),
    ("summaries", "DELETE FROM chat_summaries WHERE chat_id = ?"),
    ("facts", "DELETE FROM user_facts WHERE user_id = ?"),
    ("exercises", "DELETE FROM exercises WHERE user_id = ? OR chat_id = ?"),
    ("settings", "DELETE FROM user_settings WHERE user_id = ?"),
    ("user", "DELETE FROM users WHERE id = ?"),
    ("replay_inputs", "DELETE FROM replay_inputs WHERE user_id = ? OR chat_id = ?"),
    ("task_results", "DELETE FROM task_results WHERE user_id = ? OR chat_id = ?"),
)


def _settings(row: sqlite3.Row) -> UserSettings:
    # The `archives` column (names, from before archives had rows of their own) is not read:
    # an archive's own `is_active` says whether it is searched by default.
    return UserSettings.model_validate(_row(row))


class SQLiteUserSettingsRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def get(self, user_id: int) -> UserSettings | None:
        rows = await self._db.read(
            "SELECT * FROM user_settings WHERE user_id = ?",
            (user_id,),
            action="read user settings",
        )
        return _settings(rows[0]) if rows else None

    async def save(self, settings: UserSettings) -> UserSettings:
        rows = await self._db.write(
            "INSERT INTO user_settings (user_id, default_model, model_preference, "
            "api_key_provider, api_key_encrypted, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET default_model = excluded.default_model, "
            "model_preference = excluded.model_preference, "
            "api_key_provider = excluded.api_key_provider, "
            "api_key_encrypted = excluded.api_key_encrypted, updated_at = excluded.updated_at "
            "RETURNING *",
            (
                settings.user_id,
                settings.default_model,
                settings.model_preference,
                settings.api_key_provider,
                settings.api_key_encrypted,
                iso_utc(utcnow()),
            ),
            action="save user settings",
        )
        if not rows:
            raise StorageError("SQLite returned no row for user_settings")
        return _settings(rows[0])

    async def set_default_model(self, user_id: int, default_model: str | None) -> UserSettings:
        return await self._set_one(user_id, "default_model", default_model, "the user's model")

    async def set_model_preference(self, user_id: int, preference: ModelPreference) -> UserSettings:
        return await self._set_one(user_id, "model_preference", preference, "the preference")

    async def _set_one(
        self, user_id: int, column: str, value: str | None, what: str
    ) -> UserSettings:
        # One column only: a change made meanwhile to another (a key being tested) is kept.
        # `column` is one of the two names above, never user input.
        rows = await self._db.write(
            f"INSERT INTO user_settings (user_id, {column}, updated_at) VALUES (?, ?, ?) "
            f"ON CONFLICT (user_id) DO UPDATE SET {column} = excluded.{column}, "
            "updated_at = excluded.updated_at RETURNING *",
            (user_id, value, iso_utc(utcnow())),
            action=f"save {what}",
        )
        if not rows:
            raise StorageError("SQLite returned no row for user_settings")
        return _settings(rows[0])

    async def set_api_key(
        self, user_id: int, provider: str | None, encrypted: str | None
    ) -> UserSettings:
        if (provider is None) != (encrypted is None):
            raise ValueError("give both the key's provider and the encrypted key, or neither")
        rows = await self._db.write(
            "INSERT INTO user_settings (user_id, api_key_provider, api_key_encrypted, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET "
            "api_key_provider = excluded.api_key_provider, "
            "api_key_encrypted = excluded.api_key_encrypted, updated_at = excluded.updated_at "
            "RETURNING *",
            (user_id, provider, encrypted, iso_utc(utcnow())),
            action="save the user's key",
        )
        if not rows:
            raise StorageError("SQLite returned no row for user_settings")
        return _settings(rows[0])


class SQLiteMessageRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def add(self, message: StoredMessage) -> StoredMessage:
        key = message.idempotency_key or new_idempotency_key()
        rows = await self._db.write(
            "INSERT INTO messages (chat_id, user_id, role, text, pipeline, trace_id, created_at, "
            "idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
            (
                message.chat_id,
                message.user_id,
                message.role,
                message.text,
                message.pipeline,
                message.trace_id,
                iso_utc(message.created_at),
                key,
            ),
            action="store a message",
        )
        if not rows:  # stored before under this key: the first row stands
            rows = await self._db.read(
                "SELECT * FROM messages WHERE idempotency_key = ?", (key,), action="store a message"
            )
        return StoredMessage.model_validate(_one(rows, "messages"))

    async def add_many(self, messages: Sequence[StoredMessage]) -> None:
        rows = [
            (
                m.chat_id,
                m.user_id,
                m.role,
                m.text,
                m.pipeline,
                m.trace_id,
                iso_utc(m.created_at),
                m.idempotency_key or new_idempotency_key(),
            )
            for m in messages
        ]

        def insert(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO messages (chat_id, user_id, role, text, pipeline, trace_id, "
                "created_at, idempotency_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (idempotency_key) DO NOTHING",
                rows,
            )

        if rows:
            await self._db.transaction(insert, action="store messages")

    async def recent(self, chat_id: int, limit: int = 20) -> list[StoredMessage]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            "SELECT * FROM messages WHERE chat_id = ? ORDER BY id DESC LIMIT ?",
            (chat_id, limit),
            action="read recent messages",
        )
        return [StoredMessage.model_validate(_row(row)) for row in reversed(rows)]

    async def count(self, chat_id: int) -> int:
        rows = await self._db.read(
            "SELECT COUNT(*) FROM messages WHERE chat_id = ?",
            (chat_id,),
            action="count messages",
        )
        return int(rows[0][0])

    async def id_of(self, idempotency_key: str) -> int | None:
        rows = await self._db.read(
            "SELECT id FROM messages WHERE idempotency_key = ?",
            (idempotency_key,),
            action="find a message",
        )
        return int(rows[0][0]) if rows else None

    async def clear(self, chat_id: int) -> int:
        rows = await self._db.write(
            "DELETE FROM messages WHERE chat_id = ? RETURNING id",
            (chat_id,),
            action="clear messages",
        )
        return len(rows)


class SQLiteSummaryRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def get(self, chat_id: int) -> ChatSummary | None:
        rows = await self._db.read(
            "SELECT * FROM chat_summaries WHERE chat_id = ?",
            (chat_id,),
            action="read a chat summary",
        )
        return ChatSummary.model_validate(_row(rows[0])) if rows else None

    async def save(self, summary: ChatSummary) -> ChatSummary:
        rows = await self._db.write(
            "INSERT INTO chat_summaries (chat_id, summary, message_count, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (chat_id) DO UPDATE SET "
            "summary = excluded.summary, message_count = excluded.message_count, "
            "updated_at = excluded.updated_at RETURNING *",
            (summary.chat_id, summary.summary, summary.message_count, iso_utc(utcnow())),
            action="save a chat summary",
        )
        return ChatSummary.model_validate(_one(rows, "chat_summaries"))

    async def clear(self, chat_id: int) -> None:
        await self._db.write(
            "DELETE FROM chat_summaries WHERE chat_id = ?",
            (chat_id,),
            action="clear a chat summary",
        )


class SQLiteFactRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def add_many(self, user_id: int, facts: Sequence[str]) -> list[UserFact]:
        unique = list(dict.fromkeys(fact.strip() for fact in facts if fact.strip()))
        if not unique:
            return []
        now = iso_utc(utcnow())
        placeholders = ", ".join("(?, ?, ?)" for _ in unique)
        params: list[Any] = []
        for fact in unique:
            params += [user_id, fact, now]
        rows = await self._db.write(
            f"INSERT INTO user_facts (user_id, fact, created_at) VALUES {placeholders} "
            "ON CONFLICT (user_id, fact) DO NOTHING RETURNING *",
            params,
            action="store facts",
        )
        stored = [UserFact.model_validate(_row(row)) for row in rows]
        return sorted(stored, key=lambda fact: fact.id or 0)

    async def list(self, user_id: int, limit: int = 50) -> builtins.list[UserFact]:
        if limit <= 0:
            return []
        rows = await self._db.read(
            "SELECT * FROM (SELECT * FROM user_facts WHERE user_id = ? ORDER BY id DESC LIMIT ?) "
            "ORDER BY id ASC",
            (user_id, limit),
            action="read facts",
        )
        return [UserFact.model_validate(_row(row)) for row in rows]

    async def clear(self, user_id: int) -> int:
        rows = await self._db.write(
            "DELETE FROM user_facts WHERE user_id = ? RETURNING id",
            (user_id,),
            action="clear facts",
        )
        return len(rows)


class SQLiteExerciseRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def create(self, exercise: Exercise) -> Exercise:
        rows = await self._db.write(
            "INSERT INTO exercises (chat_id, user_id, topic, question, answer, grade, feedback, "
            "created_at, graded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
            (
                exercise.chat_id,
                exercise.user_id,
                exercise.topic,
                exercise.question,
                exercise.answer,
                exercise.grade,
                exercise.feedback,
                iso_utc(exercise.created_at),
                iso_utc(exercise.graded_at) if exercise.graded_at else None,
            ),
            action="store an exercise",
        )
        return Exercise.model_validate(_one(rows, "exercises"))

    async def open_for_chat(self, chat_id: int) -> Exercise | None:
        rows = await self._db.read(
            "SELECT * FROM exercises WHERE chat_id = ? AND graded_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (chat_id,),
            action="read the open exercise",
        )
        return Exercise.model_validate(_row(rows[0])) if rows else None

    async def grade(
        self, exercise_id: int, *, answer: str, grade: float, feedback: str
    ) -> Exercise:
        rows = await self._db.write(
            "UPDATE exercises SET answer = ?, grade = ?, feedback = ?, graded_at = ? "
            "WHERE id = ? RETURNING *",
            (answer, grade, feedback, iso_utc(utcnow()), exercise_id),
            action="grade an exercise",
        )
        if not rows:
            raise StorageNotFound(f"no exercise with id {exercise_id}", code="not_found")
        return Exercise.model_validate(_row(rows[0]))

    async def list_for_user(self, user_id: int, limit: int = 20) -> list[Exercise]:
        rows = await self._db.read(
            "SELECT * FROM exercises WHERE user_id = ? ORDER BY id DESC LIMIT ?",
            (user_id, max(limit, 0)),
            action="read exercises",
        )
        return [Exercise.model_validate(_row(row)) for row in rows]


class SQLiteAgentModelConfigRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def get_all_active(self) -> list[AgentModelConfig]:
        rows = await self._db.read(
            "SELECT * FROM agent_model_config WHERE is_active = 1 ORDER BY agent_name",
            action="read model overrides",
        )
        return [AgentModelConfig.model_validate(_row(row)) for row in rows]

    async def get(self, agent_name: str) -> AgentModelConfig | None:
        rows = await self._db.read(
            "SELECT * FROM agent_model_config WHERE agent_name = ?",
            (agent_name,),
            action="read a model override",
        )
        return AgentModelConfig.model_validate(_row(rows[0])) if rows else None

    async def upsert(self, agent_name: str, model_id: str, set_by: str | None) -> AgentModelConfig:
        now = iso_utc(utcnow())
        rows = await self._db.write(
            "INSERT INTO agent_model_config (agent_name, model_id, is_active, set_by, "
            "created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (agent_name) DO UPDATE SET model_id = excluded.model_id, "
            "is_active = 1, set_by = excluded.set_by, updated_at = excluded.updated_at "
            "RETURNING *",
            (agent_name, model_id, set_by, now, now),
            action="save a model override",
        )
        return AgentModelConfig.model_validate(_one(rows, "agent_model_config"))

    async def deactivate(self, agent_name: str) -> bool:
        rows = await self._db.write(
            "UPDATE agent_model_config SET is_active = 0, updated_at = ? "
            "WHERE agent_name = ? AND is_active = 1 RETURNING id",
            (iso_utc(utcnow()), agent_name),
            action="reset a model override",
        )
        return bool(rows)


class SQLiteModelConfigHistoryRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def append(self, change: ModelConfigChange) -> ModelConfigChange:
        key = change.idempotency_key or new_idempotency_key()
        rows = await self._db.write(
            "INSERT INTO agent_model_config_history (agent_name, action, old_model_id, "
            "new_model_id, changed_by, changed_at, idempotency_key, reverts_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
            (
                change.agent_name,
                change.action,
                change.old_model_id,
                change.new_model_id,
                change.changed_by,
                iso_utc(change.changed_at),
                key,
                change.reverts_id,
            ),
            action="record a model override change",
        )
        if not rows:  # recorded before under this key: the first line stands
            rows = await self._db.read(
                "SELECT * FROM agent_model_config_history WHERE idempotency_key = ?",
                (key,),
                action="record a model override change",
            )
        return ModelConfigChange.model_validate(_one(rows, "agent_model_config_history"))

    async def list(
        self, agent_name: str | None = None, limit: int = 20
    ) -> builtins.list[ModelConfigChange]:
        if agent_name is None:
            rows = await self._db.read(
                "SELECT * FROM agent_model_config_history ORDER BY id DESC LIMIT ?",
                (max(limit, 0),),
                action="read the override history",
            )
        else:
            rows = await self._db.read(
                "SELECT * FROM agent_model_config_history WHERE agent_name = ? "
                "ORDER BY id DESC LIMIT ?",
                (agent_name, max(limit, 0)),
                action="read the override history",
            )
        return [ModelConfigChange.model_validate(_row(row)) for row in rows]

    async def latest_id(self) -> int:
        rows = await self._db.read(
            "SELECT MAX(id) FROM agent_model_config_history",
            action="read the configuration version",
        )
        value = rows[0][0] if rows else None
        return int(value) if value is not None else 0


def _catalog_row(row: sqlite3.Row) -> ModelCatalogRow:
    data = _row(row)
    offered = data.get("offered_to_users")
    data["offered_to_users"] = None if offered is None else bool(offered)
    return ModelCatalogRow.model_validate(data)


class SQLiteModelCatalogRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def list(self) -> builtins.list[ModelCatalogRow]:
        rows = await self._db.read(
            "SELECT * FROM model_catalog ORDER BY alias", action="read the model catalog"
        )
        return [_catalog_row(row) for row in rows]

    async def get(self, alias: str) -> ModelCatalogRow | None:
        rows = await self._db.read(
            "SELECT * FROM model_catalog WHERE alias = ?", (alias,), action="read a catalog entry"
        )
        return _catalog_row(rows[0]) if rows else None

    async def save(self, row: ModelCatalogRow) -> ModelCatalogRow:
        now = iso_utc(utcnow())
        offered = None if row.offered_to_users is None else int(row.offered_to_users)
        rows = await self._db.write(
            "INSERT INTO model_catalog (alias, spec, display_name, timeout, max_tokens, "
            "temperature, offered_to_users, updated_by, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alias) DO UPDATE SET "
            "spec = excluded.spec, display_name = excluded.display_name, "
            "timeout = excluded.timeout, max_tokens = excluded.max_tokens, "
            "temperature = excluded.temperature, offered_to_users = excluded.offered_to_users, "
            "updated_by = excluded.updated_by, updated_at = excluded.updated_at RETURNING *",
            (
                row.alias,
                row.spec,
                row.display_name,
                row.timeout,
                row.max_tokens,
                row.temperature,
                offered,
                row.updated_by,
                now,
                now,
            ),
            action="save a catalog entry",
        )
        if not rows:
            raise StorageError("SQLite returned no row for model_catalog")
        return _catalog_row(rows[0])

    async def delete(self, alias: str) -> bool:
        rows = await self._db.write(
            "DELETE FROM model_catalog WHERE alias = ? RETURNING id",
            (alias,),
            action="remove a catalog entry",
        )
        return bool(rows)
