"""The commands clients send to one Redis database, as the server sees them (MONITOR).

    async with RedisCommands(redis_url) as seen:
        mark = await seen.mark()
        ...                                   # the code under test, on the real Redis
        names = await seen.since(mark)        # ["EVALSHA", "MULTI", "ZADD", "EXPIRE", "EXEC"]
        trips = await seen.round_trips(mark)  # a MULTI ... EXEC block counts once

No client is wrapped: what is counted is what reached the server, from any client of any part
of the bot. Commands a script runs inside Redis (MONITOR's `lua` client) are left out: the
script is one command. `mark`/`since` wait until a token sent after the work has come through
the monitor, so nothing sent before it is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis

_LINE = re.compile(r'^[\d.]+ \[(\d+) ([^\]]+)\] "([^"]*)"(?: "([^"]*)")?')


@dataclass(frozen=True, slots=True)
class Seen:
    client: str
    name: str
    key: str  # the command's first argument (a key for most), "" for none


def round_trips(commands: list[Seen]) -> int:
    """A transaction (redis-py sends MULTI ... EXEC in one write) is one round trip."""
    trips = 0
    open_multi: set[str] = set()
    for command in commands:
        if command.name == "MULTI":
            open_multi.add(command.client)
            trips += 1
        elif command.client in open_multi:
            if command.name in ("EXEC", "DISCARD"):
                open_multi.discard(command.client)
        else:
            trips += 1
    return trips


class RedisCommands:
    def __init__(self, url: str) -> None:
        self._client: Any = redis.from_url(url)
        self._db = int(self._client.connection_pool.connection_kwargs.get("db", 0))
        self._seen: list[Seen] = []
        self._tokens: dict[str, asyncio.Event] = {}
        self._monitor: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RedisCommands:
        self._monitor = self._client.monitor()
        await self._monitor.__aenter__()
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._monitor.__aexit__(None, None, None)
        await self._client.aclose()

    async def _read(self) -> None:
        connection = self._monitor.connection
        while True:
            try:
                raw = await connection.read_response(timeout=None, disconnect_on_error=False)
            except redis.TimeoutError:  # idle longer than the client's socket timeout
                continue
            line = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
            match = _LINE.match(line)
            if match is None:
                continue
            db, client, name = int(match[1]), match[2], match[3].upper()
            if db != self._db or client == "lua":
                continue
            if name == "ECHO":
                token = line.rsplit('"', 2)[-2]
                if token in self._tokens:
                    self._tokens.pop(token).set()
                    continue
            self._seen.append(Seen(client, name, match[4] or ""))

    async def _sync(self) -> None:
        """Everything sent before now has been read off the monitor."""
        token = f"sync-{secrets.token_hex(6)}"
        arrived = self._tokens[token] = asyncio.Event()
        await self._client.echo(token)
        await asyncio.wait_for(arrived.wait(), timeout=5)

    async def mark(self) -> int:
        await self._sync()
        return len(self._seen)

    async def seen(self, mark: int) -> list[Seen]:
        await self._sync()
        return self._seen[mark:]

    async def since(self, mark: int) -> list[str]:
        return [c.name for c in await self.seen(mark)]

    async def round_trips(self, mark: int) -> int:
        return round_trips(await self.seen(mark))
