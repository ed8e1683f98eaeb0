"""Benchmark: the client CPU of one Redis command, redis-py's default pool against the bot's
waiting pool (`bot.services.redis_client.WaitingPool`) and redis-py's `BlockingConnectionPool`
(what decision 0025 first used), alternated in one process.

    python -m tests.bench.redis_clients [--rounds 7] [--commands 5000] [--url redis://...]

Each round sends `--commands` GETs one after another, then the same number ten at a time
(`gather`, as concurrent turns do), on each client in turn; the figure is this process's CPU
(`time.process_time`) per command, so Redis's own time is not in it. A turn makes ~10 Redis
round trips (decision 0023): multiply the difference by ten for its cost a message. Prints;
nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as redis

from bot.services.redis_client import redis_client

KEY = "bench:redis-clients"


async def _sequential(client: redis.Redis, n: int) -> float:
    started = time.process_time()
    for _ in range(n):
        await client.get(KEY)
    return (time.process_time() - started) / n


async def _concurrent(client: redis.Redis, n: int) -> float:
    started = time.process_time()
    for _ in range(n // 10):
        await asyncio.gather(*(client.get(KEY) for _ in range(10)))
    return (time.process_time() - started) / n


async def main(url: str, rounds: int, commands: int) -> None:
    clients = {
        # What the intake, the chat queue and the FSM storage built before decision 0025.
        "default pool": redis.from_url(url, socket_connect_timeout=2, socket_timeout=2),
        "waiting pool": redis_client(url),
        "blocking pool": redis.Redis.from_pool(
            redis.BlockingConnectionPool.from_url(
                url, max_connections=200, timeout=5, socket_connect_timeout=2, socket_timeout=2
            )
        ),
    }
    runs: dict[str, dict[str, list[float]]] = {
        name: {"sequential": [], "ten at a time": []} for name in clients
    }
    modes: dict[str, Callable[[redis.Redis, int], Awaitable[float]]] = {
        "sequential": _sequential,
        "ten at a time": _concurrent,
    }
    try:
        for client in clients.values():  # connections opened, first-call costs paid
            for mode in modes.values():
                await mode(client, 500)
        for _ in range(rounds):
            for name, client in clients.items():
                for mode_name, mode in modes.items():
                    runs[name][mode_name].append(await mode(client, commands))
    finally:
        for client in clients.values():
            await client.aclose()
    print(f"Redis client CPU per GET, {rounds} rounds x {commands} commands, alternated")
    for mode_name in modes:
        a = runs["default pool"][mode_name]
        for other in ("waiting pool", "blocking pool"):
            b = runs[other][mode_name]
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            print(
                f"  {mode_name:14} default {statistics.median(a) * 1e6:6.1f} us  "
                f"{other} {statistics.median(b) * 1e6:6.1f} us  ratio "
                f"{statistics.median(ratios):.3f} (pairs {min(ratios):.3f}-{max(ratios):.3f})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--commands", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.rounds, args.commands))
