"""`ReplayKeeper`: each agent's newest real inputs, written to the database off the reply's path.

    keeper = ReplayKeeper(storage.replay, keep=settings.replay_keep)
    await keeper.start()
    keeper.keep_captured(call)   # from the capture wrapper: an append, no I/O, no await
    keeper.forget_chat(chat_id)  # /forget: what has not been written yet goes too
    await keeper.close(timeout)  # the last rows, at shutdown

Memory holds at most `keep` rows per agent (a deque each): under load most inputs are superseded
before they are written, so a busy bot writes at most `keep` rows per agent per interval and the
database never holds much more than REPLAY_KEEP per agent (pruned after every write, so every
replica's rows count towards one bound). It writes every `FLUSH_INTERVAL` (10 s) at most: two
requests (the rows, the prune) per interval and replica, not per turn.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Callable

from bot.observatory.capture import CapturedInput
from bot.observatory.writer import stop_then_flush
from bot.storage.replay_models import ReplayInput
from bot.storage.repositories import ReplayRepo, StorageError

log = logging.getLogger(__name__)

# Seconds between writes: a write and a prune (two InsForge requests) at most this often per
# replica, however busy the bot; what a crash loses is at most this long of samples.
FLUSH_INTERVAL = 10.0


# What memory holds: a call as captured (built into a row when written), or a ready row.
Pending = CapturedInput | ReplayInput


def _who(item: Pending) -> tuple[int | None, int | None]:
    """(chat, user) of a pending row."""
    if isinstance(item, CapturedInput):
        return item.turn.chat_id, item.turn.user_id
    return item.chat_id, item.user_id


class ReplayKeeper:
    def __init__(
        self, repo: ReplayRepo, *, keep: int = 50, flush_interval: float = FLUSH_INTERVAL
    ) -> None:
        self._repo = repo
        self.keep_per_agent = keep
        self.flush_interval = flush_interval
        self._pending: dict[str, deque[Pending]] = {}
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(6)
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._failing = False

    @property
    def pending(self) -> int:
        return sum(len(rows) for rows in self._pending.values())

    def keep_captured(self, call: CapturedInput) -> None:
        """A call the capture saw (by reference; its row is built only if it is written)."""
        rows = self._pending.get(call.agent)
        if rows is None:
            rows = self._pending[call.agent] = deque(maxlen=self.keep_per_agent)
        rows.append(call)

    def keep(self, item: ReplayInput) -> None:
        """A row made elsewhere (an import, a test)."""
        rows = self._pending.get(item.agent)
        if rows is None:
            rows = self._pending[item.agent] = deque(maxlen=self.keep_per_agent)
        rows.append(item)

    def _row(self, item: Pending) -> ReplayInput:
        row = item.to_input() if isinstance(item, CapturedInput) else item
        if not row.input_id:
            row.input_id = f"{self._prefix}-{next(self._ids)}"
        return row

    async def forget_chat(self, chat_id: int) -> None:
        """Drop the chat's pending rows and wait out a write in flight, so that the database
        delete that follows (`ReplayRepo.clear_chat`) is the last word."""
        await self._drop(lambda item: _who(item)[0] == chat_id)

    async def forget_user(self, user_id: int) -> None:
        await self._drop(lambda item: user_id in _who(item))

    async def _drop(self, match: Callable[[Pending], bool]) -> None:
        for agent, rows in self._pending.items():
            kept = [item for item in rows if not match(item)]
            if len(kept) != len(rows):
                self._pending[agent] = deque(kept, maxlen=self.keep_per_agent)
        async with self._flushing:
            pass

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="replay-keeper")

    async def flush(self) -> int:
        """Write what is pending, then prune to `keep` per agent; rows written (0 when the
        database failed: they stay pending, still bounded per agent)."""
        async with self._flushing:
            pending = [item for rows in self._pending.values() for item in rows]
            if not pending:
                return 0
            self._pending = {}
            batch = [self._row(item) for item in pending]
            try:
                await self._repo.add_many(batch)
                await self._repo.prune(self.keep_per_agent)
            except StorageError as exc:
                for item in reversed(batch):  # newer rows taken meanwhile stay the newest
                    rows = self._pending.setdefault(item.agent, deque(maxlen=self.keep_per_agent))
                    if len(rows) < self.keep_per_agent:
                        rows.appendleft(item)
                if not self._failing:
                    self._failing = True
                    log.warning("replay inputs could not be written (%s); kept in memory", exc)
                return 0
            self._failing = False
            return len(batch)

    async def close(self, timeout: float = 5.0) -> None:
        task, self._task = self._task, None
        await stop_then_flush(task, self.flush, timeout, "replay inputs")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._pending:
                await self.flush()
