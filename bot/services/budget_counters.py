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
a little after its period ends. A call's reservation, and its settlement (which also counts an
unpriced call and answers the keys' totals the 80 % alert reads), share round trips with the
other calls in flight: what the process asks in one turn of the event loop goes as one script
call, and a settlement, which no reply waits for, waits up to `SETTLE_WINDOW` for a reservation
to ride with. Alone, a call costs two round trips; in a burst about one (decision 0029). In
process a restart would forget the spend, so the bot seeds the counters of the current periods
from the ledger at start-up (`seed`, which on Redis only fills keys no replica has yet).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Generator, Mapping, Sequence
from dataclasses import dataclass
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

# How long a settlement waits for a reservation to share its round trip with. Only the 80 %
# alert (and a limit within one call of being reached) sees it later by this much; a reply
# never waits for it.
SETTLE_WINDOW = 0.02
# Operations in one script call at most (its arguments grow with each).
MAX_BATCH = 64


class SpendCounters(Protocol):
    async def reserve(
        self, keys: Sequence[Limited], amount: float, *, check: bool = True
    ) -> str | None:
        """Add `amount` to every key unless (with `check`) a limited key is at or over its
        limit; None when added, else the first key that was over."""
        ...

    def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> Awaitable[dict[str, float]]:
        """Correct a reservation by `delta` (real cost minus reserved) on every key, count the
        call as unpriced there with `unpriced`; answers each key's total afterwards. Queued when
        called: a reservation asked after it is counted after it, even before it is awaited."""
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

    def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> Awaitable[dict[str, float]]:
        for key in keys:
            self._spent[key] = max(0.0, self._spent.get(key, 0.0) + delta)
            if unpriced:
                self._unpriced[key] = self._unpriced.get(key, 0) + 1
        return _Ready({key: self._spent[key] for key in keys})

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


# One script call, many operations, in the order they were asked. ARGV[1]: seconds to keep; then
# each operation: its kind, the number n of its scope keys (in KEYS, in order), and
#   'r' (reserve): the amount, '1' to check, then each key's limit ('' for none). Answers 0 when
#       added, else the 1-based index of the first key at or over its limit (nothing is added);
#   's' (settle): the delta, '1' to count an unpriced call (then its n unpriced counters follow
#       its keys in KEYS). Answers each key's total afterwards, as text (a Lua number would reach
#       the client truncated to an integer). Never takes a key below 0 (a reservation settled
#       after its key expired).
_BATCH = """
local keep = tonumber(ARGV[1])
local out = {}
local a, k = 2, 1
while a <= #ARGV do
  local kind, n = ARGV[a], tonumber(ARGV[a + 1])
  if kind == 'r' then
    local amount = tonumber(ARGV[a + 2])
    local over = 0
    if ARGV[a + 3] == '1' then
      for i = 1, n do
        local limit = ARGV[a + 3 + i]
        if limit ~= '' then
          local spent = tonumber(redis.call('GET', KEYS[k + i - 1]) or '0')
          if spent >= tonumber(limit) - 1e-9 then
            over = i
            break
          end
        end
      end
    end
    if over == 0 then
      for i = 1, n do
        redis.call('INCRBYFLOAT', KEYS[k + i - 1], amount)
        redis.call('EXPIRE', KEYS[k + i - 1], keep)
      end
    end
    out[#out + 1] = over
    a = a + 4 + n
    k = k + n
  else
    local delta = ARGV[a + 2]
    local unpriced = ARGV[a + 3] == '1'
    local totals = {}
    for i = 1, n do
      local key = KEYS[k + i - 1]
      local value
      if tonumber(delta) ~= 0 then
        value = redis.call('INCRBYFLOAT', key, delta)
        if tonumber(value) < 0 then
          redis.call('SET', key, '0')
          value = '0'
        end
        redis.call('EXPIRE', key, keep)
      else
        value = redis.call('GET', key) or '0'
      end
      if unpriced then
        redis.call('INCR', KEYS[k + n + i - 1])
        redis.call('EXPIRE', KEYS[k + n + i - 1], keep)
      end
      totals[i] = value
    end
    out[#out + 1] = totals
    a = a + 4
    if unpriced then k = k + 2 * n else k = k + n end
  end
end
return out
"""


class _Ready:
    """An answer that is already there: awaiting it returns it, and dropping it unawaited is
    fine (LocalCounters applies a settlement when it is called)."""

    __slots__ = ("totals",)

    def __init__(self, totals: dict[str, float]) -> None:
        self.totals = totals

    def __await__(self) -> Generator[Any, None, dict[str, float]]:
        yield from ()
        return self.totals


async def _totals(keys: Sequence[str], answer: asyncio.Future[Any]) -> dict[str, float]:
    values = await answer
    return {key: float(value) for key, value in zip(keys, values, strict=True)}


@dataclass(slots=True)
class _Operation:
    keys: list[str]  # with the prefix
    args: list[str]
    answer: asyncio.Future[Any]


class RedisCounters:
    def __init__(self, redis_url: str, *, prefix: str = "coach-bot:spend") -> None:
        from bot.services.redis_client import service_client

        self._prefix = prefix
        self._client: Any = service_client(redis_url)
        self._batch: Any = self._client.register_script(_BATCH)
        self._pending: list[_Operation] = []
        self._soon: asyncio.Handle | None = None  # a flush at the end of this loop turn
        self._later: asyncio.TimerHandle | None = None  # settlements' SETTLE_WINDOW
        self._sending: set[asyncio.Task[None]] = set()

    def _k(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def reserve(
        self, keys: Sequence[Limited], amount: float, *, check: bool = True
    ) -> str | None:
        args = ["r", str(len(keys)), repr(float(amount)), "1" if check else "0"]
        args += ["" if limit is None else repr(float(limit)) for _, limit in keys]
        index = int(await self._ask([self._k(key) for key, _ in keys], args, urgent=True))
        return None if index == 0 else keys[index - 1][0]

    def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> Awaitable[dict[str, float]]:
        if not keys:
            return _Ready({})
        names = [self._k(key) for key in keys]
        if unpriced:
            names += [self._k(f"{key}:unpriced") for key in keys]
        args = ["s", str(len(keys)), repr(float(delta)), "1" if unpriced else "0"]
        return _totals(keys, self._ask(names, args, urgent=False))

    def _ask(self, keys: list[str], args: list[str], *, urgent: bool) -> asyncio.Future[Any]:
        """Queue one operation for the next script call: at the end of this loop turn when a
        caller waits on it (`urgent`: a reservation), else within SETTLE_WINDOW."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Operation(keys, args, answer))
        if urgent or len(self._pending) >= MAX_BATCH:
            if self._soon is None:
                self._soon = loop.call_soon(self._flush)
        elif self._later is None and self._soon is None:
            self._later = loop.call_later(SETTLE_WINDOW, self._flush)
        return answer

    def _flush(self) -> None:
        if self._later is not None:
            self._later.cancel()
        self._soon = self._later = None
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.ensure_future(self._send(pending[start : start + MAX_BATCH]))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Operation]) -> None:
        keys = [key for op in batch for key in op.keys]
        args = [str(KEEP_SECONDS), *(arg for op in batch for arg in op.args)]
        try:
            answers = await self._batch(keys=keys, args=args)
        except Exception as exc:  # each caller falls back on its own (Budgets: in process)
            for op in batch:
                if not op.answer.done():
                    op.answer.set_exception(exc)
            return
        except asyncio.CancelledError:  # the loop shutting down: nobody is left hanging on it
            for op in batch:
                op.answer.cancel()
            raise
        for op, answer in zip(batch, answers, strict=True):
            if not op.answer.done():  # its caller may have been cancelled
                op.answer.set_result(answer)

    async def flush(self) -> None:
        """Send what is queued now and wait for every script call in flight."""
        if self._pending:
            self._flush()
        while self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)

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
        await self.flush()
        await self._client.aclose()


def create_counters(settings: Settings) -> SpendCounters:
    if settings.redis_url:
        return RedisCounters(settings.redis_url)
    return LocalCounters()
