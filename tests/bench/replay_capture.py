"""What keeping replay inputs costs per model call, measured where it happens: the ledger's
capture wrapper (`LedgerProvider`) around an in-process provider, with the replay keeper
(STORE_PROMPTS on) and without (off), alternated on, off, on, off, ... in one run.

    python -m tests.bench.replay_capture                 # 7 rounds of 20,000 calls each side

A call carries a prompt like the coach's (a system prompt and 12 turns, ~6 KB). The keeper's
writes are not in the figure (they run every 10 s off the reply's path, at most REPLAY_KEEP
rows per agent); the end-to-end A/B is `python -m tests.bench.replay_inputs`. Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence

from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage
from bot.observatory.capture import LedgerProvider, Turn, turn_scope
from bot.pipeline.observer import CURRENT_STEP, StepInfo
from bot.replay.keeper import ReplayKeeper
from bot.storage.ledger_models import LedgerCall
from bot.storage.replay_models import ReplayInput


class Calls:
    def __init__(self) -> None:
        self.n = 0

    def record(self, call: LedgerCall) -> None:
        self.n += 1


class NoRepo:
    async def add_many(self, inputs: Sequence[ReplayInput]) -> None: ...

    async def prune(self, keep: int) -> int:
        return 0

    async def recent(self, agent: str, limit: int) -> list[ReplayInput]:
        return []

    async def clear_chat(self, chat_id: int) -> int:
        return 0


def reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return "Try a fixed wind-down routine."


MESSAGES = [ChatMessage("system", "You are a coach. " * 60)] + [
    ChatMessage("user" if n % 2 == 0 else "assistant", f"turn {n}: " + "words " * 70)
    for n in range(12)
]


async def side(calls: int, keep_inputs: bool) -> float:
    leaf = FunctionProvider(reply, model="m")
    keeper = ReplayKeeper(NoRepo(), keep=50) if keep_inputs else None
    wrapped = LedgerProvider(leaf, Calls(), keeper)
    token = CURRENT_STEP.set(StepInfo("coach", "step", "function:m", "agent"))
    try:
        with turn_scope(Turn("support", 1, 1, turn_id=1)):
            started = time.perf_counter()
            for _ in range(calls):
                await wrapped.complete(MESSAGES, max_tokens=400)
            return (time.perf_counter() - started) / calls * 1e6
    finally:
        CURRENT_STEP.reset(token)


async def main(args: argparse.Namespace) -> int:
    on: list[float] = []
    off: list[float] = []
    await side(2000, True)  # warm-up
    await side(2000, False)
    for _ in range(args.rounds):
        on.append(await side(args.calls, True))
        off.append(await side(args.calls, False))
    diffs = [a - b for a, b in zip(on, off, strict=True)]
    for name, values in (("on ", on), ("off", off)):
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"per call, {name}: {shown} us (median {statistics.median(values):.2f})")
    print(f"keeping the input: median pairwise +{statistics.median(diffs):.2f} us per call")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.replay_capture", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
