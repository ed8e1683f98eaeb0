"""Budget limits set at runtime (`/budget`), as storage keeps them (`BudgetRepo`).

A row per scope an admin set: `bot:day`, `user:day`, `user:month` (every user's default),
`user:<id>:day`, `user:<id>:month` (one user's own), `agent:<name>:day`. `usd` None means the
admin turned that limit off (over the environment's value); no row means the environment's
(BUDGET_DAILY_USD, BUDGET_USER_DAILY_USD, BUDGET_USER_MONTHLY_USD, BUDGET_AGENT_DAILY_USD).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from bot.storage.models import Row, utcnow


class BudgetLimitRow(Row):
    scope: str
    usd: float | None = None
    set_by: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)
