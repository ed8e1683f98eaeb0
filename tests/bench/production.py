"""`e2e_load --production`, `--replicas` and `--burst`: the set-up operators run, and its figures.

- `production_env(users)`: every feature of issues 14-17 on, over InsForge, Redis and a webhook
  (tracing is the rig's): the call ledger, a user budget with a limit (high enough never to
  refuse: the check runs on every call), ACCESS_MODE=allowlist over the load's users, and
  archives (`seed_archives`) for every `ARCHIVE_EVERY`-th chat of the load;
- `InsForgeCount`: the fake InsForge's request log over the measured window, per turn and by
  kind, and `plain_turn`: the requests of one plain turn of a warm chat, alone on the bot
  (its user recorded, facts known, summary up to date): the figure decision 0020 is about.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.bench.harness import Load, TrackingTelegramServer

# Its own database (the tests use 0), emptied before each run: rate-limit windows, budget counters
# and intake streams of the same user ids would otherwise carry over from a run a minute before.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
# One chat in this many of the load keeps an archive of notes (searched on every message).
ARCHIVE_EVERY = 10
# A user budget that applies (so every model call is reserved and settled) and is never reached.
BUDGET_USER_DAILY_USD = "1000"
NOTES = (
    b"Sleep notes. A fixed wind-down routine helps after night shifts: dim the lights an hour "
    b"before bed, keep the bedroom cool and dark, and put the phone in another room.\n\n"
    b"Caffeine stays in the body for hours; stop coffee six hours before sleeping.\n"
)


def production_env(users: Iterable[int]) -> dict[str, str]:
    return {
        "REDIS_URL": REDIS_URL,
        "LEDGER_ENABLED": "true",
        "BUDGET_USER_DAILY_USD": BUDGET_USER_DAILY_USD,
        "ACCESS_MODE": "allowlist",
        "ALLOWED_USER_IDS": ",".join(str(u) for u in users),
    }


def replica_env() -> dict[str, str]:
    """What several replicas need besides shared storage (InsForge): Redis."""
    return {"REDIS_URL": REDIS_URL}


async def empty_redis() -> None:
    """Forget what earlier runs left in the bench's Redis database."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


async def seed_archives(tg: TrackingTelegramServer, users: list[int], timeout: float = 120) -> int:
    """Each user sends a notes file in their private chat; how many the bot added in time."""
    for user in users:
        tg.user_document(NOTES, file_name="sleep.txt", user_id=user)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    added: set[int] = set()
    while len(added) < len(users) and loop.time() < deadline:
        for user in users:
            if user not in added and any(
                m.text.startswith("Added ") for m in tg.chat_messages(user)
            ):
                added.add(user)
        await asyncio.sleep(0.1)
    return len(added)


def request_kind(method: str, path: str) -> str:
    """`rpc/turn_context`, `GET messages`...: what a request of the fake's log was."""
    name = path.rsplit("/", 1)[-1]
    if "/rpc/" in path:
        return f"rpc/{name}"
    return f"{method} {name}"


@dataclass
class InsForgeCount:
    """The fake InsForge's requests from `start` on (its log is `[(method, path, query)]`)."""

    log: list[tuple[str, str, str]]
    start: int = 0

    @classmethod
    def from_now(cls, insforge: Any) -> InsForgeCount:
        return cls(insforge.requests, len(insforge.requests))

    def kinds(self) -> Counter[str]:
        return Counter(request_kind(m, p) for m, p, _ in self.log[self.start :])

    def summary(self, turns: int) -> dict[str, Any]:
        kinds = self.kinds()
        total = sum(kinds.values())
        return {
            "per_turn": total / turns if turns else float("nan"),
            "by_kind": {k: n / turns for k, n in kinds.most_common()} if turns else {},
        }


async def plain_turn(
    tg: TrackingTelegramServer,
    insforge: Any,
    chat: int,
    seq: int,
    idle: Any,
    timeout: float = 30.0,
) -> list[str]:
    """Send one message in the warm `chat`, alone on the bot; the kinds of the InsForge requests
    it made until the bot is idle again (`idle()`: background steps done, ledger written)."""
    await idle()
    count = InsForgeCount.from_now(insforge)
    load = Load(tg, first_chat=chat)
    message = load.send(chat, seq)
    try:
        await asyncio.wait_for(message.done.wait(), timeout)
    except TimeoutError:
        # Reported, not raised: the run's other figures still print (a bot that left the chat
        # waiting behind a stuck queue entry, say).
        return [f"NOT ANSWERED in {timeout:g} s"]
    await idle()
    return [request_kind(m, p) for m, p, _ in count.log[count.start :]]


def format_kinds(by_kind: dict[str, float], limit: int = 14) -> str:
    return ", ".join(f"{kind} {n:.2f}" for kind, n in list(by_kind.items())[:limit])
