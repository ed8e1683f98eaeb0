"""The Redis client the services share their settings for (model-config events, the rate limit,
the budget counters): short timeouts, so a Redis that does not answer costs a message at most
2 s before the caller's fallback takes over, and a health check on idle connections."""

from __future__ import annotations

import redis.asyncio as redis


def service_client(redis_url: str) -> redis.Redis:
    client: redis.Redis = redis.from_url(
        redis_url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=15
    )
    return client
