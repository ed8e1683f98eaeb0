"""The trial guardrails' cost: a check, a look and `/trial`'s figures over a large trial.

    python -m tests.bench.trial_guard                      # both backends
    python -m tests.bench.trial_guard --only sqlite --trial-calls 200000 --runs 30

A ledger of `--other` calls outside any trial (default 400,000) and one trial of
`--trial-calls` calls (default 100,000) at share 10 %, over the last 7 days. Measured through
the real repositories, SQLite in this process and InsForge through the loopback fake (its own
process) over the real PostgreSQL, each `--runs` times (p50 / p95, ms):

- **check**: what every TRIAL_CHECK_SECONDS costs per running trial between looks (the count of
  the candidate's calls);
- **look**: a new look (the count, the candidate's n-th call, the two bounded windows, the
  three tests), `TrialGuard.look` on a fresh guard;
- **/trial**: the figures `/trial` shows for the trial (the whole trial's SQL aggregate and the
  window's intervals).

Each is measured with the index of SQLite step 13 / InsForge 017 (trial, arm, at) and without
it, alternated round by round (A B A B), since this VM's speed drifts.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bot.services.trial_commands import TrialCommands
from bot.services.trials import Trials
from bot.storage.insforge import InsForgeStorage
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from bot.storage.sqlite.schema import migrate
from bot.storage.sqlite.trial_schema import TRIAL_ARM_SQL
from bot.storage.timeutil import iso_utc
from bot.trials.guard import TrialGuard
from tests.bench.observatory import ADMIN_DSN, _serve, percentile
from tests.fakes.insforge_server import dsn_for, migrate_through_fake

PG_DATABASE = "bench_trial_guard"
SQLITE_PATH = Path("/tmp/bench-trial-guard/ledger.db")
END = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DROP_INDEX = "DROP INDEX IF EXISTS ledger_calls_trial_arm_at_idx"
COLUMNS = (
    "call_id, at, turn_id, chat_id, user_id, pipeline, agent, role, level, spec, model, "
    "provider, attempt, fallback, outcome, latency_ms, ttft_ms, prompt_tokens, "
    "completion_tokens, cost_usd, cost_source, config_version, trial_id, trial_arm"
)


def rows(other: int, trial_calls: int, seed: int = 5) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    total = other + trial_calls
    span = timedelta(days=7).total_seconds()
    in_trial = set(rng.sample(range(total), trial_calls))
    for n in range(total):
        at = END - timedelta(seconds=span * (1 - n / total))
        trial = n in in_trial
        arm = ("candidate" if rng.random() < 0.10 else "incumbent") if trial else None
        failed = rng.random() < 0.02
        yield (
            f"bench-{n}",
            iso_utc(at),
            n,
            n % 5000,
            n % 5000,
            "support",
            "coach" if trial else rng.choice(["extraction", "strategist", "summarizer"]),
            "chat",
            "trial" if arm == "candidate" else "agent",
            "openai:m",
            "m",
            "openai",
            0,
            0,
            "ProviderError" if failed else "ok",
            rng.lognormvariate(7.0, 0.5),
            None,
            500,
            200,
            None if failed else rng.lognormvariate(-7.6, 0.8),
            "unpriced" if failed else "provider",
            1,
            1 if trial else None,
            arm,
        )


def build_sqlite(other: int, trial_calls: int) -> None:
    marker = SQLITE_PATH.with_suffix(f".{other}-{trial_calls}.built")
    if marker.exists():
        return
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    for path in SQLITE_PATH.parent.glob("ledger.*"):
        path.unlink()
    conn = sqlite3.connect(SQLITE_PATH)
    migrate(conn)
    conn.execute(
        "INSERT INTO trials (id, agent, candidate, share, min_calls, started_by, started_at) "
        "VALUES (1, 'coach', 'fast', 10, 100, 'bench', ?)",
        (iso_utc(END - timedelta(days=7)),),
    )
    marks = ", ".join("?" * len(COLUMNS.split(",")))
    conn.executemany(
        f"INSERT INTO ledger_calls ({COLUMNS}) VALUES ({marks})", rows(other, trial_calls)
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    marker.touch()


async def build_postgres(other: int, trial_calls: int) -> str:
    dsn = dsn_for(ADMIN_DSN, PG_DATABASE)
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        await admin.close()
    await migrate_through_fake(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO trials (id, agent, candidate, share, min_calls, started_by, started_at) "
            "VALUES (1, 'coach', 'fast', 10, 100, 'bench', $1)",
            END - timedelta(days=7),
        )
        records = []
        for row in rows(other, trial_calls):
            values = list(row)
            values[1] = datetime.fromisoformat(values[1])
            values[13] = bool(values[13])
            records.append(tuple(values))
        await conn.copy_records_to_table(
            "ledger_calls", records=records, columns=[c.strip() for c in COLUMNS.split(",")]
        )
        await conn.execute("VACUUM ANALYZE ledger_calls")
    finally:
        await conn.close()
    return dsn


async def timed(action: Callable[[], Awaitable[object]], runs: int) -> list[float]:
    await action()  # a warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure(
    name: str, storage: Storage, set_index: Callable[[bool], Awaitable[None]], runs: int
) -> None:
    trials = Trials(storage.trials, ttl=60)
    trial = (await trials.running())["coach"]
    commands = TrialCommands(trials, storage.ledger, None, None)  # type: ignore[arg-type]

    async def check() -> None:
        await storage.ledger.trial_call_count(trial.id, "candidate")

    async def look() -> None:
        await TrialGuard(trials, storage.ledger, now=lambda: END + timedelta(hours=1)).look(trial)

    async def show() -> None:
        await commands.show()

    cases = {"check": check, "look": look, "/trial": show}
    samples: dict[tuple[str, bool], list[float]] = {
        (c, i): [] for c in cases for i in (True, False)
    }
    for _ in range(2):  # A B A B
        for indexed in (True, False):
            await set_index(indexed)
            for case, action in cases.items():
                samples[(case, indexed)] += await timed(action, runs)
    candidate = await storage.ledger.trial_call_count(trial.id, "candidate")
    incumbent = await storage.ledger.trial_call_count(trial.id, "incumbent")
    print(f"\n{name}: trial of {candidate:,} candidate + {incumbent:,} incumbent calls (ms)")
    print(f"  {'':<8} {'with index p50':>15} {'p95':>8} {'without p50':>12} {'p95':>8}")
    for case in cases:
        on, off = samples[(case, True)], samples[(case, False)]
        print(
            f"  {case:<8} {statistics.median(on):>15.2f} {percentile(on, 95):>8.2f} "
            f"{statistics.median(off):>12.2f} {percentile(off, 95):>8.2f}"
        )


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(","))
    print(f"ledger: {args.other:,} calls outside the trial, {args.trial_calls:,} in it")
    if "sqlite" in only:
        build_sqlite(args.other, args.trial_calls)
        storage = SQLiteStorage(str(SQLITE_PATH))
        await storage.connect()

        async def sqlite_index(on: bool) -> None:
            conn = sqlite3.connect(SQLITE_PATH)
            conn.executescript(TRIAL_ARM_SQL if on else DROP_INDEX)
            conn.execute("ANALYZE")
            conn.close()

        try:
            await measure("sqlite", storage, sqlite_index, args.runs)
        finally:
            await sqlite_index(True)
            await storage.close()
    if "insforge" in only:
        dsn = await build_postgres(args.other, args.trial_calls)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_serve, args=(dsn, queue), daemon=True)
        process.start()

        async def pg_index(on: bool) -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(TRIAL_ARM_SQL if on else DROP_INDEX)
                await conn.execute("ANALYZE ledger_calls")
            finally:
                await conn.close()

        try:
            url, key = queue.get(timeout=60)
            insforge = InsForgeStorage.from_url(url, key, timeout=60)
            try:
                await measure(
                    "insforge (records API over PostgreSQL)", insforge, pg_index, args.runs
                )
            finally:
                await insforge.close()
        finally:
            process.terminate()
            process.join(5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.trial_guard", description=__doc__)
    parser.add_argument("--other", type=int, default=400_000)
    parser.add_argument("--trial-calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--only", default="sqlite,insforge")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
