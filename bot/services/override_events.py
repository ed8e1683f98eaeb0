"""Tell every replica at once that an admin changed the model configuration.

An admin's `/setmodel`, `/resetmodel`, `/rollback` or `/catalog add|edit|remove` lands on one
replica; that replica applies it to its own copy directly. The others learn of it here: the
change is published on a Redis channel (its target: an agent, `pipeline:<name>`, `role:<role>`,
`default`, or `catalog:<alias>`) and every replica's listener invalidates its copy on receipt, so
its next message reads the tables again, the configuration version with them. Redis is a
speed-up, never a dependency: publishing failures are logged and swallowed, the listener
reconnects with backoff, and the cache TTL (`MODEL_CONFIG_TTL`) still bounds staleness when Redis
is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from bot.services.redis_client import service_client

log = logging.getLogger(__name__)

CHANNEL = "coach-bot:model-config"

OnChange = Callable[[str | None], None]


class OverrideEvents:
    """Publish and receive model configuration changes; `on_change(target)` runs for other
    replicas' changes (the payload's key stays `agent`, as older replicas read it)."""

    def __init__(
        self,
        redis_url: str,
        on_change: OnChange,
        *,
        channel: str = CHANNEL,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = redis_url
        self._on_change = on_change
        self._channel = channel
        self._max_backoff = max_backoff
        self.instance_id = uuid.uuid4().hex
        self._client: redis.Redis = service_client(redis_url)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.received = 0

    async def start(self) -> None:
        """Start listening in the background; returns at once even when Redis is down."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="override-events")

    async def wait_subscribed(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._subscribed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def publish(self, agent: str | None) -> bool:
        """Announce a change of `agent` (any target, or `catalog:<alias>`; None: everything
        changed). Never raises; False when not sent."""
        payload = json.dumps({"agent": agent, "from": self.instance_id})
        try:
            await self._client.publish(self._channel, payload)
        except (RedisError, OSError) as exc:
            log.warning(
                "could not publish override change on Redis (%s); other replicas will see it "
                "within MODEL_CONFIG_TTL",
                type(exc).__name__,
            )
            return False
        return True

    def _handle(self, data: Any) -> None:
        try:
            event = json.loads(data)
        except (TypeError, ValueError):
            log.warning("ignoring a malformed override event on %s", self._channel)
            return
        if not isinstance(event, dict) or event.get("from") == self.instance_id:
            return
        self.received += 1
        agent = event.get("agent")
        self._on_change(agent if isinstance(agent, str) else None)

    async def _listen(self) -> None:
        backoff = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                if backoff > 0.1:
                    log.info("override events: reconnected to Redis")
                    # We may have missed changes while disconnected.
                    self._on_change(None)
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._handle(message.get("data"))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning(
                    "override events: Redis unavailable (%s); retrying in %.1f s",
                    type(exc).__name__,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            # return_exceptions: the listener's own cancellation is collected, while a
            # cancellation of close() itself (a shutdown being cut short) propagates.
            await asyncio.gather(task, return_exceptions=True)
            self._task = None
        await self._client.aclose()
