"""The call ledger's benchmark: `/stats` over 1,000,000 ledger rows, on SQLite and on InsForge.

    python -m tests.bench.observatory                    # both backends, 1M rows over 30 days
    python -m tests.bench.observatory --only sqlite --queries 50 --rebuild

A world of `--rows` calls (default 1,000,000) spread evenly over the last `--days` (default 30,
the longest window `/stats` offers; LEDGER_RETENTION_DAYS keeps 90 by default), six agents on
two or three models each, four calls a turn, 3 % errors, 2 % fallbacks, 20,000 ratings. It is
kept (`/tmp/bench-observatory/ledger.db`, PostgreSQL database `bench_observatory`) for the next
run; `--rebuild` starts over.

Measured: the time `/stats` takes to compute its text (`LedgerStats.report`: the one aggregate
query and the wording), through the real repositories: SQLite in this process (the query runs in
the database's worker thread), InsForge through its RPC function `ledger_stats` on the loopback
fake (in its own process) over the real PostgreSQL. For each window (1h, 24h, 7d, 30d) and for
one agent (`/stats coach`), `--queries` runs after one warm-up; p50/p95/max.

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
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bot.observatory.stats import LedgerStats, StatsQuery
from bot.storage.insforge import InsForgeStorage
from bot.storage.insforge_client import InsForgeClient
from bot.storage.migrate import apply_insforge_migrations
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from bot.storage.sqlite.schema import migrate
from bot.storage.timeutil import iso_utc
from tests.fakes.insforge_server import FakeInsForge, dsn_for

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_observatory"
SQLITE_PATH = Path("/tmp/bench-observatory/ledger.db")
# The data's last moment: every run measures the same windows of the same rows.
END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
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
    conn.execute("ANALYZE")
    conn.close()
    marker.touch()
    print(f"  sqlite: built {total:,} calls in {time.perf_counter() - started:.0f} s")


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
    async with FakeInsForge(dsn) as fake:
        client = InsForgeClient(fake.url, fake.api_key)
        try:
            await apply_insforge_migrations(client)
        finally:
            await client.aclose()
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
        await conn.execute("VACUUM ANALYZE ledger_calls")
    finally:
        await conn.close()
    print(f"  postgres: built {total:,} calls in {time.perf_counter() - started:.0f} s")
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


async def measure(name: str, storage: Storage, queries: int) -> None:
    stats = LedgerStats(storage.ledger)
    cases = [StatsQuery(None, w) for w in ("1h", "24h", "7d", "30d")]
    cases.append(StatsQuery("coach", "24h"))
    cases.append(StatsQuery("coach", "30d"))
    print(f"\n{name}: /stats, {queries} runs each (ms)")
    print(f"  {'query':<22} {'rows in window':>14} {'p50':>8} {'p95':>8} {'max':>8}")
    for case in cases:
        figures = await stats.figures(case, now=END)  # a warm-up, and the rows it covers
        rows_in = sum(r.calls for r in figures if r.model is None)
        samples = []
        for _ in range(queries):
            started = time.perf_counter()
            await stats.report(case, now=END)
            samples.append((time.perf_counter() - started) * 1000)
        label = f"/stats {case.agent + ' ' if case.agent else ''}{case.window}"
        print(
            f"  {label:<22} {rows_in:>14,} {statistics.median(samples):>8.1f} "
            f"{percentile(samples, 95):>8.1f} {max(samples):>8.1f}"
        )


async def main(args: argparse.Namespace) -> None:
    only = set(args.only.split(","))
    print(f"ledger: {args.rows:,} calls over {args.days} days")
    if "sqlite" in only:
        build_sqlite(args.rows, args.days, args.rebuild)
        storage = SQLiteStorage(str(SQLITE_PATH))
        await storage.connect()
        try:
            await measure("sqlite", storage, args.queries)
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
                await measure("insforge (RPC ledger_stats over PostgreSQL)", insforge, args.queries)
            finally:
                await insforge.close()
        finally:
            process.terminate()
            process.join(5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.observatory", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--only", default="sqlite,insforge")
    parser.add_argument("--rebuild", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
