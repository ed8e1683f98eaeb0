"""Override changes reach other replicas through Redis at once; Redis being down breaks nothing."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from bot.services.override_events import OverrideEvents


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return bool(predicate())


async def test_a_change_published_by_one_replica_reaches_the_other(redis_url: str) -> None:
    channel = f"test-overrides-{uuid.uuid4().hex}"
    seen_a: list[str | None] = []
    seen_b: list[str | None] = []
    a = OverrideEvents(redis_url, seen_a.append, channel=channel)
    b = OverrideEvents(redis_url, seen_b.append, channel=channel)
    try:
        await a.start()
        await b.start()
        assert await a.wait_subscribed(5)
        assert await b.wait_subscribed(5)

        assert await a.publish("strategist") is True

        assert await _wait_until(lambda: seen_b == ["strategist"])
        # The publishing replica invalidates itself directly; its own echo is ignored.
        await asyncio.sleep(0.1)
        assert seen_a == []
    finally:
        await a.close()
        await b.close()


async def test_other_channels_and_malformed_events_are_ignored(redis_url: str) -> None:
    import redis.asyncio as redis

    channel = f"test-overrides-{uuid.uuid4().hex}"
    seen: list[str | None] = []
    events = OverrideEvents(redis_url, seen.append, channel=channel)
    raw = redis.from_url(redis_url)
    try:
        await events.start()
        assert await events.wait_subscribed(5)
        await raw.publish(channel, b"not json")
        await raw.publish(channel + "-other", b'{"agent": "coach", "from": "x"}')
        await raw.publish(channel, b'{"agent": "coach", "from": "elsewhere"}')
        assert await _wait_until(lambda: seen == ["coach"])
        assert events.received == 1
    finally:
        await events.close()
        await raw.aclose()


async def test_redis_down_never_raises_and_publish_reports_failure() -> None:
    seen: list[str | None] = []
    events = OverrideEvents(
        f"redis://127.0.0.1:{_closed_port()}/0", seen.append, channel="unused", max_backoff=0.2
    )
    try:
        await events.start()
        assert await events.wait_subscribed(0.3) is False
        assert await events.publish("coach") is False
        assert seen == []
    finally:
        await events.close()


async def test_listener_reconnects_and_resyncs_after_redis_comes_back(redis_url: str) -> None:
    from tests.fakes.tcp_proxy import TcpProxy

    channel = f"test-overrides-{uuid.uuid4().hex}"
    seen: list[str | None] = []
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        events = OverrideEvents(
            f"redis://127.0.0.1:{proxy.port}/0", seen.append, channel=channel, max_backoff=0.2
        )
        publisher = OverrideEvents(redis_url, lambda _: None, channel=channel)
        try:
            await events.start()
            assert await events.wait_subscribed(5)
            await proxy.cut()
            # A change made while this replica is cut off from Redis is lost on the wire...
            await publisher.publish("coach")
            await asyncio.sleep(0.3)
            assert seen == []
            await proxy.restore()
            # ...so on reconnecting the listener invalidates everything (None).
            assert await _wait_until(lambda: seen == [None])
            await publisher.publish("tutor")
            assert await _wait_until(lambda: seen == [None, "tutor"])
        finally:
            await events.close()
            await publisher.close()


async def test_a_cancelled_close_propagates_the_cancellation() -> None:
    events = OverrideEvents(
        f"redis://127.0.0.1:{_closed_port()}/0", lambda _: None, channel="unused", max_backoff=0.2
    )
    await events.start()
    await asyncio.sleep(0.05)  # the listener is retrying the connection
    closing = asyncio.create_task(events.close())
    await asyncio.sleep(0)  # close() has cancelled the listener and waits for it to end
    closing.cancel()  # shutdown itself is cancelled (e.g. a second Ctrl-C)
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert closing.cancelled()
    await events.close()  # a later close still finishes the job
