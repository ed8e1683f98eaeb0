"""A round of background work repeated while the dispatcher runs (change reports, guardrails).

    class Reports(BackgroundLoop):
        async def round(self, bot: Bot) -> int: ...      # one round; how many things it did
    Reports().attach(dp, "change_reports")               # started and stopped with polling

Started by the dispatcher's startup hook and cancelled by its shutdown hook, so polling, webhook
and the tests' loopback bot all run it. A round that fails is logged and tried again next time:
the loop itself never ends on an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiogram import Bot, Dispatcher

from bot.storage.repositories import StorageError

log = logging.getLogger(__name__)


class BackgroundLoop:
    name = "background work"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Seconds between rounds."""
        raise NotImplementedError

    def enabled(self) -> bool:
        return True

    async def round(self, bot: Bot) -> int:
        raise NotImplementedError

    def attach(self, dp: Dispatcher, key: str) -> None:
        dp[key] = self

        async def start(bot: Bot) -> None:
            await self.start(bot)

        dp.startup.register(start)
        dp.shutdown.register(self.stop)

    async def start(self, bot: Bot) -> None:
        if self._task is None and self.enabled():
            self._task = asyncio.create_task(self._run(bot), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, bot: Bot) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.round(bot)
            except StorageError as exc:
                log.warning("%s: the database could not be read (%s); later", self.name, exc)
            except Exception:
                log.exception("%s failed; tried again later", self.name)
