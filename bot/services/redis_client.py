"""The bot's Redis clients: short timeouts, and a pool that waits for a free connection.

Every Redis client the bot makes (the intake, the chat queue, the FSM storage, the rate limit,
the budget counters, the model-config events) comes from `redis_client`: a command that cannot
be answered costs a message at most `timeout` seconds before the caller's fallback takes over.

The pool waits for a free connection when it has none: redis-py 8 caps its default pool at 100
connections and raises `MaxConnectionsError` past it. In a burst (500 updates in flight, the event
loop behind) more commands than that wait for their replies at once, and each failure took a path
that costs far more than waiting: ordering across replicas lost, and a chat-queue entry that
could not be removed holding the chat's next update for two minutes (2026-12-03,
`e2e_load --production --burst 100:20`). Now a command waits up to `pool_wait` seconds for a
connection, then fails as any Redis error does.

redis-py's own `BlockingConnectionPool` does that on every command (an `asyncio.Condition` and
a timeout scope each time): +33-40 us of CPU a command, ~0.4 ms a message (decision 0025,
`tests.bench.redis_clients`). `WaitingPool` is the plain pool, which waits only when it is full.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import MaxConnectionsError

MAX_CONNECTIONS = 200
POOL_WAIT = 5.0
TIMEOUT = 2.0


class WaitingPool(redis.ConnectionPool):
    """redis-py's `ConnectionPool`, except that a command finding every connection in use
    waits (first come, first served) up to `pool_wait` seconds for one to be released."""

    def __init__(self, *args: Any, pool_wait: float = POOL_WAIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_wait = pool_wait
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        deadline: float | None = None
        while True:
            try:
                # unused-ignore: redis types these calls release by release (8.2 typed aclose);
                # CI installs the newest, so an ignore that turns unused must not fail mypy.
                connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call, unused-ignore]
                return connection
            except MaxConnectionsError:
                pass
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + self.pool_wait
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise redis.ConnectionError("No connection available.") from None
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except BaseException as exc:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, but it will not take the connection: pass it on
                if isinstance(exc, TimeoutError):
                    raise redis.ConnectionError("No connection available.") from None
                raise

    async def release(self, connection: AbstractConnection) -> None:
        await super().release(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        """Wake the longest waiting command still waiting, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def redis_client(
    url: str,
    *,
    timeout: float = TIMEOUT,
    health_check_interval: int = 0,
    max_connections: int = MAX_CONNECTIONS,
    pool_wait: float = POOL_WAIT,
) -> redis.Redis:
    """A client owning its waiting pool (`aclose()` closes both)."""
    pool = WaitingPool.from_url(
        url,
        max_connections=max_connections,
        pool_wait=pool_wait,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=health_check_interval,
    )
    client: redis.Redis = redis.Redis.from_pool(pool)
    return client


def service_client(redis_url: str) -> redis.Redis:
    """The services' client (model-config events, the rate limit, the budget counters), with a
    health check on idle connections."""
    return redis_client(redis_url, health_check_interval=15)
