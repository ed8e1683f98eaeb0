"""What of a trial the guardrails and `/trial` read: a bounded window of each arm's raw calls.

    window = await read_window(storage.ledger, trial.id, until=cutoff)   # two bounded queries
    ArmData.of(window.candidate), ArmData.of(window.incumbent)

The candidate's last `CANDIDATE_WINDOW` calls up to `until`, and the incumbent's calls over the
same time (since the oldest of those, when the window is full) up to `INCUMBENT_WINDOW`: a
share of 10 % makes nine incumbent calls for each candidate call. Both arms are compared over
the same hours, so a busy evening does not count against one arm only; and the cost of a look
stays bounded however long the trial runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.storage.ledger_models import TrialCall
from bot.storage.repositories import LedgerRepo

CANDIDATE_WINDOW = 2000
INCUMBENT_WINDOW = 8000


@dataclass(frozen=True, slots=True)
class Window:
    candidate: list[TrialCall]
    incumbent: list[TrialCall]

    @property
    def full(self) -> bool:
        """The candidate made more calls than the window holds (the figures are the latest)."""
        return len(self.candidate) >= CANDIDATE_WINDOW


async def read_window(
    ledger: LedgerRepo, trial_id: int, *, until: datetime | None = None
) -> Window:
    candidate = await ledger.trial_calls(trial_id, "candidate", limit=CANDIDATE_WINDOW, until=until)
    since = candidate[-1].at if len(candidate) >= CANDIDATE_WINDOW else None
    incumbent = await ledger.trial_calls(
        trial_id, "incumbent", limit=INCUMBENT_WINDOW, since=since, until=until
    )
    return Window(candidate, incumbent)
