"""Chat state keeps working through a Redis outage and is shared again when Redis is back."""

from __future__ import annotations

import uuid

from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.redis import RedisStorage

from bot.telegram.fsm_storage import ResilientStorage
from tests.fakes.tcp_proxy import TcpProxy


def _key() -> StorageKey:
    chat = int(uuid.uuid4().int % 10**9)
    return StorageKey(bot_id=42, chat_id=chat, user_id=chat)


async def test_state_is_shared_through_redis_between_replicas(redis_url: str) -> None:
    a = ResilientStorage(RedisStorage.from_url(redis_url))
    b = ResilientStorage(RedisStorage.from_url(redis_url))
    key = _key()
    try:
        await a.set_state(key, "Training:answering")
        await a.set_data(key, {"exercise_id": 7})
        assert await b.get_state(key) == "Training:answering"
        assert await b.get_data(key) == {"exercise_id": 7}
    finally:
        await a.set_state(key, None)
        await a.close()
        await b.close()


async def test_a_redis_outage_falls_back_to_the_local_copy(redis_url: str) -> None:
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        primary = RedisStorage.from_url(
            f"redis://127.0.0.1:{proxy.port}/0",
            connection_kwargs={"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        )
        storage = ResilientStorage(primary)
        key = _key()
        try:
            await storage.set_state(key, "Training:answering")
            await proxy.cut()
            # Reads and writes go on without Redis, from and to this replica's copy.
            assert await storage.get_state(key) == "Training:answering"
            await storage.set_state(key, None)
            await storage.set_data(key, {"topic": "sleep"})
            assert await storage.get_state(key) is None
            assert await storage.get_data(key) == {"topic": "sleep"}
            await proxy.restore()
            # Back on Redis: what was written during the outage did not reach it, but new
            # writes do, and reads come from Redis again.
            await storage.set_state(key, "Training:answering")
            check = RedisStorage.from_url(redis_url)
            try:
                assert await check.get_state(key) == "Training:answering"
            finally:
                await check.set_state(key, None)
                await check.close()
        finally:
            await storage.close()
