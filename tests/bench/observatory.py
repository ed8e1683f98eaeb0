"""The call ledger's benchmark: `/stats` over 1,000,000 ledger rows, on SQLite and on InsForge.

    python -m tests.bench.observatory                    # both backends, 1M rows over 30 days
    python -m tests.bench.observatory --only sqlite --queries 50 --rebuild

A world of `--rows` calls (default 1,000,000) spread evenly over the last `--days` (default 30,
the longest window `/stats` offers; LEDGER_RETENTION_DAYS keeps 90 by default), six agents on
two or three models each, four calls a turn, 3 % errors, 2 % fallbacks, 20,000 ratings. It is
kept (`/tmp/bench-observatory/ledger.db`, PostgreSQL database `bench_observatory`) for the next
run; `--rebuild` starts over.

The rollups (decision 0016) are made after the bulk load by the same rebuild SQLite step 12 and
InsForge migration 016 run on an existing database (`ledger_rollups_rebuild`); its time is
printed.

Measured: the time `/stats` takes to compute its text (`LedgerStats.report`: the rollups and the
raw edges, and the wording), through the real repositories: SQLite in this process (the queries
run in the database's worker thread), InsForge through its RPC functions on the loopback fake
(in its own process) over the real PostgreSQL. For each window (1h, 24h, 7d, 30d), for one agent
(`/stats coach`) and for the chart's series (`/stats coach` sends it), `--queries` runs after one
warm-up; p50/p95/max. `--exact-queries` (default 3; 0 skips) runs of the same queries over the
raw rows (`exact=True`: what `/stats` read before the rollups), interleaved with the rollups'
runs, for the before/after in one run.

`--writes N` (default 200) also times the ledger's batched write on SQLite now and as it was
before the rollups (a batch of 5 calls, as a turn writes; alternated; two fresh databases), and
the background roll-up's CPU per call.

The ledger's cost per message is measured by `e2e_load --ledger on|off` (see its docstring).
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

from bot.observatory.stats import CHART_STEPS, LedgerStats, StatsQuery
from bot.storage.insforge import InsForgeStorage
from bot.storage.ledger_models import LedgerCall
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from bot.storage.sqlite.ledger import COLUMNS as LEDGER_COLUMNS
from bot.storage.sqlite.ledger import _values
from bot.storage.sqlite.rollup_schema import REBUILD_SQL, TRIGGERS_SQL
from bot.storage.sqlite.schema import migrate
from bot.storage.timeutil import iso_utc
from tests.fakes.insforge_server import FakeInsForge, dsn_for, migrate_through_fake

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_observatory"
SQLITE_PATH = Path("/tmp/bench-observatory/ledger.db")
# The data's last moment: every run measures the same windows of the same rows.
END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# When `/stats` is asked: off the hour, so each window has raw edges (up to two hours of rows
# read raw beside the rollups), as a real `/stats` has.
ASKED = END - timedelta(minutes=17, seconds=23)
AGENTS = {
    "extraction": ["openai:gpt-4o-mini", "groq:llama-3.1-8b-instant"],
    "strategist": ["openai:gpt-4o-mini", "anthropic:claude-3-5-haiku-latest"],
    "coach": ["openrouter:anthropic/claude-sonnet-4.5", "openai:gpt-4o", "openai:gpt-4o-mini"],
    "tutor": ["openai:gpt-4o", "openrouter:openai/gpt-4o-mini"],
    "trainer": ["openai:gpt-4o-mini", "xai:grok-3-mini"],
    "summarizer": ["openai:gpt-4o-mini", "mlx:tiny"],
}
RATINGS = 20_000
COLUMNS = (
    "call_id, at, turn_id, chat_id, user_id, pipeline, agent, role, level, spec, model, "
    "provider, attempt, fallback, outcome, latency_ms, ttft_ms, prompt_tokens, "
    "completion_tokens, cost_usd, cost_source, config_version"
)


def rows(total: int, days: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(seed)
    start = END - timedelta(days=days)
    step = timedelta(days=days) / total
    names = list(AGENTS)
    for i in range(total):
        agent = names[i % 4] if i % 4 < 3 else rng.choice(names[3:])
        spec = rng.choice(AGENTS[agent])
        provider, model = spec.split(":", 1)
        error = rng.random() < 0.03
        attempt = 1 if rng.random() < 0.02 else 0
        latency = rng.lognormvariate(6.5, 0.5)
        cost = None if error else rng.random() * 0.002
        source = "provider" if provider == "openrouter" else "price_table"
        if provider == "mlx":
            cost, source = 0.0, "local"
        if cost is None:
            source = "unpriced"
        yield (
            f"bench-{i}",
            iso_utc(start + step * i),
            i // 4 + 1,
            1000 + i % 5000,
            1000 + i % 5000,
            "support",
            agent,
            "chat",
            "agent",
            spec,
            model,
            provider,
            attempt,
            attempt,
            "ProviderTimeout" if error else "ok",
            latency,
            latency * 0.3 if agent == "coach" else None,
            rng.randrange(100, 2000),
            rng.randrange(10, 400),
            cost,
            source,
            rng.randrange(1, 20),
        )


def build_sqlite(total: int, days: int, rebuild: bool) -> None:
    marker = SQLITE_PATH.with_suffix(f".{total}-{days}.built")
    if marker.exists() and SQLITE_PATH.exists() and not rebuild:
        return
    for suffix in ("", "-wal", "-shm"):
        Path(str(SQLITE_PATH) + suffix).unlink(missing_ok=True)
    for old in SQLITE_PATH.parent.glob("ledger.*.built"):
        old.unlink()
    SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    conn = sqlite3.connect(SQLITE_PATH, isolation_level=None)
    migrate(conn)  # the bot's own schema steps
    # A bulk load without the per-row upkeep, then the rollups from scratch (as step 12 does).
    triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
    for (name,) in triggers:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO ledger_calls ({COLUMNS}) VALUES ({', '.join('?' * 22)})", rows(total, days)
    )
    rng = random.Random(3)
    turns = total // 4
    conn.executemany(
        "INSERT OR IGNORE INTO ledger_ratings (turn_id, user_id, chat_id, up, at) "
        "VALUES (?, ?, ?, ?, ?)",
        (
            (rng.randrange(1, turns), 1, 1, int(rng.random() < 0.8), iso_utc(END))
            for _ in range(RATINGS)
        ),
    )
    conn.execute("COMMIT")
    print(f"  sqlite: loaded {total:,} calls in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    conn.executescript("BEGIN;" + REBUILD_SQL + TRIGGERS_SQL + "COMMIT;")
    rollups = conn.execute("SELECT COUNT(*) FROM ledger_rollups").fetchone()[0]
    histograms = conn.execute("SELECT COUNT(*) FROM ledger_histograms").fetchone()[0]
    print(
        f"  sqlite: rollups rebuilt in {time.perf_counter() - started:.1f} s "
        f"({rollups:,} rollup rows, {histograms:,} histogram rows)"
    )
    conn.execute("ANALYZE")
    conn.close()
    marker.touch()


async def build_postgres(total: int, days: int, rebuild: bool) -> str:
    dsn = dsn_for(ADMIN_DSN, PG_DATABASE)
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
        if exists and not rebuild:
            conn = await asyncpg.connect(dsn)
            try:
                built = await conn.fetchval(
                    "SELECT count(*) FROM ledger_calls WHERE call_id LIKE 'bench-%'"
                )
            except asyncpg.PostgresError:
                built = 0
            finally:
                await conn.close()
            if built == total:
                return dsn
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        await admin.close()
    await migrate_through_fake(dsn)
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "ledger_calls",
            records=[_pg(row) for row in rows(total, days)],
            columns=[c.strip() for c in COLUMNS.split(",")],
        )
        rng = random.Random(3)
        turns = total // 4
        await conn.executemany(
            "INSERT INTO ledger_ratings (turn_id, user_id, chat_id, up, at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            [(rng.randrange(1, turns), 1, 1, rng.random() < 0.8, END) for _ in range(RATINGS)],
        )
        print(f"  postgres: loaded {total:,} calls in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        made = await conn.fetchval("SELECT ledger_rollups_rebuild()")
        print(
            f"  postgres: rollups rebuilt in {time.perf_counter() - started:.1f} s "
            f"({made:,} rollup rows)"
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return dsn


def _pg(row: tuple[Any, ...]) -> tuple[Any, ...]:
    values = list(row)
    values[1] = datetime.fromisoformat(values[1])
    values[13] = bool(values[13])
    return tuple(values)


def _serve(dsn: str, queue: Any) -> None:
    async def main() -> None:
        fake = FakeInsForge(dsn)
        await fake.start()
        queue.put((fake.url, fake.api_key))
        await asyncio.Event().wait()

    asyncio.run(main())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def timed(run: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) * 1000


def figures_line(label: str, rows_in: str, samples: list[float]) -> str:
    if not samples:
        return f"  {label:<30} {rows_in:>14} {'-':>8} {'-':>8} {'-':>8}"
    return (
        f"  {label:<30} {rows_in:>14} {statistics.median(samples):>8.1f} "
        f"{percentile(samples, 95):>8.1f} {max(samples):>8.1f}"
    )


async def measure(name: str, storage: Storage, queries: int, exact_queries: int) -> None:
    stats = LedgerStats(storage.ledger)
    ledger = storage.ledger
    cases = [StatsQuery(None, w) for w in ("1h", "24h", "7d", "30d")]
    cases.append(StatsQuery("coach", "24h"))
    cases.append(StatsQuery("coach", "30d"))
    print(f"\n{name}: /stats, {queries} runs each, raw rows {exact_queries} runs (ms)")
    print(f"  {'query':<30} {'rows in window':>14} {'p50':>8} {'p95':>8} {'max':>8}")
    for case in cases:
        figures = await stats.figures(case, now=ASKED)  # a warm-up, and the rows it covers
        rows_in = sum(r.calls for r in figures if r.model is None)
        until = ASKED + timedelta(seconds=1)
        since = ASKED - case.span

        async def rolled(case: StatsQuery = case) -> None:
            await stats.report(case, now=ASKED)

        async def exact(
            agent: str | None = case.agent, since: datetime = since, until: datetime = until
        ) -> None:
            await ledger.stats(since, until, agent=agent, exact=True)

        fast: list[float] = []
        slow: list[float] = []
        for i in range(queries):
            fast.append(await timed(rolled))
            if i < exact_queries:
                slow.append(await timed(exact))
        label = f"/stats {case.agent + ' ' if case.agent else ''}{case.window}"
        print(figures_line(label, f"{rows_in:,}", fast))
        if exact_queries:
            print(figures_line("  raw rows (before)", "", slow))
    for window in ("24h", "7d", "30d"):
        span = StatsQuery("coach", window).span
        start = ASKED - span
        step = CHART_STEPS[window]
        await ledger.series("coach", start, ASKED, step)

        async def series(start: datetime = start, step: int = step) -> None:
            await ledger.series("coach", start, ASKED, step)

        samples = [await timed(series) for _ in range(queries)]
        print(figures_line(f"chart series coach {window}", "", samples))


async def measure_writes(batches: int) -> None:
    """The ledger's batched write (5 calls) now and as before the rollups (step 11)."""
    print(f"\nsqlite: add_many of 5 calls, {batches} batches each, alternated (CPU us per call)")
    stores: dict[str, SQLiteStorage] = {}
    for name, target in (("now", None), ("before (step 11)", 11)):
        store = SQLiteStorage(_fresh_path(f"{target or 'latest'}.db"))
        await store.db.open(migrate_to=target)
        stores[name] = store
    rng = random.Random(1)
    times: dict[str, list[float]] = {name: [] for name in stores}
    try:
        for i in range(batches):
            order = list(stores.items())
            for name, store in order if i % 2 == 0 else order[::-1]:
                batch = [_call(rng, i * 10 + j) for j in range(5)]
                started = time.process_time()
                if name == "now":
                    await store.ledger.add_many(batch)
                else:
                    await _write_as_before(store, batch)
                times[name].append((time.process_time() - started) * 1e6 / 5)
    finally:
        for store in stores.values():
            await store.close()
    for name, samples in times.items():
        print(f"  {name:<20} median {statistics.median(samples):7.1f} us per call")


async def measure_roll_up(batches: int) -> None:
    """The background roll-up's CPU per call: `batches` batches of 5 calls (as turns write them)
    rolled up every 200 calls (a 5 s interval at 40 calls/s), best of 3."""
    best = []
    for _ in range(3):
        store = SQLiteStorage(_fresh_path("roll-up.db"))
        await store.connect()
        rng = random.Random(2)
        spent = 0.0
        try:
            for i in range(batches):
                await store.ledger.add_many([_call(rng, i * 10 + j) for j in range(5)])
                if i % 40 == 39 or i == batches - 1:
                    started = time.process_time()
                    await store.ledger.roll_up()
                    spent += time.process_time() - started
        finally:
            await store.close()
        best.append(spent * 1e6 / (batches * 5))
    print(f"  sqlite roll-up: {min(best):.1f} us of CPU per call (best of 3)")


async def _write_as_before(store: SQLiteStorage, batch: list[LedgerCall]) -> None:
    """The batch write as it was before the rollups: one INSERT on the loop's connection."""
    params: list[object] = []
    for call in batch:
        params.extend(_values(call))
    row = "(" + ", ".join("?" * len(_values(batch[0]))) + ")"
    await store.db.write(
        f"INSERT OR IGNORE INTO ledger_calls ({LEDGER_COLUMNS}) VALUES "
        + ", ".join([row] * len(batch)),
        params,
        action="write the call ledger",
    )


def _fresh_path(name: str) -> str:
    root = Path("/tmp/bench-observatory/writes")
    root.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / name) + suffix).unlink(missing_ok=True)
    return str(root / name)


def _call(rng: random.Random, n: int) -> LedgerCall:
    agent = rng.choice(list(AGENTS))
    spec = rng.choice(AGENTS[agent])
    provider, model = spec.split(":", 1)
    return LedgerCall(
        at=datetime.now(UTC),
        turn_id=n // 5 + 1,
        chat_id=1,
        user_id=1,
        pipeline="support",
        agent=agent,
        role="chat",
        level="agent",
        spec=spec,
        model=model,
        provider=provider,
        attempt=0,
        fallback=False,
        outcome="ok",
        latency_ms=rng.lognormvariate(6.5, 0.5),
        ttft_ms=None,
        prompt_tokens=100,
        completion_tokens=20,
        cost_usd=0.0001,
        cost_source="provider",
        config_version=1,
        call_id=f"w-{n}-{rng.random()}",
    )


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(","))
    print(f"ledger: {args.rows:,} calls over {args.days} days")
    if "sqlite" in only:
        build_sqlite(args.rows, args.days, args.rebuild)
        storage = SQLiteStorage(str(SQLITE_PATH))
        await storage.connect()
        try:
            await measure("sqlite", storage, args.queries, args.exact_queries)
        finally:
            await storage.close()
    if "insforge" in only:
        dsn = await build_postgres(args.rows, args.days, args.rebuild)
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_serve, args=(dsn, queue), daemon=True)
        process.start()
        try:
            url, key = queue.get(timeout=60)
            insforge = InsForgeStorage.from_url(url, key, timeout=60)
            try:
                await measure(
                    "insforge (RPCs over PostgreSQL)", insforge, args.queries, args.exact_queries
                )
            finally:
                await insforge.close()
        finally:
            process.terminate()
            process.join(5)
    if args.writes:
        await measure_writes(args.writes)
        await measure_roll_up(args.writes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.observatory", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--only", default="sqlite,insforge")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--exact-queries", type=int, default=3)
    parser.add_argument("--writes", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
