"""The guardrails at work: each running trial checked in the background, stopped when it fails.

    guard = TrialGuard(trials, storage.ledger)
    for stop in await guard.check():      # every TRIAL_CHECK_SECONDS, off the messages' path
        send stop.text to every admin

A check costs one count of the candidate's calls per running trial. Once the count reaches the
next look (k * min calls), the look reads its window: the calls up to the moment of the
candidate's (k * min)-th call, so a look is the same whoever makes it and whenever (another
replica, after a restart) and looking again adds no chance of a false stop. A look waits
`settle` seconds after that call, for every replica to have written the calls made before it.
A trial that fails a guardrail is ended as `guardrail` with the reason; the end only matches a
running trial, so with several replicas exactly one of them ends it and tells the admins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.services.trials import Trials
from bot.storage.repositories import LedgerRepo, StorageError
from bot.storage.trial_models import TrialRow
from bot.trials.figures import figure_rows, side_by_side
from bot.trials.guardrails import ArmData, Breach, decide, look_number
from bot.trials.window import read_window

log = logging.getLogger(__name__)

GUARD_BY = "guardrails"
# Seconds a look waits after its last call: the ledger writes every 0.5 s, but on InsForge a
# turn's calls are written with its reply (bot/storage/turn_models), a turn's length later.
SETTLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class GuardStop:
    """A trial the guardrails ended, and what the admins are told."""

    trial: TrialRow
    breaches: list[Breach]
    text: str


class TrialGuard:
    def __init__(
        self,
        trials: Trials,
        ledger: LedgerRepo,
        *,
        settle: float = SETTLE_SECONDS,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.trials = trials
        self.ledger = ledger
        self.settle = timedelta(seconds=settle)
        self._now = now
        # The last look made of each trial on this replica (a look is made once).
        self._looked: dict[int, int] = {}

    async def check(self) -> list[GuardStop]:
        """Look at every running trial that reached a new look; the trials this replica ended."""
        stops: list[GuardStop] = []
        for trial in list((await self.trials.running()).values()):
            try:
                stop = await self.look(trial)
            except StorageError as exc:
                log.warning("trial %s guardrails: the ledger could not be read (%s)", trial.id, exc)
                continue
            if stop is not None:
                stops.append(stop)
        return stops

    async def look(self, trial: TrialRow) -> GuardStop | None:
        calls = await self.ledger.trial_call_count(trial.id, "candidate")
        look = look_number(calls, trial.min_calls)
        if look < 1 or self._looked.get(trial.id, 0) >= look:
            return None
        cutoff = await self.ledger.trial_nth_call(trial.id, "candidate", look * trial.min_calls)
        if cutoff is None or cutoff > self._now() - self.settle:
            return None  # the look's last calls may not all be written yet: next check
        window = await read_window(self.ledger, trial.id, until=cutoff)
        candidate, incumbent = ArmData.of(window.candidate), ArmData.of(window.incumbent)
        self._looked[trial.id] = look
        breaches = decide(look, candidate, incumbent)
        log.info(
            "trial %s (%s) look %d: candidate %d calls, incumbent %d; %s",
            trial.id,
            trial.agent,
            look,
            candidate.calls,
            incumbent.calls,
            ", ".join(b.guardrail for b in breaches) or "within the guardrails",
        )
        if not breaches:
            return None
        reason = "guardrail: " + "; ".join(
            f"{b.guardrail} (p={b.p_value:.2g} <= {b.alpha:.2g}, look {b.look})" for b in breaches
        )
        if not await self.trials.end_trial(trial, "guardrail", by=GUARD_BY, reason=reason):
            return None  # stopped meanwhile, or another replica ended it first
        log.warning("trial %s of %s stopped by its guardrails: %s", trial.id, trial.agent, reason)
        return GuardStop(trial, breaches, stop_text(trial, breaches, candidate, incumbent))


def stop_text(
    trial: TrialRow, breaches: list[Breach], candidate: ArmData, incumbent: ArmData
) -> str:
    names = ", ".join(b.guardrail for b in breaches)
    lines = [
        f"Trial {trial.id} of {trial.agent} stopped by its guardrail: {names}.",
        f"The candidate {trial.candidate} is worse than the incumbent beyond chance; every user "
        f"is back on {trial.agent}'s model.",
        "",
        *side_by_side(figure_rows(candidate, incumbent)),
        "",
    ]
    lines += [
        f"{b.guardrail}: one-sided p = {b.p_value:.2g}, level at look {b.look} = {b.alpha:.2g}"
        for b in breaches
    ]
    lines.append(f"/trial {trial.agent} {trial.candidate} starts it again.")
    return "\n".join(lines)
