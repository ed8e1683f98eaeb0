"""The intake in a Redis stream, shared by the replicas, with the SQLite file behind it.

    intake = RedisIntake.from_url("redis://127.0.0.1:6379/0", bot_id=123, fallback=SqliteIntake(p))

Every entry names the replica that stored it; each replica keeps a lease (a key that expires
`lease` seconds after its last renewal, renewed every third of that). `reclaim()` takes over the
open entries whose replica's lease is gone (stopped, crashed, killed), atomically (a Lua script),
so two replicas never both take one. A replica stopping cleanly drops its lease at once.

Storing is one round trip per batch (one script: skip an update id seen in the last day, add the
rest, move the polling offset), marking done one per update. A webhook update also joins its
chat's queue (`bot.telegram.chat_queue`) in the script that stores it, and leaves it in the
transaction that marks it done: the queue costs no round trip of its own on a turn's way. When
Redis cannot be reached the update goes to the SQLite file instead (keys prefixed `local:`):
losing Redis never loses an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from bot.intake.sqlite import SqliteIntake
from bot.intake.store import REPLY, UPDATE, IntakeError, NewUpdate, QueueEntry, Stored
from bot.services.redis_client import redis_client

log = logging.getLogger(__name__)

LOCAL = "local:"
SEEN_SECONDS = 86_400

# KEYS: stream, offset key. ARGV: owner, seen-key prefix, seen seconds, offset or "", then
# (update_id, chat_id or "", body, received_at) per update. Returns an id or false per update.
_PUT = """
local out = {}
for i = 5, #ARGV, 4 do
  if redis.call('SET', ARGV[2] .. ARGV[i], '1', 'NX', 'EX', ARGV[3]) then
    out[#out + 1] = redis.call('XADD', KEYS[1], '*', 'k', 'update', 'u', ARGV[i],
      'c', ARGV[i + 1], 'b', ARGV[i + 2], 't', ARGV[i + 3], 'o', ARGV[1])
  else
    out[#out + 1] = false
  end
end
if ARGV[4] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if tonumber(ARGV[4]) > current then redis.call('SET', KEYS[2], ARGV[4]) end
end
return out
"""

# KEYS: stream, the chat's queue. ARGV: owner, seen-key prefix, seen seconds, the queue's seconds
# to live, then update_id, chat_id or "", body, received_at. Returns false for an update seen
# before, else {id, 1 when it joined at the queue's head (its oldest member) or 0}.
_PUT_QUEUED = """
if not redis.call('SET', ARGV[2] .. ARGV[5], '1', 'NX', 'EX', ARGV[3]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'k', 'update', 'u', ARGV[5], 'c', ARGV[6],
  'b', ARGV[7], 't', ARGV[8], 'o', ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', ARGV[5], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
return {id, head[1] == ARGV[5] and 1 or 0}
"""

# KEYS: stream, owners hash, attempts hash. ARGV: me, lease-key prefix, "1" to take every entry
# not mine whatever its lease. Returns {id, fields, attempts} for each entry taken over.
_RECLAIM = """
local out = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do
  local id, fields = entry[1], entry[2]
  local owner = redis.call('HGET', KEYS[2], id)
  if not owner then
    for i = 1, #fields, 2 do if fields[i] == 'o' then owner = fields[i + 1] end end
  end
  if owner ~= ARGV[1] and (ARGV[3] == '1' or redis.call('EXISTS', ARGV[2] .. owner) == 0) then
    redis.call('HSET', KEYS[2], id, ARGV[1])
    out[#out + 1] = {id, fields, redis.call('HINCRBY', KEYS[3], id, 1)}
  end
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisIntake:
    def __init__(
        self,
        client: redis.Redis,
        *,
        bot_id: int,
        fallback: SqliteIntake,
        prefix: str = "coachbot:intake",
        lease: float = 15.0,
        owns_client: bool = False,
    ) -> None:
        self._redis = client
        self._fallback = fallback
        self._prefix = f"{prefix}:{bot_id}"
        self._stream = f"{self._prefix}:stream"
        self._owners = f"{self._prefix}:owners"
        self._attempts = f"{self._prefix}:attempts"
        self._offset_key = f"{self._prefix}:offset"
        self._lease_prefix = f"{self._prefix}:replica:"
        self.replica = uuid.uuid4().hex[:16]
        self.lease = lease
        self._owns_client = owns_client
        self._put = client.register_script(_PUT)
        self._put_queued = client.register_script(_PUT_QUEUED)
        self._reclaim = client.register_script(_RECLAIM)
        self._renewer: asyncio.Task[None] | None = None
        self._local_reclaimed = False
        self._warned = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisIntake:
        return cls(redis_client(url), owns_client=True, **kwargs)

    def _redis_failed(self, exc: BaseException) -> None:
        if not self._warned:
            log.warning(
                "intake: Redis unavailable (%s); storing updates in %s meanwhile",
                type(exc).__name__,
                self._fallback.path,
            )
            self._warned = True

    async def start(self) -> None:
        await self._fallback.start()
        with contextlib.suppress(RedisError, OSError):
            await self._renew()
        self._renewer = asyncio.create_task(self._keep_lease(), name="intake-lease")

    async def _renew(self) -> None:
        await self._redis.set(self._lease_prefix + self.replica, "1", px=int(self.lease * 1000))

    async def _keep_lease(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self._renew()
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)

    async def offset(self) -> int | None:
        local = await self._fallback.offset()
        try:
            raw = await self._redis.get(self._offset_key)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return local
        shared = int(raw) if raw is not None else None
        return max((v for v in (shared, local) if v is not None), default=None)

    async def put(self, updates: Sequence[NewUpdate], *, offset: int | None) -> list[str | None]:
        now = repr(time.time())
        args: list[Any] = [self.replica, f"{self._prefix}:seen:", SEEN_SECONDS, offset or ""]
        for update_id, chat_id, body in updates:
            args += [update_id, "" if chat_id is None else chat_id, body, now]
        try:
            ids = await self._put(keys=[self._stream, self._offset_key], args=args)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            keys = await self._fallback.put(updates, offset=offset)
            return [None if k is None else LOCAL + k for k in keys]
        self._warned = False
        return [None if not i else _text(i) for i in ids]

    async def put_queued(
        self, update: NewUpdate, queue: QueueEntry
    ) -> tuple[str | None, bool | None]:
        update_id, chat_id, body = update
        args: list[Any] = [self.replica, f"{self._prefix}:seen:", SEEN_SECONDS, queue.ttl]
        args += [update_id, "" if chat_id is None else chat_id, body, repr(time.time())]
        try:
            answer = await self._put_queued(keys=[self._stream, queue.key], args=args)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            (key,) = await self._fallback.put([update], offset=None)
            return (None if key is None else LOCAL + key), None
        self._warned = False
        if not answer:
            return None, None
        entry_id, head = answer
        return _text(entry_id), bool(int(head))

    async def done(self, key: str, *, leave: QueueEntry | None = None) -> bool:
        if key.startswith(LOCAL):
            await self._fallback.done(key.removeprefix(LOCAL))
            return False
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xdel(self._stream, key)
                pipe.hdel(self._owners, key)
                pipe.hdel(self._attempts, key)
                if leave is not None:
                    pipe.zrem(leave.key, leave.member)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Taken up again after a restart: answered twice, never lost.
            self._redis_failed(exc)
            return False
        return leave is not None

    async def defer_reply(
        self, update_key: str | None, update_id: int, chat_id: int, body: str
    ) -> str:
        if update_key is not None and update_key.startswith(LOCAL):
            key = await self._fallback.defer_reply(
                update_key.removeprefix(LOCAL), update_id, chat_id, body
            )
            return LOCAL + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self._stream,
                    {
                        "k": REPLY,
                        "u": update_id,
                        "c": chat_id,
                        "b": body,
                        "t": repr(time.time()),
                        "o": self.replica,
                    },
                )
                if update_key is not None:
                    pipe.xdel(self._stream, update_key)
                    pipe.hdel(self._owners, update_key)
                    pipe.hdel(self._attempts, update_key)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            # The update stays open in Redis; without Redis it cannot be closed now. The reply
            # goes to the file: after a restart both are taken up (the reply may go out twice).
            return LOCAL + await self._fallback.defer_reply(None, update_id, chat_id, body)
        return _text(results[0])

    async def reclaim(self, *, everything: bool = False) -> list[Stored]:
        """`everything`: also the entries of replicas whose lease still runs (the polling replica
        at its start: only one process polls a bot, so a live lease is a killed predecessor's)."""
        entries: list[Stored] = []
        if not self._local_reclaimed:
            # The file is this process's alone: what is open in it was left by an earlier run.
            entries += [
                Stored(
                    LOCAL + e.key, e.kind, e.update_id, e.chat_id, e.body, e.received_at, e.attempts
                )
                for e in await self._fallback.reclaim()
            ]
            self._local_reclaimed = True
        try:
            taken = await self._reclaim(
                keys=[self._stream, self._owners, self._attempts],
                args=[self.replica, self._lease_prefix, "1" if everything else "0"],
            )
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            taken = []
        for entry_id, flat, attempts in taken:
            fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
            chat = fields.get("c", "")
            entries.append(
                Stored(
                    key=_text(entry_id),
                    kind=REPLY if fields.get("k") == REPLY else UPDATE,
                    update_id=int(fields.get("u", "0")),
                    chat_id=int(chat) if chat else None,
                    body=fields.get("b", ""),
                    received_at=float(fields.get("t", "0")),
                    attempts=int(attempts),
                )
            )
        return sorted(entries, key=lambda e: e.order)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.wait([self._renewer])
            self._renewer = None
        # Stopped cleanly: what is still open (cancelled at the deadline) is another replica's
        # to take at once, or this one's after its restart.
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._lease_prefix + self.replica)
        if self._owns_client:
            await self._redis.aclose()
        await self._fallback.close()


__all__ = ["IntakeError", "RedisIntake"]
