"""The call ledger as the budgets read it: what a scope spent since its period began.

    budgets.seeder = LedgerSeeder(storage.ledger)

A budget counter this process has not seen yet (after a restart, or a limit set in the middle of
a day) starts from the ledger's figure instead of zero. One read per new counter per period.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.services.budgets import ScopeKey
from bot.storage.models import utcnow
from bot.storage.repositories import LedgerRepo


class LedgerSeeder:
    def __init__(self, ledger: LedgerRepo) -> None:
        self.ledger = ledger

    async def __call__(
        self, keys: Sequence[ScopeKey], starts: dict[str, datetime]
    ) -> dict[str, float]:
        spent: dict[str, float] = {}
        now = utcnow()
        for key in keys:
            kind, _, rest = key.key.partition(":")
            since = starts[key.period]
            if kind == "user":
                user_id = int(rest.split(":", 1)[0])
                spent[key.key] = (await self.ledger.user_cost(user_id, since)).cost_usd
            elif kind == "agent":
                agent = rest.split(":", 1)[0]
                rows = await self.ledger.stats(since, now, agent=agent)
                spent[key.key] = sum(r.cost_usd for r in rows if r.model is None)
            elif kind == "bot":
                rows = await self.ledger.stats(since, now)
                spent[key.key] = sum(r.cost_usd for r in rows if r.model is None)
        return spent
