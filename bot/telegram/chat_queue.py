"""Across replicas, one chat's updates are handled in the order Telegram numbered them.

A lock only gives one-at-a-time: when replica A finishes update 1, its own waiting update 3 can
grab the lock before replica B's update 2, which is polling for it. So ordering is a queue, not a
lock. Each webhook request registers its update in a Redis sorted set per chat (score: Telegram's
`update_id`, which grows in the order updates were created) *before* the request is acknowledged;
the handler then waits until its update is the smallest one queued for the chat, runs, and
removes itself. Telegram sends a chat's next update only after the previous one was acknowledged,
so registration happens in update order.

On a turn's way the queue costs no round trip of its own: the Redis intake registers the update
in the script that stores it, answering whether it joined at the head (`put_queued`; then the
handler need not ask again), and removes it in the transaction that marks it done (`Place`,
`Intake.done(leave=...)`). Registering and leaving here (`register`, `leave`) are for the other
ways in: updates taken up after a restart, the file intake.

Failure handling: an entry whose replica died would block the chat, so a waiter that has seen the
same head for `stale_after` seconds removes it (logged); an update cancelled while it waits for its
turn (a shutdown deadline) removes its own entry. A leave that fails (Redis busy or briefly away)
is retried in the background until Redis takes it or `stale_after` has passed: a finished
update's entry left in place held its chat's next update for the whole `stale_after` (seen in a
burst, 2026-12-03). When Redis cannot be reached, updates go
on without cross-replica ordering (the in-process per-chat lock still holds): losing Redis never
stops replies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from bot.intake import QueueEntry
from bot.services.redis_client import redis_client

log = logging.getLogger(__name__)

# A waiter's polls: every poll_interval at first, each wait POLL_GROWTH times longer, at most
# POLL_MAX_FACTOR poll intervals (20 -> 100 ms by default).
POLL_GROWTH = 1.5
POLL_MAX_FACTOR = 5.0
# A failed leave is tried again after RETRY_FIRST seconds, then doubling up to RETRY_MAX.
RETRY_FIRST = 0.1
RETRY_MAX = 5.0


def update_chat_id(update: dict[str, Any]) -> int | None:
    """The chat an update belongs to, for the kinds of update the bot handles."""
    for kind in ("message", "edited_message", "channel_post", "business_message"):
        message = update.get(kind)
        if isinstance(message, dict):
            chat = message.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                return int(chat["id"])
    callback = update.get("callback_query")
    if isinstance(callback, dict):
        message = callback.get("message")
        if isinstance(message, dict):
            chat = message.get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                return int(chat["id"])
    return None


class Place:
    """An update's turn in its chat: `hand_over()` takes the queue entry out of the turn's hands
    (it then does not leave the queue on exit), so the caller leaves it with the intake's done."""

    def __init__(self, entry: QueueEntry | None) -> None:
        self._entry = entry

    def hand_over(self) -> QueueEntry | None:
        """The entry to leave (None: the update was not queued); the caller's from now on."""
        entry, self._entry = self._entry, None
        return entry


class RedisChatQueue:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "coachbot:chat-queue",
        stale_after: float = 120.0,
        poll_interval: float = 0.02,
        owns_client: bool = False,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._stale_after = stale_after
        self._poll = poll_interval
        self._owns_client = owns_client
        self._warned = False
        self._retries: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisChatQueue:
        return cls(redis_client(url), owns_client=True, **kwargs)

    def _key(self, chat_id: int) -> str:
        return f"{self._prefix}:{chat_id}"

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._warned:
            log.warning(
                "chat queue: Redis unavailable (%s); chats are ordered per replica only",
                type(exc).__name__,
            )
            self._warned = True

    def entry(self, chat_id: int, update_id: int) -> QueueEntry:
        return QueueEntry(self._key(chat_id), update_id, int(self._stale_after * 4) + 1)

    async def register(self, chat_id: int, update_id: int) -> bool:
        """Queue the update for its chat; False when Redis could not be reached."""
        entry = self.entry(chat_id, update_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zadd(entry.key, {entry.member: update_id}, nx=True)
                pipe.expire(entry.key, entry.ttl)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return False
        self._warned = False
        return True

    @asynccontextmanager
    async def turn(
        self, chat_id: int, update_id: int, *, at_head: bool = False
    ) -> AsyncIterator[Place]:
        """Wait until the update is the chat's oldest queued one; leave the queue afterwards
        unless the entry was handed over (`Place.hand_over`). `at_head`: it joined at the head
        (the intake's `put_queued` said so), so it need not ask: it stays the head until it
        leaves, as after a head check here."""
        entry = self.entry(chat_id, update_id)
        try:
            queued = at_head or await self._wait_for_head(entry.key, entry.member)
        except BaseException:
            # Cancelled before its turn (a shutdown deadline): leave the queue, or the chat's
            # next updates on every replica would wait `stale_after` behind this one.
            await self.leave(entry)
            raise
        place = Place(entry if queued else None)
        try:
            yield place
        finally:
            left_here = place.hand_over()
            if left_here is not None:
                await self.leave(left_here)

    @property
    def retrying(self) -> int:
        """Leaves that failed and are being retried."""
        return len(self._retries)

    async def leave(self, entry: QueueEntry) -> None:
        """Remove the entry; when Redis fails, keep trying in the background."""
        if not await self._remove(entry):
            task = asyncio.create_task(self._leave_later(entry), name="chat-queue-leave")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _remove(self, entry: QueueEntry) -> bool:
        try:
            await self._redis.zrem(entry.key, entry.member)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return False
        return True

    async def _leave_later(self, entry: QueueEntry) -> None:
        loop = asyncio.get_running_loop()
        # Past stale_after the chat's waiters skip the entry themselves.
        deadline = loop.time() + self._stale_after
        delay = RETRY_FIRST
        while loop.time() < deadline:
            await asyncio.sleep(delay)
            if await self._remove(entry):
                return
            delay = min(delay * 2, RETRY_MAX)
        log.warning("chat queue: could not leave %s in %.0f s", entry.key, self._stale_after)

    async def _wait_for_head(self, key: str, member: str) -> bool:
        head_seen: str | None = None
        head_since = time.monotonic()
        # The first looks come quickly (a head on another replica is usually about to leave);
        # a long wait polls less often, so a backlog of waiters does not load Redis and the loop.
        interval = self._poll
        while True:
            try:
                head = await self._redis.zrange(key, 0, 0)
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
                return False
            if not head:
                # Not queued (expired, or registration failed): nothing to wait for.
                return False
            current = head[0].decode() if isinstance(head[0], bytes) else str(head[0])
            if current == member:
                return True
            now = time.monotonic()
            if current != head_seen:
                head_seen, head_since = current, now
            elif now - head_since > self._stale_after:
                log.warning(
                    "chat queue: update %s held %s for %.0f s; skipping it",
                    current,
                    key,
                    now - head_since,
                )
                try:
                    await self._redis.zrem(key, current)
                except (RedisError, OSError) as exc:
                    self._redis_failed(exc)
                    return False
                continue
            await asyncio.sleep(interval)
            interval = min(interval * POLL_GROWTH, self._poll * POLL_MAX_FACTOR)

    async def close(self) -> None:
        for task in list(self._retries):
            task.cancel()  # the entries expire with their key's TTL; waiters skip stale ones
        if self._owns_client:
            await self._redis.aclose()
