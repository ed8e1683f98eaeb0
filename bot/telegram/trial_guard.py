"""Runs the trials' guardrails (`bot.trials.guard`) and tells every admin when one stops a trial.

Started and stopped with the dispatcher (`BackgroundLoop`), like the change reports: every
TRIAL_CHECK_SECONDS it asks the guard to look at the running trials, off the messages' path. A
trial is ended by one replica only (the end matches a running trial), and that replica sends
the message.
"""

from __future__ import annotations

import html
import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from bot.telegram.background import BackgroundLoop
from bot.trials.guard import TrialGuard

log = logging.getLogger(__name__)


class TrialGuardSender(BackgroundLoop):
    name = "trial guardrails"

    def __init__(self, guard: TrialGuard, admin_ids: list[int], every: float) -> None:
        super().__init__()
        self.guard = guard
        self.admin_ids = admin_ids
        self.every = every

    @property
    def interval(self) -> float:
        return self.every

    async def round(self, bot: Bot) -> int:
        """One round of checks; how many trials it stopped."""
        stops = await self.guard.check()
        for stop in stops:
            text = f"<pre>{html.escape(stop.text, quote=False)}</pre>"
            for admin in self.admin_ids:
                try:
                    await bot.send_message(admin, text, parse_mode="HTML")
                except TelegramAPIError as exc:
                    log.warning("trial %s: admin %s not told: %s", stop.trial.id, admin, exc)
        return len(stops)
