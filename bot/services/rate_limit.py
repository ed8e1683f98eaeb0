"""USER_MESSAGES_PER_MINUTE: how many messages one user may send in any 60 seconds.

    limiter = create_rate_limiter(settings)
    verdict = await limiter.hit(user_id)
    if not verdict.allowed:
        if verdict.notify: ...  # one kind notice per minute
        return                  # and no model call

A sliding window (not a per-minute counter): a flood of any length that straddles a minute
boundary still gets at most the limit's worth of messages through in any 60 s. Only the messages
let through count, so a user who keeps flooding is let through again as their old messages age
out of the window, at the limit's pace.

Without Redis each process counts on its own; with `REDIS_URL` every replica shares one window
per user (one script call per message, atomic in Redis, on Redis's clock). When Redis does not
answer, the process falls back to its own count (logged once) rather than refusing or letting
everything through.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bot.config import Settings

log = logging.getLogger(__name__)

WINDOW = 60.0
# Users whose windows are kept in process (the least recently seen are forgotten first).
REMEMBERED_USERS = 20_000


@dataclass(frozen=True, slots=True)
class RateVerdict:
    allowed: bool
    # Not allowed, and the first refusal of this window: send the notice.
    notify: bool = False


ALLOWED = RateVerdict(True)


class RateLimiter(Protocol):
    limit: int

    async def hit(self, user_id: int) -> RateVerdict: ...

    async def close(self) -> None: ...


class LocalRateLimiter:
    """A sliding window per user in this process."""

    def __init__(
        self,
        limit: int,
        *,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        remember: int = REMEMBERED_USERS,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._remember = remember
        # user id -> (times of the messages let through, when the last notice went out)
        self._users: OrderedDict[int, tuple[deque[float], list[float]]] = OrderedDict()

    def hit_now(self, user_id: int) -> RateVerdict:
        now = self._clock()
        known = self._users.get(user_id)
        if known is None:
            known = (deque(), [float("-inf")])
            self._users[user_id] = known
            while len(self._users) > self._remember:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user_id)
        times, noticed = known
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) < self.limit:
            times.append(now)
            return ALLOWED
        if now - noticed[0] >= self.window:
            noticed[0] = now
            return RateVerdict(False, notify=True)
        return RateVerdict(False)

    async def hit(self, user_id: int) -> RateVerdict:
        return self.hit_now(user_id)

    async def close(self) -> None:
        return None


# KEYS: the user's window (a sorted set of message times), their notice flag.
# ARGV: the limit, the window in ms, a unique member for this message.
# Returns 0 (let through), 1 (refused: send the notice), 2 (refused, already told).
_HIT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then
  return 1
end
return 2
"""


class RedisRateLimiter:
    """One sliding window per user shared by every replica."""

    def __init__(
        self, redis_url: str, limit: int, *, window: float = WINDOW, prefix: str = "coach-bot:rl"
    ) -> None:
        from bot.services.redis_client import service_client

        self.limit = limit
        self.window = window
        self._prefix = prefix
        self._client: Any = service_client(redis_url)
        self._script: Any = self._client.register_script(_HIT_SCRIPT)
        self._local = LocalRateLimiter(limit, window=window)
        self._degraded = False

    async def hit(self, user_id: int) -> RateVerdict:
        from redis.exceptions import RedisError

        keys = [f"{self._prefix}:{user_id}", f"{self._prefix}:{user_id}:told"]
        try:
            answer = await self._script(
                keys=keys, args=[self.limit, int(self.window * 1000), uuid.uuid4().hex]
            )
        except (RedisError, OSError) as exc:
            if not self._degraded:
                log.warning(
                    "rate limit: Redis did not answer (%s); counting in this process until it does",
                    type(exc).__name__,
                )
                self._degraded = True
            return self._local.hit_now(user_id)
        if self._degraded:
            log.info("rate limit: Redis answers again; counting there")
            self._degraded = False
        code = int(answer)
        return ALLOWED if code == 0 else RateVerdict(False, notify=code == 1)

    async def close(self) -> None:
        await self._client.aclose()


class NoRateLimit:
    limit = 0

    async def hit(self, user_id: int) -> RateVerdict:
        return ALLOWED

    async def close(self) -> None:
        return None


def create_rate_limiter(settings: Settings) -> RateLimiter:
    limit = settings.user_messages_per_minute
    if limit <= 0:
        return NoRateLimit()
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, limit)
    return LocalRateLimiter(limit)
