"""`BudgetRepo` over InsForge: the `budget_limits` table (insforge/migrations/015)."""

from __future__ import annotations

import builtins

from bot.storage.budget_models import BudgetLimitRow
from bot.storage.insforge_client import InsForgeClient
from bot.storage.models import utcnow
from bot.storage.timeutil import iso_utc


class InsForgeBudgetRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def list(self) -> builtins.list[BudgetLimitRow]:
        rows = await self._client.select("budget_limits", None, order="scope.asc")
        return [BudgetLimitRow.model_validate(row) for row in rows]

    async def set(self, scope: str, usd: float | None, *, set_by: str) -> None:
        await self._client.upsert(
            "budget_limits",
            {"scope": scope, "usd": usd, "set_by": set_by, "updated_at": iso_utc(utcnow())},
            on_conflict="scope",
        )
