"""`AccessRepo` over InsForge: the `access_list` table (insforge/migrations/013_access.sql).

Each decision is one conditional request, so two replicas (or two admins) racing on the same
stranger settle in the database: one `create` wins, one `decide_pending` wins, one notice is
claimed.
"""

from __future__ import annotations

import builtins
from typing import Any

from bot.storage.access_models import AccessEntry, AccessStatus
from bot.storage.insforge_client import InsForgeClient, eq, is_
from bot.storage.models import utcnow
from bot.storage.repositories import StorageError
from bot.storage.timeutil import iso_utc

TABLE = "access_list"


class InsForgeAccessRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def get(self, subject_id: int) -> AccessEntry | None:
        rows = await self._client.select(TABLE, {"subject_id": eq(subject_id)}, limit=1)
        return AccessEntry.model_validate(rows[0]) if rows else None

    async def list(self) -> builtins.list[AccessEntry]:
        rows = await self._client.select(TABLE, None, order="updated_at.desc")
        return [AccessEntry.model_validate(row) for row in rows]

    async def create(self, entry: AccessEntry) -> AccessEntry | None:
        rows = await self._client.upsert(
            TABLE,
            {
                "subject_id": entry.subject_id,
                "status": entry.status,
                "label": entry.label,
                "notified": entry.notified,
                "waiting_update": entry.waiting_update,
                "admin_messages": entry.admin_messages,
                "decided_by": entry.decided_by,
            },
            on_conflict="subject_id",
            ignore_duplicates=True,
        )
        return AccessEntry.model_validate(rows[0]) if rows else None

    async def set_status(
        self, subject_id: int, status: AccessStatus, *, decided_by: str, label: str | None = None
    ) -> AccessEntry:
        values: dict[str, Any] = {
            "subject_id": subject_id,
            "status": status,
            "notified": False,
            "decided_by": decided_by,
            "updated_at": iso_utc(utcnow()),
        }
        if label is not None:
            values["label"] = label
        rows = await self._client.upsert(TABLE, values, on_conflict="subject_id")
        if not rows:
            raise StorageError("InsForge returned no row for access_list")
        return AccessEntry.model_validate(rows[0])

    async def decide_pending(
        self, subject_id: int, status: AccessStatus, *, decided_by: str
    ) -> AccessEntry | None:
        rows = await self._client.update(
            TABLE,
            {
                "status": status,
                "notified": False,
                "decided_by": decided_by,
                "updated_at": iso_utc(utcnow()),
            },
            {"subject_id": eq(subject_id), "status": eq("pending")},
        )
        return AccessEntry.model_validate(rows[0]) if rows else None

    async def update(
        self,
        subject_id: int,
        *,
        admin_messages: str | None = None,
        notified: bool | None = None,
        clear_waiting: bool = False,
    ) -> None:
        values: dict[str, Any] = {}
        if admin_messages is not None:
            values["admin_messages"] = admin_messages
        if notified is not None:
            values["notified"] = notified
        if clear_waiting:
            values["waiting_update"] = None
        if not values:
            return
        values["updated_at"] = iso_utc(utcnow())
        await self._client.update(TABLE, values, {"subject_id": eq(subject_id)})

    async def claim_notice(self, subject_id: int) -> bool:
        rows = await self._client.update(
            TABLE, {"notified": True}, {"subject_id": eq(subject_id), "notified": is_(False)}
        )
        return bool(rows)
