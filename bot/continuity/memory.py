"""`Continuity` and its per-turn view `TurnMemory`; see the package docstring."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from bot.storage.models import StoredMessage
from bot.storage.repositories import MessageRepo, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
W = TypeVar("W")
# A remembered read: its kind (`history`, `summary`, `facts`, `settings`...) and its key.
Slot = tuple[str, Hashable]

MAX_REMEMBERED = 5000  # chats and users whose last read is kept
MAX_PENDING = 10_000  # messages queued while the database is down
RETRY_AFTER = 2.0  # seconds between attempts while it is down
BATCH = 200  # messages per batched insert
HISTORY_KEEP = 50  # messages per chat kept in memory


class Continuity:
    def __init__(
        self,
        messages: MessageRepo,
        *,
        max_remembered: int = MAX_REMEMBERED,
        max_pending: int = MAX_PENDING,
        retry_after: float = RETRY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.messages = messages
        self.max_remembered = max_remembered
        self.max_pending = max_pending
        self.retry_after = retry_after
        self._clock = clock
        self._seen: OrderedDict[tuple[str, Hashable], Any] = OrderedDict()
        self._pending: deque[StoredMessage] = deque()
        self._down_since: float | None = None
        self._last_failure = float("-inf")
        self._noted: set[int] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()  # one writer of the queue at a time, or rows go twice
        self.written_late = 0  # messages written by the flusher (for tests and metrics)

    # ------------------------------------------------------------------ state

    @property
    def down(self) -> bool:
        """A read or write failed less than `retry_after` seconds ago."""
        return self._clock() - self._last_failure < self.retry_after

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _failed(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            log.warning(
                "database unavailable (%s): answering from memory, writing messages later", exc
            )
        self._last_failure = self._clock()

    def _recovered(self) -> None:
        if self._down_since is not None and not self._pending:
            log.info(
                "database back after %.0f s; %d message(s) written late",
                self._clock() - self._down_since,
                self.written_late,
            )
            self._down_since = None
            self._noted.clear()

    def should_note(self, chat_id: int | None) -> bool:
        """True the first time a chat is told, during one outage, that this part may be
        forgotten."""
        if chat_id is None or chat_id in self._noted:
            return False
        self._noted.add(chat_id)
        return True

    def turn(self) -> TurnMemory:
        return TurnMemory(self)

    # ------------------------------------------------------------------ remembered reads

    def _remember(self, kind: str, key: Hashable, value: Any) -> None:
        slot = (kind, key)
        self._seen[slot] = value
        self._seen.move_to_end(slot)
        while len(self._seen) > self.max_remembered:
            self._seen.popitem(last=False)

    def _recall(self, kind: str, key: Hashable, default: T) -> T:
        value = self._seen.get((kind, key), default)
        return value  # type: ignore[no-any-return]

    def _remember_message(self, message: StoredMessage) -> None:
        history = self._seen.get(("history", message.chat_id))
        if history is None:
            history = []
        history = [*history, message][-HISTORY_KEEP:]
        self._remember("history", message.chat_id, history)

    # ------------------------------------------------------------------ writes

    async def _add(self, message: StoredMessage) -> tuple[StoredMessage, bool]:
        """Store or queue; (the message, whether it was queued)."""
        if not self._pending and not self.down:
            try:
                stored = await self.messages.add(message)
            except StorageUnavailable as exc:
                self._failed(exc)
            else:
                self._remember_message(stored)
                return stored, False
        if len(self._pending) >= self.max_pending:
            raise StorageUnavailable(
                f"the database is down and {len(self._pending)} messages wait for it already"
            )
        self._pending.append(message)
        self._remember_message(message)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="continuity-flush")
        return message, True

    async def _add_all(
        self, messages: Sequence[StoredMessage], write: Callable[[], Awaitable[W]]
    ) -> W | None:
        """`write()` (which stores `messages` and maybe more in one request), or queue the
        messages; the write's answer, None when they were queued."""
        if not self._pending and not self.down:
            try:
                written = await write()
            except StorageUnavailable as exc:
                self._failed(exc)
            else:
                return written
        if len(self._pending) + len(messages) > self.max_pending:
            raise StorageUnavailable(
                f"the database is down and {len(self._pending)} messages wait for it already"
            )
        for message in messages:
            self._pending.append(message)
            self._remember_message(message)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="continuity-flush")
        return None

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self.retry_after)
            await self.flush()

    async def flush(self) -> bool:
        """Write what is queued, in order, in batches; True when nothing is left."""
        async with self._flushing:
            return await self._flush()

    async def _flush(self) -> bool:
        while self._pending:
            batch = [self._pending[i] for i in range(min(BATCH, len(self._pending)))]
            try:
                await self.messages.add_many(batch)
            except StorageUnavailable as exc:
                self._failed(exc)
                return False
            for _ in batch:
                self._pending.popleft()
            self.written_late += len(batch)
        self._last_failure = float("-inf")
        self._recovered()
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """A last attempt to write the queue (shutdown); what cannot be written is logged."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.wait([self._flusher])
        if self._pending:
            try:
                async with asyncio.timeout(timeout):
                    await self.flush()
            except TimeoutError:
                pass
        if self._pending:
            log.error(
                "%d message(s) could not be written before shutdown: the database is still down",
                len(self._pending),
            )


class TurnMemory:
    """One turn's reads and writes; `degraded` once any of them fell back on memory."""

    __slots__ = ("_memory", "degraded")

    def __init__(self, memory: Continuity) -> None:
        self._memory = memory
        self.degraded = False

    async def read(
        self, kind: str, key: Hashable, fetch: Callable[[], Awaitable[T]], default: T
    ) -> T:
        """`fetch()`, remembered; while the database is down, the remembered value."""
        memory = self._memory
        if not memory.down:
            try:
                value = await fetch()
            except StorageUnavailable as exc:
                memory._failed(exc)
            else:
                if kind == "history" and memory.pending:
                    # Queued messages are not in the database yet: the remembered copy has them.
                    recalled: T = memory._recall(kind, key, value)
                    self.degraded = True
                    return recalled
                memory._remember(kind, key, value)
                return value
        self.degraded = True
        return memory._recall(kind, key, default)

    async def read_all(
        self,
        fetch: Callable[[], Awaitable[dict[Slot, Any]]],
        defaults: dict[Slot, Any],
    ) -> dict[Slot, Any]:
        """Several reads in one `fetch()` (one round trip), each value remembered under its
        (kind, key) slot as `read` remembers it; while the database is down, the remembered
        values (or `defaults`)."""
        memory = self._memory
        if not memory.down:
            try:
                values = await fetch()
            except StorageUnavailable as exc:
                memory._failed(exc)
            else:
                for (kind, key), value in values.items():
                    if kind == "history" and memory.pending:
                        # As in `read`: queued messages are only in the remembered copy.
                        values[(kind, key)] = memory._recall(kind, key, value)
                        self.degraded = True
                    else:
                        memory._remember(kind, key, value)
                return values
        self.degraded = True
        return {slot: memory._recall(slot[0], slot[1], value) for slot, value in defaults.items()}

    async def add_messages(
        self, messages: Sequence[StoredMessage], write: Callable[[], Awaitable[W]]
    ) -> W | None:
        """Store `messages` through `write()` (one request that may store more, e.g. the
        turn's ledger rows), or queue them while the database is down (None, `degraded`)."""
        written = await self._memory._add_all(messages, write)
        if written is None:
            self.degraded = True
        return written

    def remember_written(self, messages: Sequence[StoredMessage]) -> None:
        """The messages `write()` stored, as the remembered history of their chat."""
        for message in messages:
            self._memory._remember_message(message)

    async def add_message(self, message: StoredMessage) -> StoredMessage:
        stored, queued = await self._memory._add(message)
        if queued:
            self.degraded = True
        return stored
