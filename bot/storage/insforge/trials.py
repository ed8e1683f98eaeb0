"""`TrialRepo` over InsForge: the `trials` table (insforge/migrations/014)."""

from __future__ import annotations

import builtins

from bot.storage.insforge_client import InsForgeClient
from bot.storage.models import utcnow
from bot.storage.timeutil import iso_utc
from bot.storage.trial_models import TrialRow, TrialStatus


class InsForgeTrialRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def running(self) -> builtins.list[TrialRow]:
        rows = await self._client.select("trials", {"status": "eq.running"}, order="agent.asc")
        return [TrialRow.model_validate(row) for row in rows]

    async def get(self, trial_id: int) -> TrialRow | None:
        rows = await self._client.select("trials", {"id": f"eq.{trial_id}"})
        return TrialRow.model_validate(rows[0]) if rows else None

    async def ended(self, limit: int) -> builtins.list[TrialRow]:
        rows = await self._client.select(
            "trials", {"status": "neq.running"}, order="ended_at.desc,id.desc", limit=limit
        )
        return [TrialRow.model_validate(row) for row in rows]

    async def start(
        self, agent: str, candidate: str, share: float, min_calls: int, *, started_by: str
    ) -> TrialRow:
        rows = await self._client.insert(
            "trials",
            {
                "agent": agent,
                "candidate": candidate,
                "share": share,
                "min_calls": min_calls,
                "started_by": started_by,
                "started_at": iso_utc(utcnow()),
            },
        )
        return TrialRow.model_validate(rows[0])

    async def end(
        self, trial_id: int, status: TrialStatus, *, by: str, reason: str | None = None
    ) -> bool:
        # The status filter makes the end happen once: only the first of two replicas changes it.
        rows = await self._client.update(
            "trials",
            {"status": status, "ended_at": iso_utc(utcnow()), "ended_by": by, "reason": reason},
            {"id": f"eq.{trial_id}", "status": "eq.running"},
        )
        return bool(rows)
