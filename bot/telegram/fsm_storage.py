"""Chat state (FSM) that survives a Redis outage.

With several replicas, `/train`'s "waiting for your answer" state lives in Redis so whichever
replica gets the next message knows it. If Redis goes away, aiogram's `RedisStorage` raises on
every state read, and every update whose filters look at the state would fail: losing Redis
would stop replies. `ResilientStorage` writes to Redis and to a local copy, reads from Redis, and
falls back to the local copy (logged once per outage) when Redis does not answer. During an
outage each replica keeps its own view, which is the best anyone can do without Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, StorageKey
from aiogram.fsm.storage.memory import MemoryStorage
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

StateType = str | State | None

# What a broken or unreachable Redis raises through aiogram's RedisStorage.
OUTAGE = (RedisError, OSError, TimeoutError)


class ResilientStorage(BaseStorage):
    def __init__(self, primary: BaseStorage, local: BaseStorage | None = None) -> None:
        self.primary = primary
        self.local = local or MemoryStorage()
        self._degraded = False

    def _outage(self, exc: BaseException) -> None:
        if not self._degraded:
            log.warning(
                "chat state: Redis unavailable (%s); using this replica's copy until it is back",
                type(exc).__name__,
            )
            self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("chat state: Redis is back")
            self._degraded = False

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        await self.local.set_state(key, state)
        try:
            await self.primary.set_state(key, state)
        except OUTAGE as exc:
            self._outage(exc)
        else:
            self._recovered()

    async def get_state(self, key: StorageKey) -> str | None:
        try:
            value = await self.primary.get_state(key)
        except OUTAGE as exc:
            self._outage(exc)
            return await self.local.get_state(key)
        self._recovered()
        return value

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        await self.local.set_data(key, data)
        try:
            await self.primary.set_data(key, data)
        except OUTAGE as exc:
            self._outage(exc)
        else:
            self._recovered()

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        try:
            value = await self.primary.get_data(key)
        except OUTAGE as exc:
            self._outage(exc)
            return await self.local.get_data(key)
        self._recovered()
        return value

    async def close(self) -> None:
        try:
            await self.primary.close()
        finally:
            await self.local.close()
