"""Trials (`/trial`), as storage keeps them (`TrialRepo`): one row per trial, running or ended.

A running trial sends `share` percent of its agent's users (a hash of user and trial id) to
`candidate`; the ledger marks each call it touches with `trial_id` and `trial_arm`. At most one
trial per agent runs (a unique index over the running rows, both backends).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from bot.storage.models import Row, utcnow

TrialStatus = Literal["running", "stopped", "promoted", "guardrail"]
TrialArm = Literal["incumbent", "candidate"]


class TrialRow(Row):
    id: int
    agent: str
    candidate: str
    # Percent of the agent's users on the candidate (0 < share < 100).
    share: float
    # Candidate calls before the guardrails may stop the trial.
    min_calls: int
    started_by: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    status: TrialStatus = "running"
    ended_at: datetime | None = None
    ended_by: str | None = None
    reason: str | None = None
