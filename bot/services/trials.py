"""Trials: a share of one agent's users runs on a candidate model, the rest on the incumbent.

    trials = Trials(storage.trials, ttl=settings.model_config_ttl)
    trial = await trials.start("coach", "fast", share=10, min_calls=100, by="tg:1 (@ann)")
    arm_of(trial, user_id)            # "candidate" for ~10 % of users, the same every time
    await trials.stop("coach", by="tg:1 (@ann)")

The arm is a hash of the trial's id and the user's id: sticky per user for the trial's life,
independent between trials, and the same on every replica without any shared state. The running
trials are read from storage at most once per `ttl` (MODEL_CONFIG_TTL) like the model
configuration, and at once after a local change or a change published by another replica
(Redis, `trial:<agent>` on the model configuration's channel).

The resolver (`bot.services.model_resolution`) asks `running()` for the agent's trial and puts
candidate-arm users on the candidate, after everything else that wins over a trial: a user's
`/prefer` (a local user is never put on a cloud candidate: they are left out of the trial) and
their own `/model` choice; a budget's downgrade comes later still, around the provider.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import time
from collections.abc import Callable, Mapping

from bot.services.stored_copy import StoredCopy
from bot.storage.repositories import StorageConflict, TrialRepo
from bot.storage.trial_models import TrialArm, TrialRow, TrialStatus

__all__ = ["TRIAL_TARGET", "TrialError", "Trials", "arm_of"]

log = logging.getLogger(__name__)

# Changes ride the model configuration's Redis channel as `trial:<agent>`.
TRIAL_TARGET = "trial:"
DEFAULT_SHARE = 10.0
_SCALE = float(1 << 64)


class TrialError(ValueError):
    """A trial that cannot start or end as asked; the message says why, kindly."""


def arm_of(trial: TrialRow, user_id: int) -> TrialArm:
    """The user's arm in the trial: `candidate` for `trial.share` percent of users."""
    digest = hashlib.blake2b(f"{trial.id}:{user_id}".encode(), digest_size=8).digest()
    return (
        "candidate" if int.from_bytes(digest, "big") < trial.share / 100 * _SCALE else "incumbent"
    )


class Trials:
    def __init__(
        self,
        repo: TrialRepo,
        *,
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo = repo
        self._running = StoredCopy[dict[str, TrialRow]](
            self._read_running, {}, what="the running trials", ttl=ttl, clock=clock
        )
        self._listeners: list[Callable[[str], object]] = []

    # --- reads ---

    async def running(self) -> Mapping[str, TrialRow]:
        """The running trials by agent, fresh within the TTL (the stale copy while storage
        fails)."""
        return await self._running.get()

    async def ended(self, limit: int = 3) -> list[TrialRow]:
        """The last trials that ended, newest first (read from storage each time: `/trial`)."""
        return await self._repo.ended(limit)

    def invalidate(self) -> None:
        self._running.invalidate()

    def add_change_listener(self, listener: Callable[[str], object]) -> None:
        """Called with the agent after every local start or end (to publish it on Redis)."""
        self._listeners.append(listener)

    async def _read_running(self) -> dict[str, TrialRow]:
        return {row.agent: row for row in await self._repo.running()}

    # --- changes ---

    async def start(
        self, agent: str, candidate: str, *, share: float, min_calls: int, by: str
    ) -> TrialRow:
        if not 0 < share < 100:
            raise TrialError("The share must be between 0 and 100 percent (not included).")
        if min_calls < 1:
            raise TrialError("min must be at least 1 call.")
        try:
            trial = await self._repo.start(agent, candidate, share, min_calls, started_by=by)
        except StorageConflict as exc:
            raise TrialError(
                f"{agent} already has a running trial: /trial stop {agent} first."
            ) from exc
        await self._changed(agent)
        return trial

    async def end(
        self, agent: str, status: TrialStatus, *, by: str, reason: str | None = None
    ) -> TrialRow | None:
        """End the agent's running trial; the trial, or None when none was running (or another
        replica ended it first)."""
        self.invalidate()
        trial = (await self.running()).get(agent)
        if trial is None:
            return None
        ended = await self._repo.end(trial.id, status, by=by, reason=reason)
        await self._changed(agent)
        return trial if ended else None

    async def end_trial(
        self, trial: TrialRow, status: TrialStatus, *, by: str, reason: str | None = None
    ) -> bool:
        """End this very trial if it still runs (the guardrails: not a newer one of the agent);
        whether this call ended it."""
        ended = await self._repo.end(trial.id, status, by=by, reason=reason)
        await self._changed(trial.agent)
        return ended

    async def _changed(self, agent: str) -> None:
        self.invalidate()
        for listener in self._listeners:
            try:
                sent = listener(f"{TRIAL_TARGET}{agent}")
                if inspect.isawaitable(sent):
                    await sent
            except Exception as exc:
                log.warning("could not publish the trial change of %s: %s", agent, exc)
