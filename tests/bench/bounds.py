"""Benchmark: what the output bound and the prompt budget cost per call (issue 19, item 5).

    python -m tests.bench.bounds [--rounds 7] [--calls 300]

A: a streamed reply through `BoundedProvider` (counting every delta's bytes, joining surrogate
pairs); B: the same reply from the bare in-process provider. The reply is 2,400 characters in
8-character chunks (300 deltas, about a full coach answer), far under the bound, so both yield the
same text. Rounds alternate A B A B in one process (this VM's speed drifts), and the figure is
the median per-call CPU of each and their difference. The prompt budget's fitting
(`fit_memory` of 20 long messages, 50 facts and a summary) is timed the same way against
the old fixed window (the last 12 messages, unmeasured). Nothing asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence

from bot.agents.budget import fit_memory
from bot.llm.bounds import BoundedProvider
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.protocol import LLMProvider
from bot.llm.types import ChatMessage, user
from bot.storage.models import StoredMessage

REPLY = "A steady wind-down routine helps you sleep. " * 55  # ~2,400 characters


def _reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return REPLY


async def _stream_cpu(llm: LLMProvider, calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        async for _chunk in llm.stream([user("hi")], max_tokens=3000):
            pass
    return (time.process_time() - started) / calls * 1e6


def _fit_cpu(calls: int, fitted: bool) -> float:
    history = [
        StoredMessage(chat_id=1, role="user" if i % 2 else "assistant", text="word " * 400)
        for i in range(20)
    ]
    facts = [f"fact {i} about the user's week" for i in range(50)]
    started = time.process_time()
    for _ in range(calls):
        if fitted:
            fit_memory("a summary " * 100, facts, history, budget=3000, window=12)
        else:
            list(history)[-12:]
    return (time.process_time() - started) / calls * 1e6


async def main(rounds: int, calls: int) -> None:
    bare = FunctionProvider(_reply, provider="test", model="m", chunk_size=8)
    bounded = BoundedProvider(bare)
    a: list[float] = []
    b: list[float] = []
    fit: list[float] = []
    window: list[float] = []
    for _ in range(rounds):
        a.append(await _stream_cpu(bounded, calls))
        b.append(await _stream_cpu(bare, calls))
        fit.append(_fit_cpu(calls, True))
        window.append(_fit_cpu(calls, False))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"stream of 300 deltas, CPU per call (median of {rounds} rounds x {calls} calls):")
    print(f"  A bounded {ma:8.1f} us   B bare {mb:8.1f} us   A-B {ma - mb:+7.1f} us")
    print(f"  A per round: {', '.join(f'{x:.0f}' for x in a)}")
    print(f"  B per round: {', '.join(f'{x:.0f}' for x in b)}")
    mf, mw = statistics.median(fit), statistics.median(window)
    print("prompt memory per agent call (20 messages of 2 KB, 50 facts, a summary):")
    print(f"  fit_memory {mf:8.1f} us   last-12 window {mw:8.1f} us   diff {mf - mw:+7.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
