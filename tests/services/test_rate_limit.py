"""USER_MESSAGES_PER_MINUTE: a sliding window per user, in process and shared on the real Redis."""

from __future__ import annotations

import asyncio
import secrets

from bot.services.rate_limit import LocalRateLimiter, RedisRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_lets_that_many_through_then_one_notice_per_window() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(3, clock=clock)
    verdicts = [limiter.hit_now(7) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False, False]
    assert [v.notify for v in verdicts] == [False, False, False, True, False, False]
    assert limiter.hit_now(8).allowed  # another user has their own window
    clock.now += 59.9
    assert not limiter.hit_now(7).allowed
    clock.now += 0.2  # the first three are 60.1 s old now
    assert [limiter.hit_now(7).allowed for _ in range(4)] == [True, True, True, False]


def test_a_flood_across_a_minute_boundary_gets_no_second_allowance() -> None:
    # A counter per calendar minute would let 2x the limit through around :59/:00.
    clock = Clock()
    clock.now = 59.0
    limiter = LocalRateLimiter(20, clock=clock)
    allowed = 0
    for _ in range(200):  # 200 messages in 10 s, from :59 to :09
        allowed += limiter.hit_now(1).allowed
        clock.now += 0.05
    assert allowed == 20


async def test_replicas_on_redis_share_one_window(redis_url: str) -> None:
    prefix = f"test-rl-{secrets.token_hex(4)}"
    a = RedisRateLimiter(redis_url, 20, prefix=prefix)
    b = RedisRateLimiter(redis_url, 20, prefix=prefix)
    try:
        verdicts = await asyncio.gather(*((a if i % 2 else b).hit(42) for i in range(60)))
        assert sum(v.allowed for v in verdicts) == 20
        assert sum(v.notify for v in verdicts) == 1
        assert (await a.hit(43)).allowed  # per user
    finally:
        await a.close()
        await b.close()


async def test_redis_down_falls_back_to_counting_in_process() -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0", 2, prefix="unreachable")
    try:
        verdicts = [await limiter.hit(5) for _ in range(3)]
        assert [v.allowed for v in verdicts] == [True, True, False]
    finally:
        await limiter.close()
