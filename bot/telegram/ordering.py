"""One chat's updates are handled one at a time, in the order they arrived; chats run in parallel.

aiogram runs every update as its own task, so two quick messages from one chat race. Its
`events_isolation` hook (taken by `Dispatcher(events_isolation=...)`, entered by the FSM middleware
*before* any state is loaded) is the place to serialize them, but aiogram's
`SimpleEventIsolation` locks per user *and* chat (so two users in a group still race) and never
forgets a lock. The isolations here lock per chat (`StorageKey.chat_id` + bot id) instead:

- `ChatEventIsolation`: in-process. One FIFO `asyncio.Lock` per chat, created on demand and
  dropped when its last waiter leaves, so memory follows the number of busy chats, not all chats.
  asyncio's lock wakes waiters in arrival order; polling starts update tasks in update order and
  nothing awaits before the isolation lock, so the order is the order Telegram sent.
- `RedisChatEventIsolation`: several replicas. The local FIFO lock first (order inside this
  process), then a Redis lock named after the chat (mutual exclusion across replicas). The Redis
  lock expires after `lock_timeout` so a crashed replica cannot block a chat forever. When Redis
  cannot be reached the update goes on under the local lock only: losing Redis never stops
  replies. Across replicas this guarantees one-at-a-time, and order as far as the updates reach
  the replicas in order (Telegram delivers a chat's webhook updates one after another).

Both are aiogram `BaseEventIsolation`s; `build_event_isolation(redis_url)` picks one.
Use with the FSM strategies `USER_IN_CHAT` (default) or `CHAT`, whose keys carry the chat id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from aiogram.fsm.storage.base import BaseEventIsolation, StorageKey
from redis.asyncio import Redis
from redis.exceptions import LockError, RedisError

from bot.services.redis_client import redis_client

log = logging.getLogger(__name__)

ChatKey = tuple[int, int]  # (bot_id, chat_id)


def chat_key(key: StorageKey) -> ChatKey:
    return (key.bot_id, key.chat_id)


class _LockSlot:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class ChatEventIsolation(BaseEventIsolation):
    """Per-chat FIFO locks in this process; a chat's lock exists only while it is in use."""

    def __init__(self) -> None:
        self._slots: dict[ChatKey, _LockSlot] = {}

    @property
    def active_chats(self) -> int:
        """Chats holding or waiting for their lock now (memory use follows this)."""
        return len(self._slots)

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        async with self.chat_lock(chat_key(key)):
            yield

    @asynccontextmanager
    async def chat_lock(self, ckey: ChatKey) -> AsyncGenerator[None, None]:
        slot = self._slots.get(ckey)
        if slot is None:
            slot = self._slots[ckey] = _LockSlot()
        slot.users += 1
        try:
            async with slot.lock:
                yield
        finally:
            slot.users -= 1
            # `close()` may have dropped the table meanwhile (shutdown with updates in flight).
            if slot.users == 0 and self._slots.get(ckey) is slot:
                del self._slots[ckey]

    async def close(self) -> None:
        self._slots.clear()


class RedisChatEventIsolation(BaseEventIsolation):
    """Per-chat order across replicas: local FIFO lock, then a Redis lock for the chat."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "coachbot:chat-lock",
        lock_timeout: float = 300.0,
        poll_interval: float = 0.05,
        owns_client: bool = False,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.lock_timeout = lock_timeout
        self.poll_interval = poll_interval
        self._owns_client = owns_client
        self._local = ChatEventIsolation()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisChatEventIsolation:
        return cls(redis_client(url), owns_client=True, **kwargs)

    def lock_name(self, ckey: ChatKey) -> str:
        bot_id, chat_id = ckey
        return f"{self.prefix}:{bot_id}:{chat_id}"

    @asynccontextmanager
    async def lock(self, key: StorageKey) -> AsyncGenerator[None, None]:
        ckey = chat_key(key)
        async with self._local.chat_lock(ckey):
            lock = self.redis.lock(
                self.lock_name(ckey), timeout=self.lock_timeout, sleep=self.poll_interval
            )
            try:
                acquired = await lock.acquire()
            except RedisError as exc:
                log.warning("Redis chat lock unavailable (%s); ordering this chat locally", exc)
                acquired = False
            try:
                yield
            finally:
                if acquired:
                    try:
                        await lock.release()
                    except (LockError, RedisError) as exc:
                        # Expired (a step outlived lock_timeout) or Redis went away: nothing
                        # to undo, the lock is gone either way.
                        log.warning("Redis chat lock release failed: %s", exc)

    async def clear(self, bot_id: int) -> int:
        """Drop every chat lock of the bot; how many there were.

        For the polling process at its start: only one process polls a bot, so a lock still
        held is a killed predecessor's, and it would hold its chat for `lock_timeout`.
        """
        dropped = 0
        try:
            async for name in self.redis.scan_iter(match=f"{self.prefix}:{bot_id}:*"):
                dropped += await self.redis.delete(name)
        except RedisError as exc:
            log.warning("could not clear stale chat locks: %s", exc)
        return dropped

    async def close(self) -> None:
        await self._local.close()
        if self._owns_client:
            await self.redis.aclose()


def build_event_isolation(redis_url: str | None = None, **kwargs: Any) -> BaseEventIsolation:
    """Redis-backed when `redis_url` is set (several replicas), else in-process."""
    if redis_url:
        return RedisChatEventIsolation.from_url(redis_url, **kwargs)
    return ChatEventIsolation()
