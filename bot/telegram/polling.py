"""Long polling that confirms an update to Telegram only once it is stored.

    poller = Poller(bot, intake, feeder, allowed_updates=dp.resolve_used_update_types())
    task = asyncio.create_task(poller.run())
    ...
    await poller.stop()

Each round: `getUpdates` from the stored offset; the batch and the next offset are stored in one
write; only then is the next `getUpdates` (whose offset confirms the batch to Telegram) made, and
each update handed to the feeder. A crash or a SIGKILL at any point leaves every confirmed update
in the intake, and the next start polls from the stored offset.

Why not aiogram's `start_polling`: it confirms a batch with the next request while the batch's
updates are still only tasks in memory, and it decodes the batch as a whole, so one update it
cannot read makes it fetch the same batch forever, every later message unanswered, and its error
line carries the whole update, user text included (issue 19, item 6). Here the batch is taken as
JSON and decoded one update at a time by the feeder.

When the intake cannot store, the batch is not confirmed: the loop waits and fetches it again.
Telegram's 5xx and network errors are retried with backoff (up to 5 s), as aiogram does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError
from aiogram.methods.base import TelegramMethod

from bot.intake import Intake, IntakeError
from bot.telegram.chat_queue import update_chat_id
from bot.telegram.intake_feed import UpdateFeeder

log = logging.getLogger(__name__)

POLL_TIMEOUT = 10  # seconds Telegram holds a getUpdates open when there is nothing new


class GetRawUpdates(TelegramMethod[list[dict[str, Any]]]):
    """`getUpdates`, its result left as JSON objects (decoded one by one later)."""

    __returning__ = list[dict[str, Any]]
    __api_method__ = "getUpdates"

    offset: int | None = None
    limit: int | None = None
    timeout: int | None = None
    allowed_updates: list[str] | None = None


class Poller:
    def __init__(
        self,
        bot: Bot,
        intake: Intake,
        feeder: UpdateFeeder,
        *,
        allowed_updates: list[str] | None = None,
        poll_timeout: int = POLL_TIMEOUT,
    ) -> None:
        self.bot = bot
        self.intake = intake
        self.feeder = feeder
        self.allowed_updates = allowed_updates
        self.poll_timeout = poll_timeout
        self.offset: int | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        self.offset = await self.intake.offset()
        delay = 0.5
        while not self._stopping.is_set():
            try:
                batch = await self.bot(
                    GetRawUpdates(
                        offset=self.offset,
                        timeout=self.poll_timeout,
                        allowed_updates=self.allowed_updates,
                    ),
                    request_timeout=int(self.bot.session.timeout + self.poll_timeout),
                )
            except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as exc:
                log.warning("getUpdates failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                await self._pause(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            if batch and not await self._take(batch):
                await self._pause(1.0)

    async def _take(self, batch: list[dict[str, Any]]) -> bool:
        """Store the batch, then hand its updates to the feeder; False when it could not be
        stored (then nothing is confirmed and the batch comes again)."""
        updates = [u for u in batch if isinstance(u.get("update_id"), int)]
        if not updates:
            return True
        next_offset = max(int(u["update_id"]) for u in updates) + 1
        rows = [(int(u["update_id"]), update_chat_id(u), json.dumps(u)) for u in updates]
        try:
            keys = await self.intake.put(rows, offset=next_offset)
        except IntakeError as exc:
            log.error("could not store %d update(s); fetching them again: %s", len(rows), exc)
            return False
        self.offset = next_offset
        for update, key in zip(updates, keys, strict=True):
            if key is not None:  # None: stored by an earlier run, which answers it
                self.feeder.feed(update, key)
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def stop(self) -> None:
        self._stopping.set()
