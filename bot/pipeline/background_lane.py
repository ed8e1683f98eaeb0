"""Background steps yield to replies: while the event loop is behind, they wait to start.

A background step (the summarizer) runs after its reply has gone out, so nobody waits for it,
but it takes the same CPU as the turns still waiting for theirs: a model call, its budget and
ledger rows, its spans, a write. In a burst (`e2e_load --production --burst 100:20`) that work
is what tips a bot near its CPU's limit into seconds of delay for every reply (decision 0028).
So a background step first asks the lane: while replies are being worked on and the loop lags
by more than `lag_limit` (it runs callbacks that much later than they were due) or the process
uses more than `busy_share` of a core, the step waits, at most `max_wait` seconds, then starts
anyway (so background work is late, never lost or starved).
Waiting steps start in the order they came, a few per tick, so a backlog released at once does
not become a burst of its own. A step given a key (`Step(latest_only=True)`: the summarizer, per
chat) is dropped when a later step with the same key comes while it still waits: the later one
folds in everything the earlier would have (the chat's summary), and the user pays for one
model call, not two.

The lag and the load are measured by one timer per `tick` (its overshoot is the lag, the
process's CPU time over it the load), running while background steps keep coming and stopped
`idle_ticks` quiet ticks after the last one waited: at a steady 30 msg/s that is ~20 cheap
wake-ups a second (no cost measurable, decision 0028); an idle bot has no timer at all.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)

LAG_LIMIT = 0.02  # seconds late a 50 ms timer fires before background work waits
BUSY_SHARE = 0.6  # of one core, this process's CPU use (smoothed) before background work waits
TICK = 0.05
MAX_WAIT = 30.0
RELEASE_PER_TICK = 8


class BackgroundLane:
    def __init__(
        self,
        *,
        lag_limit: float = LAG_LIMIT,
        busy_share: float = BUSY_SHARE,
        tick: float = TICK,
        max_wait: float = MAX_WAIT,
        release_per_tick: int = RELEASE_PER_TICK,
        idle_ticks: int = 3,
        foreground: Callable[[], bool] | None = None,
    ) -> None:
        self.lag_limit = lag_limit
        self.busy_share = busy_share
        self.tick = tick
        self.max_wait = max_wait
        self.release_per_tick = release_per_tick
        self.idle_ticks = idle_ticks  # ticks with nothing waiting before the watcher stops
        # Whether any reply is being worked on (the runner's runs in flight): with none, there is
        # nothing to yield to, whatever the CPU is doing (a test, a console session).
        self.foreground = foreground
        self.lag = 0.0  # the last tick's overshoot, seconds (0 while nothing is measured)
        self.load = 0.0  # this process's CPU use, share of one core, smoothed over ticks
        self.deferred = 0  # steps that waited
        self.overdue = 0  # steps that waited max_wait and started with the loop still behind
        self.superseded = 0  # steps dropped for a later one with the same key
        self._waiting: collections.deque[asyncio.Future[bool]] = collections.deque()
        self._keyed: dict[Hashable, asyncio.Future[bool]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._open = False  # shutting down: nothing waits any more

    @property
    def busy(self) -> bool:
        if self.foreground is not None and not self.foreground():
            return False
        return self.lag > self.lag_limit or self.load > self.busy_share

    async def admit(self, key: Hashable | None = None) -> bool:
        """Wait until a background step may start: True then, or False when a later step with
        the same `key` came while this one waited (skip it)."""
        if self._open:
            return True
        loop = asyncio.get_running_loop()
        while self._waiting and self._waiting[0].done():
            self._waiting.popleft()
        measuring = self._watcher is not None and not self._watcher.done()
        if not measuring:
            self._watcher = loop.create_task(self._watch(), name="background-lane")
        # Nobody ahead and the loop not known to be behind: start now. (The first step after a
        # quiet spell starts unmeasured; the watcher it started judges the ones after it.)
        if not self._waiting and (not measuring or not self.busy):
            return True
        self.deferred += 1
        turn: asyncio.Future[bool] = loop.create_future()
        self._waiting.append(turn)
        if key is not None:
            earlier = self._keyed.get(key)
            if earlier is not None and not earlier.done():
                earlier.set_result(False)
                self.superseded += 1
            self._keyed[key] = turn
        try:
            async with asyncio.timeout(self.max_wait):
                return await turn
        except TimeoutError:
            self.overdue += 1
            if self.overdue == 1 or self.overdue % 100 == 0:
                log.warning(
                    "background steps waited %.0f s for the event loop to catch up and started "
                    "anyway (%d so far): the bot is short of CPU for its load",
                    self.max_wait,
                    self.overdue,
                )
            return True
        finally:
            # A turn that timed out, was cancelled or superseded stays in the queue, done:
            # `_release` and the next `admit` pass over it (removing it here would scan the queue).
            if key is not None and self._keyed.get(key) is turn:
                del self._keyed[key]

    def open(self) -> None:
        """Shutting down: every waiting step starts now, and later ones do not wait."""
        self._open = True
        self._release(len(self._waiting))
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = 0
        wall, cpu = loop.time(), time.process_time()
        while True:
            due = wall + self.tick
            await asyncio.sleep(self.tick)
            now, used = loop.time(), time.process_time()
            self.lag = max(0.0, now - due)
            share = (used - cpu) / max(now - wall, 1e-6)
            self.load = share if self.load == 0.0 else 0.7 * self.load + 0.3 * share
            wall, cpu = now, used
            if self._waiting:
                quiet = 0
                if not self.busy:
                    self._release(self.release_per_tick)
                continue
            quiet += 1
            if quiet >= self.idle_ticks:  # nothing waited for a while: stop measuring
                self.lag = self.load = 0.0
                self._watcher = None
                return

    def _release(self, n: int) -> None:
        while n > 0 and self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(True)
                n -= 1
