"""Who may use the bot, as storage keeps it (`AccessRepo` in `repositories.py`).

One row per subject an admin decided on or the bot answered: a Telegram user (positive id) or a
group chat (negative id). The environment's lists (ALLOWED_USER_IDS, ALLOWED_CHAT_IDS, ADMIN_IDS)
need no row; a row records what happened at runtime: an admin's allow or block, a stranger waiting
for approval (with the message they are waiting on), or a stranger refused once under the
allowlist (so the refusal is sent once, on any replica).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bot.storage.models import Row, utcnow

AccessStatus = Literal["allowed", "pending", "blocked", "refused"]


class AccessEntry(Row):
    subject_id: int  # a user id (> 0) or a group chat id (< 0)
    status: AccessStatus
    # Who they are, as last seen (for /users); never used to decide anything.
    label: str | None = None
    # Whether the one notice of this status was sent (blocked, refused, waiting).
    notified: bool = False
    # pending: the update (Bot API JSON) they wait on, answered once approved.
    waiting_update: str | None = None
    # pending: the admins' approval messages, "chat_id:message_id" comma-separated, edited
    # when one admin decides.
    admin_messages: str | None = None
    decided_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
