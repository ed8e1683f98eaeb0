"""Benchmark: what the access gate, the rate limit and the budgets cost per message (issue 16).

    python -m tests.bench.gate [--rounds 7] [--messages 500]

Per message, as the bot does it: `AccessService.check` (ACCESS_MODE=open, over a real SQLite
file), `LocalRateLimiter.hit`, and a support turn's three model calls (a 1,500-character prompt
each) through `Budgets.guard` over the in-process provider, against the same three calls bare.
Three settings: no budget configured (the default), and a user daily limit (in-process
counters). Rounds alternate the settings in one process (this VM's speed drifts); the figures
are median CPU per message and the difference to bare. Nothing asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.protocol import LLMProvider
from bot.llm.types import ChatMessage, user
from bot.services.access import AccessService
from bot.services.budget_counters import LocalCounters
from bot.services.budgets import Budgets
from bot.services.rate_limit import LocalRateLimiter
from bot.storage.sqlite import SQLiteStorage

PROMPT = [ChatMessage("system", "You are a coach. " * 30), user("I sleep badly at night. " * 40)]
AGENTS = ("extraction", "strategist", "coach")


def _reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return "Try a fixed wind-down routine."


async def _bare(llm: LLMProvider, messages: int) -> float:
    started = time.process_time()
    for _ in range(messages):
        for _agent in AGENTS:
            await llm.complete(PROMPT, max_tokens=400)
    return (time.process_time() - started) / messages


async def _gated(
    llm: LLMProvider,
    access: AccessService,
    limiter: LocalRateLimiter,
    budgets: Budgets,
    messages: int,
) -> float:
    started = time.process_time()
    for n in range(messages):
        user_id = 1000 + n % 200
        await access.check(user_id, user_id, private=True)
        limiter.hit_now(user_id)
        for agent in AGENTS:
            guarded = budgets.guard(agent, llm, user_id=user_id, optional=agent != "coach")
            await guarded.complete(PROMPT, max_tokens=400)
    return (time.process_time() - started) / messages


async def main(rounds: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SQLiteStorage(str(Path(tmp) / "bot.db"))
        await storage.connect()
        try:
            llm = FunctionProvider(_reply, model="bench")
            access = AccessService(storage.access, mode="open", admin_ids=[1])
            limiter = LocalRateLimiter(10**9)
            none = Budgets(storage.budgets, LocalCounters(), env={}, policies={})
            limited = Budgets(
                storage.budgets, LocalCounters(), env={"user:day": 10**6}, policies={}
            )
            for budgets in (none, limited):
                budgets.add_price_source("function", lambda model: (1e-6, 1e-5))
            runs: dict[str, list[float]] = {"bare": [], "no budget": [], "user limit": []}
            await _gated(llm, access, limiter, limited, 50)  # warm-up
            for _ in range(rounds):
                runs["bare"].append(await _bare(llm, messages))
                runs["no budget"].append(await _gated(llm, access, limiter, none, messages))
                runs["user limit"].append(await _gated(llm, access, limiter, limited, messages))
        finally:
            await storage.close()
    bare = statistics.median(runs["bare"])
    print(f"{rounds} rounds x {messages} messages (3 model calls each), CPU per message:")
    for name, values in runs.items():
        median = statistics.median(values)
        extra = "" if name == "bare" else f"  (+{(median - bare) * 1e6:.1f} us)"
        print(f"  {name:<11} median {median * 1e6:8.1f} us{extra}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.messages))
