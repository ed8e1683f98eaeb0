"""The spend counters budgets are checked against: in process, or shared by replicas on Redis.

    counters = create_counters(settings)
    ok = await counters.reserve([("user:42:day:2026-12-02", 0.50), ("bot:day:...", None)], 0.003)
    totals = await counters.settle(keys, -0.0021)   # the real cost was 0.0009: give the rest back

A key is one scope in one period (`user:42:day:2026-12-02`); its value is what was spent there
plus what calls in flight have reserved. `reserve` is the only check: it adds `amount` to every
key at once, unless a key that has a limit is already at or over it (then nothing is added). So a
limit is overshot by at most the reservations of the calls let through while it was under, which
is one call's for one turn, and one per turn in flight when turns run side by side.

On Redis the check and the additions are one script, atomic across replicas; a key lives until
a little after its period ends. A call costs two round trips: its reservation, and its settlement,
which also counts an unpriced call and answers the keys' totals (the 80 % alert reads them). In
process a restart would forget the spend, so the bot seeds the counters of the current periods
from the ledger at start-up (`seed`, which on Redis only fills keys no replica has yet).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bot.config import Settings

log = logging.getLogger(__name__)

# (key, limit in USD or None for a key that is only counted)
Limited = tuple[str, float | None]

# Sums of floats settle a hair off the figure (0.0099999 for 0.01): a key within this of its
# limit is at it.
EPSILON = 1e-9

# Keys outlive their period by this long (a day's key is read for /usage until it is gone).
KEEP_SECONDS = 40 * 86_400


class SpendCounters(Protocol):
    async def reserve(
        self, keys: Sequence[Limited], amount: float, *, check: bool = True
    ) -> str | None:
        """Add `amount` to every key unless (with `check`) a limited key is at or over its
        limit; None when added, else the first key that was over."""
        ...

    async def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> dict[str, float]:
        """Correct a reservation by `delta` (real cost minus reserved) on every key, count the
        call as unpriced there with `unpriced`; each key's total afterwards."""
        ...

    async def totals(self, keys: Sequence[str]) -> dict[str, float]: ...

    async def unpriced(self, keys: Sequence[str]) -> dict[str, int]: ...

    async def seed(self, spent: Mapping[str, float]) -> None:
        """Start keys the process does not have yet from what the ledger says was spent."""
        ...

    async def claim_alert(self, key: str) -> bool:
        """True the first time a key's 80 % alert is claimed (across replicas on Redis)."""
        ...

    async def close(self) -> None: ...


class LocalCounters:
    def __init__(self) -> None:
        self._spent: dict[str, float] = {}
        self._unpriced: dict[str, int] = {}
        self._alerts: set[str] = set()

    async def reserve(
        self, keys: Sequence[Limited], amount: float, *, check: bool = True
    ) -> str | None:
        if check:
            for key, limit in keys:
                if limit is not None and self._spent.get(key, 0.0) >= limit - EPSILON:
                    return key
        for key, _ in keys:
            self._spent[key] = self._spent.get(key, 0.0) + amount
        return None

    async def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> dict[str, float]:
        for key in keys:
            self._spent[key] = max(0.0, self._spent.get(key, 0.0) + delta)
            if unpriced:
                self._unpriced[key] = self._unpriced.get(key, 0) + 1
        return {key: self._spent[key] for key in keys}

    async def totals(self, keys: Sequence[str]) -> dict[str, float]:
        return {key: self._spent.get(key, 0.0) for key in keys}

    async def unpriced(self, keys: Sequence[str]) -> dict[str, int]:
        return {key: self._unpriced.get(key, 0) for key in keys}

    async def seed(self, spent: Mapping[str, float]) -> None:
        for key, value in spent.items():
            self._spent.setdefault(key, value)

    async def claim_alert(self, key: str) -> bool:
        if key in self._alerts:
            return False
        self._alerts.add(key)
        return True

    async def close(self) -> None:
        return None


# KEYS: the scope keys. ARGV[1]: the amount; ARGV[2]: 1 to check; ARGV[3]: seconds to keep;
# ARGV[4..]: each key's limit ('' for none). Returns 0 when added, else the 1-based index of the
# first key at or over its limit.
_RESERVE = """
local amount = tonumber(ARGV[1])
if ARGV[2] == '1' then
  for i, key in ipairs(KEYS) do
    local limit = ARGV[3 + i]
    if limit ~= '' then
      local spent = tonumber(redis.call('GET', key) or '0')
      if spent >= tonumber(limit) - 1e-9 then return i end
    end
  end
end
for _, key in ipairs(KEYS) do
  redis.call('INCRBYFLOAT', key, amount)
  redis.call('EXPIRE', key, tonumber(ARGV[3]))
end
return 0
"""

# KEYS: the scope keys, then (with ARGV[3] == '1') their unpriced counters, in the same order.
# ARGV[1]: the delta; ARGV[2]: seconds to keep. Returns each scope key's total afterwards, as
# text (a Lua number would reach the client truncated to an integer). Settle never takes a key
# below 0 (a reservation settled after its key expired).
_SETTLE = """
local n = #KEYS
if ARGV[3] == '1' then n = n / 2 end
local keep = tonumber(ARGV[2])
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local value
  if tonumber(ARGV[1]) ~= 0 then
    value = redis.call('INCRBYFLOAT', key, ARGV[1])
    if tonumber(value) < 0 then
      redis.call('SET', key, '0')
      value = '0'
    end
    redis.call('EXPIRE', key, keep)
  else
    value = redis.call('GET', key) or '0'
  end
  if ARGV[3] == '1' then
    redis.call('INCR', KEYS[n + i])
    redis.call('EXPIRE', KEYS[n + i], keep)
  end
  out[i] = value
end
return out
"""


class RedisCounters:
    def __init__(self, redis_url: str, *, prefix: str = "coach-bot:spend") -> None:
        from bot.services.redis_client import service_client

        self._prefix = prefix
        self._client: Any = service_client(redis_url)
        self._reserve: Any = self._client.register_script(_RESERVE)
        self._settle: Any = self._client.register_script(_SETTLE)

    def _k(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def reserve(
        self, keys: Sequence[Limited], amount: float, *, check: bool = True
    ) -> str | None:
        args: list[Any] = [repr(float(amount)), "1" if check else "0", KEEP_SECONDS]
        args += ["" if limit is None else repr(float(limit)) for _, limit in keys]
        index = int(await self._reserve(keys=[self._k(key) for key, _ in keys], args=args))
        return None if index == 0 else keys[index - 1][0]

    async def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> dict[str, float]:
        if not keys:
            return {}
        names = [self._k(key) for key in keys]
        if unpriced:
            names += [self._k(f"{key}:unpriced") for key in keys]
        values = await self._settle(
            keys=names, args=[repr(float(delta)), KEEP_SECONDS, "1" if unpriced else "0"]
        )
        return {key: float(value) for key, value in zip(keys, values, strict=True)}

    async def totals(self, keys: Sequence[str]) -> dict[str, float]:
        if not keys:
            return {}
        values = await self._client.mget([self._k(key) for key in keys])
        return {key: float(value or 0.0) for key, value in zip(keys, values, strict=True)}

    async def unpriced(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        values = await self._client.mget([self._k(f"{key}:unpriced") for key in keys])
        return {key: int(value or 0) for key, value in zip(keys, values, strict=True)}

    async def seed(self, spent: Mapping[str, float]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in spent.items():
                pipe.set(self._k(key), repr(float(value)), nx=True, ex=KEEP_SECONDS)
            await pipe.execute()

    async def claim_alert(self, key: str) -> bool:
        return bool(
            await self._client.set(self._k(f"{key}:alerted"), "1", nx=True, ex=KEEP_SECONDS)
        )

    async def close(self) -> None:
        await self._client.aclose()


def create_counters(settings: Settings) -> SpendCounters:
    if settings.redis_url:
        return RedisCounters(settings.redis_url)
    return LocalCounters()
