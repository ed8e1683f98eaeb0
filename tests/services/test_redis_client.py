"""The bot's Redis clients wait for a free connection instead of failing (real Redis).

redis-py 8 caps a pool at 100 connections and raises `MaxConnectionsError` past it. In a burst
the bot has more Redis commands in flight than that (every update's intake, queue, rate limit and
budget calls while the loop is busy), and each failure took a fallback path: a chat's queue entry
that could not be removed held the chat's next update for `stale_after` (120 s).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from bot.services.redis_client import WaitingPool, redis_client, service_client


async def _hold(client: redis.Redis, key: str, seconds: float) -> object:
    # BLPOP keeps its connection for `seconds` (nothing is pushed): a command in flight.
    return await client.blpop([key], timeout=seconds)


async def test_more_commands_in_flight_than_connections_wait_for_one(redis_url: str) -> None:
    client = redis_client(redis_url, max_connections=2, timeout=3)
    key = f"test:redis-client:{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(*(_hold(client, key, 0.2) for _ in range(6)))
    finally:
        await client.aclose()
    assert results == [None] * 6  # all six ran, two at a time


async def test_redis_py_s_own_pool_fails_in_the_same_case(redis_url: str) -> None:
    """What the test above guards against (if redis-py starts waiting by itself, this fails and
    the factory can go)."""
    client = redis.from_url(redis_url, max_connections=2)
    key = f"test:redis-client:{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(
            *(_hold(client, key, 0.2) for _ in range(6)), return_exceptions=True
        )
    finally:
        await client.aclose()
    failed = [r for r in results if isinstance(r, redis.ConnectionError)]
    assert len(failed) == 4  # two got a connection, four the error


async def test_a_wait_past_the_pool_timeout_is_a_redis_error(redis_url: str) -> None:
    """Bounded: a caller's fallback (RedisError) takes over when no connection frees in time."""
    client = redis_client(redis_url, max_connections=1, pool_wait=0.1, timeout=3)
    key = f"test:redis-client:{uuid.uuid4().hex}"
    try:
        holder = asyncio.create_task(_hold(client, key, 1.0))
        await asyncio.sleep(0.05)
        with pytest.raises(redis.RedisError):
            await client.ping()
        await holder
    finally:
        await client.aclose()


async def test_the_service_client_is_a_waiting_client(redis_url: str) -> None:
    client = service_client(redis_url)
    try:
        pool = client.connection_pool
        assert isinstance(pool, WaitingPool)
        assert await client.ping()
    finally:
        await client.aclose()
