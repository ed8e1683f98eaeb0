"""One chat's updates, spread over replicas, are handled in update order; a dead replica's entry
does not block the chat forever; Redis down means no cross-replica ordering, never no reply."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import redis.asyncio as redis

from bot.intake.redis import RedisIntake
from bot.intake.sqlite import SqliteIntake
from bot.telegram.chat_queue import RedisChatQueue, update_chat_id
from tests.fakes.redis_monitor import RedisCommands
from tests.fakes.tcp_proxy import TcpProxy


async def _queued(url: str, key: str) -> int:
    """How many updates the chat's queue holds, read by a client of its own."""
    raw = redis.from_url(url)
    try:
        return int(await raw.zcard(key))
    finally:
        await raw.aclose()


def _queue(url: str, prefix: str, **kw: float) -> RedisChatQueue:
    return RedisChatQueue(redis.from_url(url), prefix=prefix, owns_client=True, **kw)


async def test_updates_alternating_between_replicas_run_in_update_order(redis_url: str) -> None:
    prefix = f"test-queue-{uuid.uuid4().hex}"
    a, b = _queue(redis_url, prefix), _queue(redis_url, prefix)
    order: list[int] = []

    async def handle(queue: RedisChatQueue, update_id: int, work: float) -> None:
        async with queue.turn(42, update_id):
            order.append(update_id)
            await asyncio.sleep(work)

    try:
        # Registration happens as each webhook request arrives, in update order...
        tasks = []
        for update_id, queue in zip((1, 2, 3, 4), (a, b, a, b), strict=True):
            assert await queue.register(42, update_id)
            # ...and the handlers race for the chat: the first one is slow, and replica A's
            # update 3 is local to the lock holder, which a plain lock would let jump ahead.
            work = 0.2 if update_id == 1 else 0.01
            tasks.append(asyncio.create_task(handle(queue, update_id, work)))
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert order == [1, 2, 3, 4]
    finally:
        await a.close()
        await b.close()


async def test_other_chats_do_not_wait(redis_url: str) -> None:
    prefix = f"test-queue-{uuid.uuid4().hex}"
    queue = _queue(redis_url, prefix)
    events: list[str] = []
    release = asyncio.Event()

    async def slow() -> None:
        async with queue.turn(1, 10):
            events.append("chat1 start")
            await release.wait()
            events.append("chat1 end")

    async def fast() -> None:
        async with queue.turn(2, 11):
            events.append("chat2")
            release.set()

    try:
        assert await queue.register(1, 10)
        assert await queue.register(2, 11)
        await asyncio.wait_for(asyncio.gather(slow(), fast()), 10)
        assert events == ["chat1 start", "chat2", "chat1 end"]
    finally:
        await queue.close()


async def test_an_entry_left_by_a_dead_replica_is_skipped_after_stale_after(
    redis_url: str,
) -> None:
    prefix = f"test-queue-{uuid.uuid4().hex}"
    queue = _queue(redis_url, prefix, stale_after=0.3, poll_interval=0.02)
    try:
        assert await queue.register(7, 100)  # its replica died: never handled
        assert await queue.register(7, 101)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with queue.turn(7, 101):
            waited = loop.time() - started
        assert waited >= 0.3
        assert await _queued(redis_url, f"{prefix}:7") == 0
    finally:
        await queue.close()


async def test_a_leave_that_fails_is_retried_so_the_chat_does_not_wait_stale_after(
    redis_url: str,
) -> None:
    """A burst once exhausted the pool: the finished update's entry stayed, and the chat's next
    update waited the full `stale_after` (120 s) behind it. The leave is retried instead."""
    prefix = f"test-queue-{uuid.uuid4().hex}"
    queue = _queue(redis_url, prefix, stale_after=30, poll_interval=0.02)
    client = queue._redis
    real_zrem = client.zrem
    failures = 0

    async def zrem_failing_twice(*args: object) -> object:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise redis.ConnectionError("No connection available.")
        return await real_zrem(*args)  # type: ignore[arg-type]

    client.zrem = zrem_failing_twice  # type: ignore[method-assign]
    try:
        assert await queue.register(9, 1)
        assert await queue.register(9, 2)
        async with queue.turn(9, 1):
            pass  # its leave fails here, and once more on the first retry
        async with asyncio.timeout(5):  # far below stale_after
            async with queue.turn(9, 2):
                pass
        assert failures == 2
        assert queue.retrying == 0
        assert await _queued(redis_url, f"{prefix}:9") == 0
    finally:
        await queue.close()


async def test_redis_down_means_no_waiting_and_no_error() -> None:
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        queue = _queue(f"redis://127.0.0.1:{proxy.port}/0", "unused")
        try:
            await proxy.cut()
            assert await queue.register(5, 1) is False
            entered = False
            async with queue.turn(5, 1):
                entered = True
            assert entered
        finally:
            await queue.close()


def test_chat_of_messages_and_callbacks() -> None:
    assert update_chat_id({"update_id": 1, "message": {"chat": {"id": -100}}}) == -100
    assert update_chat_id({"callback_query": {"message": {"chat": {"id": 9}}}}) == 9
    assert update_chat_id({"update_id": 1, "inline_query": {"id": "x"}}) is None


async def test_an_update_cancelled_while_waiting_for_its_turn_leaves_the_queue(
    redis_url: str,
) -> None:
    """At a shutdown deadline an update may be cancelled before its turn came: it must not stay
    queued, or the chat's next updates on every replica would wait `stale_after` behind it."""
    prefix = f"test-queue-{uuid.uuid4().hex}"
    queue = _queue(redis_url, prefix, stale_after=60)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with queue.turn(9, 1):
            holding.set()
            await release.wait()

    async def second() -> None:
        async with queue.turn(9, 2):
            raise AssertionError("cancelled before its turn")

    try:
        assert await queue.register(9, 1)
        assert await queue.register(9, 2)
        holder = asyncio.create_task(first())
        await asyncio.wait_for(holding.wait(), 5)
        waiter = asyncio.create_task(second())
        await asyncio.sleep(0.1)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        release.set()
        await holder

        assert await queue.register(9, 3)
        entered = asyncio.Event()

        async def third() -> None:
            async with queue.turn(9, 3):
                entered.set()

        await asyncio.wait_for(third(), 2)  # not 60 s behind the cancelled update
        assert entered.is_set()
    finally:
        await queue.close()


async def test_the_redis_intake_queues_an_update_as_it_stores_it_and_unqueues_it_as_it_closes(
    redis_url: str, tmp_path: Path
) -> None:
    """Two replicas, each with its intake and queue: a chat's updates stored alternately on them
    join the queue as they are stored (the first at its head) and leave it as they are marked
    done, one round trip each, and still run in update order; a re-delivery joins nothing."""
    prefix = f"test-queue-{uuid.uuid4().hex}"
    replicas = []
    for n in range(2):
        intake = RedisIntake(
            redis.from_url(redis_url),
            bot_id=1,
            fallback=SqliteIntake(str(tmp_path / f"intake-{n}.db")),
            prefix=f"{prefix}-intake",
            owns_client=True,
        )
        await intake.start()
        replicas.append((intake, _queue(redis_url, prefix)))
    order: list[int] = []

    async def handle(n: int, update_id: int, key: str, at_head: bool) -> None:
        intake, queue = replicas[n]
        async with queue.turn(42, update_id, at_head=at_head) as place:
            order.append(update_id)
            await asyncio.sleep(0.2 if update_id == 1 else 0.01)
            leave = place.hand_over()
        assert leave is not None
        assert await intake.done(key, leave=leave)

    raw = redis.from_url(redis_url)
    try:
        async with RedisCommands(redis_url) as seen:
            tasks, heads = [], []
            for update_id in (1, 2, 3, 4):
                n = update_id % 2
                intake, queue = replicas[n]
                mark = await seen.mark()
                key, head = await intake.put_queued(
                    (update_id, 42, "{}"), queue.entry(42, update_id)
                )
                assert key is not None
                if update_id > 2:  # the first on each replica loads the script
                    # One script; what else reached Redis meanwhile is the earlier handlers'.
                    names = await seen.since(mark)
                    assert names.count("EVALSHA") == 1
                    assert "ZADD" not in names
                    assert "MULTI" not in names
                heads.append(head)
                tasks.append(asyncio.create_task(handle(n, update_id, key, bool(head))))
            assert heads == [True, False, False, False]
            again = await replicas[0][0].put_queued((2, 42, "{}"), replicas[0][1].entry(42, 2))
            assert again == (None, None)
            mark = await seen.mark()
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            # Updates 2-4 each asked for the head while 1 ran; each closed in one transaction.
            names = await seen.since(mark)
            assert names.count("ZREM") == 4
            assert names.count("EXEC") == 4
            assert order == [1, 2, 3, 4]
        assert await raw.zcard(f"{prefix}:42") == 0
        assert await raw.xlen(f"{prefix}-intake:1:stream") == 0
    finally:
        await raw.aclose()
        for intake, queue in replicas:
            await intake.close()
            await queue.close()
