"""The bot's Redis clients: short timeouts, and a pool that waits for a free connection.

Every Redis client the bot makes (the intake, the chat queue, the FSM storage, the rate limit,
the budget counters, the model-config events) comes from `redis_client`: a command that cannot
be answered costs a message at most `timeout` seconds before the caller's fallback takes over.

The pool is a `BlockingConnectionPool`: redis-py 8 caps its default pool at 100 connections and
raises `MaxConnectionsError` past it. In a burst (500 updates in flight, the event loop behind)
more commands than that wait for their replies at once, and each failure took a fallback path
that costs far more than waiting: ordering across replicas lost, and a chat-queue entry that
could not be removed holding the chat's next update for two minutes (2026-12-03,
`e2e_load --production --burst 100:20`). Now a command waits up to `pool_wait` seconds for a
connection, then fails as any Redis error does.
"""

from __future__ import annotations

import redis.asyncio as redis

MAX_CONNECTIONS = 200
POOL_WAIT = 5.0
TIMEOUT = 2.0


def redis_client(
    url: str,
    *,
    timeout: float = TIMEOUT,
    health_check_interval: int = 0,
    max_connections: int = MAX_CONNECTIONS,
    pool_wait: float = POOL_WAIT,
) -> redis.Redis:
    """A client owning its waiting pool (`aclose()` closes both)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_wait,
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
