"""Rows as the rest of the bot sees them, whatever the backend (SQLite or InsForge).

Timestamps are timezone-aware UTC datetimes. Ids of Telegram users and chats are Telegram's own
integers (64-bit). Storage knows no Telegram and no LLM: these are plain records.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


class Row(BaseModel):
    model_config = ConfigDict(frozen=False, extra="ignore")


class User(Row):
    id: int  # Telegram user id
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    first_seen: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)


ModelPreference = Literal["any", "local", "online"]


class UserSettings(Row):
    user_id: int
    # A model spec (`provider:model`) the user chose, or None for the bot's defaults.
    default_model: str | None = None
    # `local`: every agent serving this user runs on a local model; `online`: never on one.
    model_preference: ModelPreference = "any"
    # The user's own key: the provider it is for and the key encrypted with BOT_SECRET_KEY.
    # The plain key never lives in a row; `bot.storage.crypto` encrypts and decrypts it.
    api_key_provider: str | None = None
    api_key_encrypted: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


MessageRole = Literal["user", "assistant"]


class StoredMessage(Row):
    id: int | None = None
    chat_id: int
    user_id: int | None = None
    role: MessageRole
    text: str
    pipeline: str | None = None
    trace_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # Made once per message object: storing the same object again (a retry after an error whose
    # outcome was unknown) finds the first row instead of adding a second. None on rows stored
    # before keys existed.
    idempotency_key: str | None = Field(default_factory=new_idempotency_key)


class ChatSummary(Row):
    chat_id: int
    summary: str
    # How many messages of the chat the summary covers, so the summarizer knows what is new.
    message_count: int = 0
    updated_at: datetime = Field(default_factory=utcnow)


class UserFact(Row):
    id: int | None = None
    user_id: int
    fact: str
    created_at: datetime = Field(default_factory=utcnow)


class Exercise(Row):
    id: int | None = None
    chat_id: int
    user_id: int
    topic: str
    question: str
    # Filled when the user answers and the trainer grades it.
    answer: str | None = None
    grade: float | None = None  # 0..1
    feedback: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    graded_at: datetime | None = None


class AgentModelConfig(Row):
    """An admin's assignment: target `agent_name` runs on `model_id` while `is_active`.

    The target is an agent (`strategist`), `pipeline:<name>`, `role:<role>` or `default`; the
    model is what the admin chose: a catalog alias, a `provider:model` spec or a bare
    OpenRouter id (`bot.services.model_catalog.Catalog.interpret` tells them apart).
    """

    id: int | None = None
    agent_name: str
    model_id: str
    is_active: bool = True
    set_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


# set/reset/rollback change an assignment; add/edit/remove change a catalog entry.
ModelConfigAction = Literal["set", "reset", "rollback", "add", "edit", "remove"]


class ModelConfigChange(Row):
    """One line of the model configuration history: who changed what from what to what, when.

    `agent_name` is the target (an agent, `pipeline:<name>`, `role:<role>`, `default`) or, for
    catalog changes, `catalog:<alias>` (old/new then describe the entry). The newest line's id is
    the configuration version. A rollback line names the line it undid in `reverts_id`.
    """

    id: int | None = None
    agent_name: str
    action: ModelConfigAction
    old_model_id: str | None = None
    new_model_id: str | None = None
    changed_by: str | None = None
    changed_at: datetime = Field(default_factory=utcnow)
    # As for StoredMessage: appending the same change again records it once.
    idempotency_key: str | None = Field(default_factory=new_idempotency_key)
    reverts_id: int | None = None

    @property
    def target(self) -> str:
        return self.agent_name


class ModelCatalogRow(Row):
    """A catalog entry added or edited at runtime (`/catalog add|edit`).

    Entries named in the environment exist without a row; a row with their alias holds an
    admin's edits of them. Empty parameters mean the agent's own; `offered_to_users` None means
    the default (environment entries: USER_MODELS; added ones: not offered).
    """

    id: int | None = None
    alias: str
    spec: str
    display_name: str | None = None
    timeout: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    offered_to_users: bool | None = None
    updated_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
