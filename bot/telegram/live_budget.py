"""A budget for the bot's live updates (drafts, edits, placeholders), shared by every chat.

    budget = LiveUpdateBudget(per_second=25)
    if budget.try_take():
        await bot.send_message_draft(...)   # else skip this update; the final reply still goes out

Live updates are cosmetic: the final message carries the reply. Each one still costs a Bot API
call and CPU, and their number grows with the load (a reply that takes longer gets more
drafts), so under load they fed on themselves: in the load benchmark, a burst that slowed
replies brought more drafts per reply, which slowed replies further. Telegram also caps a bot
at about 30 messages per second overall. A token bucket keeps live updates under a fixed rate
for the whole process: at normal load every update goes out, under load the chats share what
the budget allows, and the final replies are never counted or delayed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["LiveUpdateBudget"]


class LiveUpdateBudget:
    """A token bucket: `per_second` updates on average, bursts of up to `burst`."""

    def __init__(
        self,
        per_second: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.per_second = per_second
        self.burst = burst if burst is not None else max(1.0, per_second)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()
        self.granted = 0
        self.refused = 0

    def try_take(self) -> bool:
        """Spend one update if the budget allows it now; never waits."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.granted += 1
            return True
        self.refused += 1
        return False
