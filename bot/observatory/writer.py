"""`LedgerWriter`: the call ledger's rows, written off the reply's path in batches.

    writer = LedgerWriter(storage.ledger, retention_days=90)
    await writer.start()
    writer.record(call)          # an append, from the capture wrapper (no I/O, no await)
    await writer.close(timeout)  # the last rows, written at shutdown (after the runner's drain)

Every `flush_interval` seconds the task takes what has piled up (one turn's rows, or a few
turns' under load), prices it (`bot.observatory.pricing`) and writes it in one batch, so a reply
never waits on the ledger and a busy bot makes fewer writes than turns.

A database outage never delays or loses a reply: the batch goes back to memory and is tried
again at the next interval, up to `max_pending` rows (50,000); past the bound the oldest are
dropped, counted in `dropped` and logged (once per outage, and the total when it ends).
Retention: calls older than LEDGER_RETENTION_DAYS are pruned by the same task, at start and
every `prune_every` seconds; every `roll_up_every` seconds it brings the rollups (decision
0016) up to the rows written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta

from bot.observatory.pricing import Prices
from bot.storage.ledger_models import LedgerCall
from bot.storage.models import utcnow
from bot.storage.repositories import LedgerRepo, StorageError

log = logging.getLogger(__name__)

MAX_PENDING = 50_000
# Rows per write: a backlog after an outage goes in writes of bounded size.
BATCH = 5_000


async def stop_then_flush(
    task: asyncio.Task[None] | None,
    flush: Callable[[], Awaitable[object]],
    timeout: float,
    what: str,
) -> None:
    """A background writer's shutdown: its loop cancelled, then one last write within
    `timeout` (logged when it did not finish)."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        async with asyncio.timeout(timeout):
            await flush()
    except TimeoutError:
        log.warning("%s: the last write did not finish in %.1fs", what, timeout)


class LedgerWriter:
    def __init__(
        self,
        repo: LedgerRepo,
        *,
        retention_days: int = 90,
        max_pending: int = MAX_PENDING,
        flush_interval: float = 0.5,
        prune_every: float = 3600.0,
        roll_up_every: float = 5.0,
        prices: Prices | None = None,
    ) -> None:
        self._repo = repo
        self.retention = timedelta(days=retention_days)
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.prune_every = prune_every
        self.roll_up_every = roll_up_every
        self.prices = prices or Prices()
        self._pending: deque[LedgerCall] = deque()
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._batches = itertools.count(1)
        self._prefix = secrets.token_hex(6)
        self.dropped = 0
        self.written = 0
        self._failing = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, call: LedgerCall) -> None:
        pending = self._pending
        if len(pending) >= self.max_pending:
            pending.popleft()
            self._drop(1)
        pending.append(call)

    async def start(self) -> None:
        if self._task is None:
            # The price data is imported and read off the loop (about a second).
            await asyncio.to_thread(self.prices.load)
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self) -> int:
        """Write what is pending now; how many rows were written (0 when the database failed:
        they stay pending)."""
        async with self._flushing:
            written = 0
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
                self.stamp(batch)
                try:
                    await self._repo.add_many(batch)
                except StorageError as exc:
                    self._requeue(batch)
                    if not self._failing:
                        self._failing = True
                        log.warning(
                            "the call ledger could not be written (%s); %d rows wait in memory "
                            "(at most %d)",
                            exc,
                            len(self._pending),
                            self.max_pending,
                        )
                    return written
                written += len(batch)
            if self._failing and written:
                self._failing = False
                log.info(
                    "the call ledger is written again (%d rows dropped meanwhile)", self.dropped
                )
            self.written += written
            return written

    async def prune(self) -> int:
        gone = await self._repo.prune(utcnow() - self.retention)
        if gone:
            log.info("call ledger: pruned %d calls older than %s", gone, self.retention)
        return gone

    async def close(self, timeout: float = 5.0) -> None:
        task, self._task = self._task, None
        await stop_then_flush(task, self.flush, timeout, "call ledger")
        if self._pending:
            log.warning("call ledger: %d rows not written at shutdown", len(self._pending))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        next_roll_up = loop.time() + self.roll_up_every
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._pending:
                await self.flush()
            if loop.time() >= next_roll_up:
                # The rollups in the background, so a `/stats` read has little left to add.
                next_roll_up = loop.time() + self.roll_up_every
                try:
                    await self._repo.roll_up()
                except StorageError as exc:
                    log.warning("call ledger: the roll-up failed (%s); tried again later", exc)
            if loop.time() >= next_prune:
                next_prune = loop.time() + self.prune_every
                try:
                    await self.prune()
                except StorageError as exc:
                    log.warning("call ledger: pruning failed (%s); tried again later", exc)

    def stamp(self, batch: list[LedgerCall]) -> None:
        """Ids (kept across retries of the batch) and prices, once per row. Also for the rows a
        turn stores with its messages (`bot.services.conversation`), which skip the queue."""
        prefix = f"{self._prefix}-{next(self._batches)}-"
        price = self.prices.price
        for n, call in enumerate(batch):
            if call.call_id:
                continue  # a row of a batch that failed before: same id, priced already
            call.call_id = prefix + str(n)
            call.cost_usd, call.cost_source = price(call)

    def _requeue(self, batch: list[LedgerCall]) -> None:
        room = self.max_pending - len(self._pending)
        if room < len(batch):
            # The oldest go first: the newest rows say most about the bot as it is now.
            self._drop(len(batch) - max(room, 0))
            batch = batch[len(batch) - max(room, 0) :]
        self._pending.extendleft(reversed(batch))

    def _drop(self, n: int) -> None:
        if n <= 0:
            return
        if self.dropped == 0 or (self.dropped + n) // 10_000 > self.dropped // 10_000:
            log.warning(
                "call ledger: %d rows dropped so far (the database has not taken them and "
                "memory holds at most %d)",
                self.dropped + n,
                self.max_pending,
            )
        self.dropped += n
