"""`BudgetRepo` over SQLite: the `budget_limits` table (schema step 11)."""

from __future__ import annotations

import builtins

from bot.storage.budget_models import BudgetLimitRow
from bot.storage.models import utcnow
from bot.storage.sqlite.database import SQLiteDatabase
from bot.storage.timeutil import iso_utc


class SQLiteBudgetRepo:
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def list(self) -> builtins.list[BudgetLimitRow]:
        rows = await self._db.read(
            "SELECT scope, usd, set_by, updated_at FROM budget_limits ORDER BY scope",
            action="read the budget limits",
        )
        return [
            BudgetLimitRow.model_validate(dict(zip(row.keys(), row, strict=True))) for row in rows
        ]

    async def set(self, scope: str, usd: float | None, *, set_by: str) -> None:
        await self._db.write(
            "INSERT INTO budget_limits (scope, usd, set_by, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET usd = excluded.usd, set_by = excluded.set_by, "
            "updated_at = excluded.updated_at",
            (scope, usd, set_by, iso_utc(utcnow())),
            action="set a budget limit",
        )
