"""Fault suite: the real bot under steady load while its world fails, one fault at a time.

    python -m tests.bench.fault_suite                        # every fault, 30 s outages, InsForge
    python -m tests.bench.fault_suite --duration 5 --only model-500,sigterm
    python -m tests.bench.fault_suite --sqlite               # no PostgreSQL: database fault skipped

The set-up is the benchmark's (tests/bench/harness.py): `python -m bot` in its own process, the
fake Bot API and model servers on 127.0.0.1, with FALLBACK_MODELS set to a backup model and
LLM_TIMEOUT short enough (2 s) that a hanging model is given up in reasonable time. One bot runs
the whole suite (the faults come one after another, as they would in production); the SIGTERM
fault restarts it.

Faults, each as: load before (2 s), the fault for `--duration` s (default 30), load after (5 s):
- model-500 / model-429 / model-hang: the default model fails; the backup must answer;
- models-down: every model answers 500;
- database-down: InsForge answers 503 to everything (its `down` mode: what an outage of the
  hosted database looks like to the bot). SQLite cannot be taken away from a process that has the
  file open (and root ignores file modes), so with `--sqlite` this fault is skipped;
- telegram-429: every second `sendMessage` is answered 429 `retry_after=1`;
- telegram-5xx: every `sendMessage` is answered 502 for the whole fault;
- sigterm: SIGTERM while messages are in flight, then the bot is started again at once;
- sigterm-backlog: one chat has a backlog of `BACKLOG` messages and the model takes
  `SLOW_MODEL` s a call when SIGTERM arrives (more than SHUTDOWN_TIMEOUT, 5 s here, can finish),
  then the bot is started again at once;
- kill-9: the same, with SIGKILL (no shutdown at all).

Per fault it prints: messages sent, answered, apologised for (a `sendMessage` that is not the
answer: "Sorry... try again"), lost, and recovery time. Lost = a message with no answer and no
apology, plus an answered message whose user message or reply is missing from the database
(read back directly: SQLite file or PostgreSQL) although the user was not told anything went
wrong. Recovery = from the moment the fault ends (for sigterm: the SIGTERM) until the first message
sent after it is answered. Nothing asserts; the exit status is 1 when any message was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.harness import (
    BACKUP_MODEL,
    MODEL,
    BotConfig,
    Load,
    Message,
    Rig,
    bench_reply,
    load_average,
    percentile,
    print_grid,
    rig,
)
from tests.fakes.llm_server import Fault

FAULTS = (
    "model-500",
    "model-429",
    "model-hang",
    "models-down",
    "database-down",
    "telegram-429",
    "telegram-5xx",
    "sigterm",
    "sigterm-backlog",
    "kill-9",
)
RESTARTS = ("sigterm", "sigterm-backlog", "kill-9")
BACKLOG = 12  # messages queued in one chat when the bot is stopped
SLOW_MODEL = 1.5  # seconds a model call takes while the backlog builds up


@dataclass
class Options:
    duration: float = 30.0
    before: float = 2.0
    after: float = 5.0
    rate: float = 20.0
    chats: int = 40
    storage: str = "insforge"
    webhook: bool = False
    only: tuple[str, ...] = FAULTS
    latency: float = 0.1
    quiet: bool = False
    redis: str | None = None


@dataclass
class Outcome:
    fault: str
    sent: int = 0
    answered: int = 0
    apologised: int = 0
    unanswered: int = 0
    missing_in_db: int = 0
    recovery_s: float | None = None
    p50_ms: float = float("nan")
    max_ms: float = float("nan")
    apology_texts: Counter[str] = field(default_factory=Counter)
    note: str = ""

    @property
    def lost(self) -> int:
        return self.unanswered + self.missing_in_db


Injector = Callable[[Rig], Awaitable[None]]


def model_fault(fault: Fault, *models: str) -> tuple[Injector, Injector]:
    async def inject(r: Rig) -> None:
        for model in models:
            script = r.llm.script(model, bench_reply, **_timing(r))
            script.fault = fault
            script.retry_after = 1.0

    async def clear(r: Rig) -> None:
        for model in models:
            r.llm.scripts.pop(model, None)

    return inject, clear


def _timing(r: Rig) -> dict[str, float]:
    return {"latency": r.llm.default.latency, "token_delay": r.llm.default.token_delay}


async def _database_down(r: Rig) -> None:
    r.storage.insforge.down = True


async def _database_up(r: Rig) -> None:
    r.storage.insforge.down = False


async def _flood(r: Rig) -> None:
    r.tg.flood_every(2, ("sendMessage",))


async def _no_flood(r: Rig) -> None:
    r.tg.flood_every(0)


async def _telegram_down(r: Rig) -> None:
    r.tg.outage("sendMessage", status=502)


async def _telegram_up(r: Rig) -> None:
    r.tg.end_outage("sendMessage")


def injectors(fault: str) -> tuple[Injector, Injector]:
    if fault == "model-500":
        return model_fault(Fault.SERVER_ERROR, MODEL)
    if fault == "model-429":
        return model_fault(Fault.RATE_LIMITED, MODEL)
    if fault == "model-hang":
        return model_fault(Fault.HANG, MODEL)
    if fault == "models-down":
        return model_fault(Fault.SERVER_ERROR, MODEL, BACKUP_MODEL)
    if fault == "database-down":
        return _database_down, _database_up
    if fault == "telegram-429":
        return _flood, _no_flood
    if fault == "telegram-5xx":
        return _telegram_down, _telegram_up
    raise ValueError(fault)


async def steady_load(load: Load, chats: int, rate: float, seconds: float, sent: list[int]) -> None:
    """Open loop at `rate` msg/s for `seconds`, chats taking turns.

    `sent[0]` counts this fault's messages across its phases (before, during, after), so a phase
    that ends mid-round is continued by the next one: message n goes to chat n % chats as that
    chat's message n // chats, and no chat ever sends the same message twice.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    n = 0
    while True:
        due = started + n / rate
        if due - started >= seconds:
            return
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        seq, index = divmod(sent[0], chats)
        load.send(load.first_chat + index, seq)
        sent[0] += 1
        n += 1


async def run_fault(r: Rig, fault: str, options: Options, first_chat: int) -> Outcome:
    load = Load(r.tg, first_chat=first_chat)
    sent = [0]  # messages of this fault so far, across its phases
    outcome = Outcome(fault)
    if fault == "database-down" and r.storage.insforge is None:
        outcome.note = "skipped: needs --insforge (SQLite cannot be taken away)"
        return outcome
    await steady_load(load, options.chats, options.rate, options.before, sent)
    if fault in RESTARTS:
        if fault != "sigterm":
            # One chat's backlog while every model call is slow: more than the shutdown can finish.
            r.llm.script(MODEL, bench_reply, latency=SLOW_MODEL, token_delay=0.0)
            backlog_chat = load.first_chat + options.chats
            for seq in range(BACKLOG):
                load.send(backlog_chat, seq)
            await asyncio.sleep(2 * SLOW_MODEL)
        # The stop with messages in flight, keep sending while the bot is away, start it again.
        sender = asyncio.create_task(
            steady_load(load, options.chats, options.rate, options.duration, sent)
        )
        cleared_at = time.monotonic()
        code = await (r.bot.kill_and_start() if fault == "kill-9" else r.bot.restart())
        r.llm.scripts.pop(MODEL, None)
        if code not in (0, -9):
            outcome.note = f"first process exited with {code}"
        await sender
    else:
        inject, clear = injectors(fault)
        await inject(r)
        await steady_load(load, options.chats, options.rate, options.duration, sent)
        await clear(r)
        cleared_at = time.monotonic()
    await steady_load(load, options.chats, options.rate, options.after, sent)
    await load.settle(timeout=90)
    await asyncio.sleep(0.5)  # replies are stored before they are sent; be generous anyway
    stored = await r.storage.stored()
    return summarize(fault, load.sent, stored, cleared_at, outcome)


def summarize(
    fault: str,
    sent: list[Message],
    stored: set[tuple[str, str]],
    cleared_at: float,
    outcome: Outcome,
) -> Outcome:
    outcome.sent = len(sent)
    latencies: list[float] = []
    for m in sent:
        if m.answered_at is not None:
            outcome.answered += 1
            latencies.append(m.answered_at - m.pushed_at)
            in_db = ("user", m.tag) in stored and ("assistant", m.tag) in stored
            if not in_db and not m.apologies:
                outcome.missing_in_db += 1
        if m.apologies:
            outcome.apologised += 1
            outcome.apology_texts.update(text[:60] for _, text in m.apologies)
        if m.answered_at is None and not m.apologies:
            outcome.unanswered += 1
    after = [m for m in sent if m.pushed_at >= cleared_at and m.answered_at is not None]
    if after:
        first = min(after, key=lambda m: m.pushed_at)
        assert first.answered_at is not None
        outcome.recovery_s = first.answered_at - cleared_at
    outcome.p50_ms = percentile(latencies, 50) * 1000
    outcome.max_ms = max(latencies) * 1000 if latencies else float("nan")
    return outcome


async def run(options: Options) -> list[Outcome]:
    # SHUTDOWN_TIMEOUT 5 s: the restarts' backlog cannot all finish within it.
    config = BotConfig(
        webhook=options.webhook,
        fallback=True,
        llm_timeout=2.0,
        extra={"SHUTDOWN_TIMEOUT": "5", **({"REDIS_URL": options.redis} if options.redis else {})},
    )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        async with rig(
            Path(tmp), storage_kind=options.storage, config=config, latency=options.latency
        ) as r:
            for k, fault in enumerate(options.only):
                outcome = await run_fault(r, fault, options, first_chat=100_000 * (k + 1))
                outcomes.append(outcome)
                if not options.quiet:
                    print(f"... {fault}: {_row(outcome)}", flush=True)
    if not options.quiet:
        print_outcomes(options, outcomes)
    return outcomes


def _row(o: Outcome) -> list[str]:
    if o.note.startswith("skipped"):
        return [o.fault, "-", "-", "-", "-", "-", "-", "-", o.note]
    recovery = f"{o.recovery_s:.2f} s" if o.recovery_s is not None else "-"
    apology = o.apology_texts.most_common(1)[0][0] if o.apology_texts else ""
    return [
        o.fault,
        str(o.sent),
        str(o.answered),
        str(o.apologised),
        f"{o.lost} ({o.unanswered}+{o.missing_in_db})",
        recovery,
        f"{o.p50_ms:.0f}",
        f"{o.max_ms:.0f}",
        (o.note + " " + apology).strip(),
    ]


def print_outcomes(options: Options, outcomes: list[Outcome]) -> None:
    print_grid(
        f"fault suite: {options.storage}{' + Redis' if options.redis else ''}, "
        f"{'webhook' if options.webhook else 'polling'}, "
        f"{options.rate:g} msg/s over {options.chats} chats, faults of {options.duration:g} s "
        f"(load average {load_average()})",
        [
            "fault",
            "sent",
            "answered",
            "apologies",
            "lost (no reply+not stored)",
            "recovery",
            "p50 ms",
            "max ms",
            "note / commonest apology",
        ],
        [_row(o) for o in outcomes],
    )


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.fault_suite", description=__doc__)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each fault lasts")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second")
    parser.add_argument("--chats", type=int, default=40)
    parser.add_argument("--only", default=",".join(FAULTS), help="comma-separated faults")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--insforge", dest="storage", action="store_const", const="insforge")
    store.add_argument("--sqlite", dest="storage", action="store_const", const="sqlite")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--polling", dest="webhook", action="store_false", help="(default)")
    mode.add_argument("--webhook", dest="webhook", action="store_true")
    parser.add_argument(
        "--redis", default=None, help="REDIS_URL for the bot (the intake is then a Redis stream)"
    )
    parser.set_defaults(storage="insforge", webhook=False)
    args = parser.parse_args(argv)
    only = tuple(f.strip() for f in args.only.split(",") if f.strip())
    unknown = [f for f in only if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s) {unknown}; faults: {', '.join(FAULTS)}")
    return Options(
        duration=args.duration,
        rate=args.rate,
        chats=args.chats,
        storage=args.storage,
        webhook=args.webhook,
        only=only,
        redis=args.redis,
    )


def main(argv: list[str] | None = None) -> int:
    outcomes = asyncio.run(run(parse_args(argv)))
    return 1 if any(o.lost for o in outcomes) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())


__all__ = ["FAULTS", "Options", "Outcome", "main", "run"]
