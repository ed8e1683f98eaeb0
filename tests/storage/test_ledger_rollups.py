"""`/stats` from the ledger's rollups equals what the raw rows give, on every backend (decision
0016): over a scripted ledger of 40 days written in shuffled, repeated batches, with turns across
hour and day edges, ratings given before and after their calls are written and changed; after
pruning; and after the backfill of a database that had rows before the rollups existed.

Counts, tokens, costs, turns and ratings must be equal; a percentile is either the exact
nearest-rank value (its group's answered calls all lie in the window's raw edges) or the middle
of the histogram bucket that value falls in (the rollups' estimate, within 4.4 %)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bot.observatory.stats import CHART_STEPS, LedgerStats, StatsQuery
from bot.observatory.writer import LedgerWriter
from bot.storage.insforge_client import InsForgeClient
from bot.storage.ledger_models import CallStats, LedgerCall
from bot.storage.ledger_rollups import bucket, periods, representative
from bot.storage.migrate import apply_insforge_migrations
from bot.storage.migration_files import load_migration_files
from bot.storage.repositories import LedgerRepo, Storage
from bot.storage.sqlite import SQLiteStorage
from bot.storage.sqlite.ledger import COLUMNS, _values
from bot.storage.sqlite.rollup_schema import REBUILD_SQL
from tests.fakes.insforge_server import FakeInsForge, fresh_database
from tests.storage.conftest import Backend
from tests.storage.test_ledger_contract import call

# The moment `/stats` is asked: not on an hour, so every window has raw edges.
NOW = datetime(2026, 12, 2, 12, 34, 56, 789000, tzinfo=UTC)
MODELS = {"coach": ["m-a", "m-b"], "strategist": ["m-s"], "tutor": ["m-t", "m-a"]}


def scripted(seed: int = 11) -> tuple[list[LedgerCall], list[tuple[int, int, bool]]]:
    """Calls of 700 turns over 40 days (and some outside any turn), and ratings (turn, user,
    up) in the order given. Some turns are put on an hour's or a day's edge."""
    rng = random.Random(seed)
    calls: list[LedgerCall] = []
    edges = [
        NOW - timedelta(hours=24),
        NOW - timedelta(days=7),
        NOW - timedelta(days=30),
        NOW.replace(minute=0, second=0, microsecond=0),
        NOW.replace(hour=0, minute=0, second=0, microsecond=0),
        NOW.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3),
    ]
    for turn in range(1, 701):
        if turn <= 60:
            # across an edge: a few seconds before it to a few after
            start = edges[turn % len(edges)] - timedelta(seconds=rng.randrange(1, 20))
        elif turn <= 200:
            start = NOW - timedelta(seconds=rng.randrange(60, 3 * 3600))
        else:
            start = NOW - timedelta(seconds=rng.randrange(60, 40 * 86400))
        at = start
        for _step in range(rng.randrange(1, 5)):
            agent = rng.choice(list(MODELS))
            model = rng.choice(MODELS[agent])
            error = rng.random() < 0.1
            at += timedelta(seconds=rng.randrange(1, 15))
            n = len(calls)
            calls.append(
                replace(
                    call(
                        n,
                        agent=agent,
                        model=model,
                        turn=turn,
                        outcome="ProviderTimeout" if error else "ok",
                        latency=rng.lognormvariate(6.0, 0.8),
                        at=at,
                        cost=None if error or rng.random() < 0.1 else rng.random() / 1000,
                        source="unpriced" if error else "provider",
                        ttft=rng.lognormvariate(5.0, 0.5) if agent == "coach" else None,
                    ),
                    prompt_tokens=rng.randrange(10, 900),
                    completion_tokens=rng.randrange(1, 300),
                )
            )
            if error and rng.random() < 0.7:
                # the fallback answered
                at += timedelta(seconds=1)
                calls.append(
                    replace(
                        call(
                            len(calls),
                            agent=agent,
                            model=rng.choice(MODELS[agent]),
                            turn=turn,
                            attempt=1,
                            latency=rng.lognormvariate(6.5, 0.5),
                            at=at,
                        ),
                    )
                )
        for _ in range(rng.choice([0, 0, 1, 2])):
            calls.append(
                call(
                    len(calls),
                    turn=None,
                    at=NOW - timedelta(seconds=rng.randrange(60, 40 * 86400)),
                    latency=rng.uniform(5, 50),
                )
            )
    ratings = []
    for turn in rng.sample(range(1, 701), 300):
        for user in range(rng.randrange(1, 3)):
            ratings.append((turn, 100 + user, rng.random() < 0.7))
    return calls, ratings


async def write(ledger: LedgerRepo, calls: list[LedgerCall], ratings: list[tuple[int, int, bool]]):
    """The calls in shuffled batches, some sent twice; a third of the ratings before their
    calls are written, the rest after, some of those changed."""
    rng = random.Random(5)
    for turn, user, up in ratings[: len(ratings) // 3]:
        await ledger.rate(turn, user, 7, up)
    order = calls[:]
    rng.shuffle(order)
    start = 0
    while start < len(order):
        size = rng.randrange(1, 200)
        batch = order[start : start + size]
        await ledger.add_many(batch)
        if rng.random() < 0.3:
            await ledger.add_many(batch)  # a repeat after a lost answer: nothing twice
        start += size
        if start >= len(order) // 2 > start - size:
            # SQLite rolls up in the background: half the calls are in the rollups when the
            # later ratings come, half are not.
            await ledger.roll_up()
    for turn, user, up in ratings[len(ratings) // 3 :]:
        await ledger.rate(turn, user, 7, up)
    for turn, user, up in ratings[len(ratings) // 3 :: 4]:
        await ledger.rate(turn, user, 7, not up)  # a changed vote
    for turn, user, up in ratings[len(ratings) // 3 :: 8]:
        await ledger.rate(turn, user, 7, not up)  # ...and the same vote again: no change


def same_percentile(rolled: float | None, exact: float | None) -> bool:
    if exact is None:
        return rolled is None
    return rolled == exact or rolled == representative(bucket(exact))


def assert_same(rolled: list[CallStats], exact: list[CallStats], label: str) -> None:
    assert [(r.agent, r.model) for r in rolled] == [(r.agent, r.model) for r in exact], label
    for r, e in zip(rolled, exact, strict=True):
        where = f"{label}: {r.agent} x {r.model}"
        assert (r.calls, r.turns, r.errors, r.fallbacks, r.unpriced) == (
            e.calls,
            e.turns,
            e.errors,
            e.fallbacks,
            e.unpriced,
        ), where
        assert (r.prompt_tokens, r.completion_tokens) == (e.prompt_tokens, e.completion_tokens)
        assert (r.ratings_up, r.ratings) == (e.ratings_up, e.ratings), where
        assert round(r.cost_usd, 9) == round(e.cost_usd, 9), where
        assert same_percentile(r.p50_ms, e.p50_ms), (where, r.p50_ms, e.p50_ms)
        assert same_percentile(r.p95_ms, e.p95_ms), (where, r.p95_ms, e.p95_ms)
        assert same_percentile(r.ttft_p50_ms, e.ttft_p50_ms), (where, r.ttft_p50_ms)


WINDOWS: list[tuple[str, datetime]] = [
    ("24h", NOW),
    ("7d", NOW),
    ("30d", NOW),
    ("24h", NOW.replace(minute=0, second=0, microsecond=0)),  # on the hour
    ("7d", NOW.replace(hour=0, minute=0, second=0, microsecond=0)),  # on the day
    ("1h", NOW),
]


async def assert_stats_match(ledger: LedgerRepo, label: str) -> int:
    """Every window of `/stats`, for every agent and each one, against the raw rows; how many
    rows were compared."""
    stats = LedgerStats(ledger)
    compared = 0
    for window, now in WINDOWS:
        for agent in (None, "coach", "tutor"):
            query = StatsQuery(agent, window)
            rolled = await stats.figures(query, now=now)
            # The window LedgerStats.figures asks for.
            since, until = now - query.span, now + timedelta(seconds=1)
            exact = await ledger.stats(since, until, agent=agent, exact=True)
            assert_same(rolled, exact, f"{label} /stats {agent or ''} {window} at {now}")
            compared += len(exact)
    return compared


async def test_rolled_stats_equal_the_raw_rows(storage: Storage) -> None:
    calls, ratings = scripted()
    await write(storage.ledger, calls, ratings)
    compared = await assert_stats_match(storage.ledger, "written")
    assert compared > 50
    # The windows hold whole days and hours and the script put turns on their edges.
    cuts = periods(NOW - timedelta(days=7), NOW)
    assert cuts is not None
    assert cuts.h1 < cuts.d1 < cuts.d2 < cuts.h2
    # The rollups carry the window: most answered calls are in rolled periods, so the figures
    # are the histogram's (not the raw edges' exact values).
    (coach,) = [
        r
        for r in await storage.ledger.stats(NOW - timedelta(days=30), NOW)
        if r.agent == "coach" and r.model is None
    ]
    exact = await storage.ledger.stats(NOW - timedelta(days=30), NOW, agent="coach", exact=True)
    assert exact[0].p95_ms is not None
    assert coach.p95_ms == representative(bucket(exact[0].p95_ms))


@pytest.mark.parametrize(("window", "period"), [("7d", 3600), ("30d", 86400)])
async def test_the_chart_from_the_rollups(storage: Storage, window: str, period: int) -> None:
    calls, ratings = scripted(seed=3)
    await write(storage.ledger, calls, ratings)
    since = NOW - StatsQuery("coach", window).span
    bucket_seconds = CHART_STEPS[window]
    points = await storage.ledger.series("coach", since, NOW, bucket_seconds)
    # Buckets start at the period `since` falls in (an hour; a day for 30d's daily points).
    base = datetime.fromtimestamp(int(since.timestamp()) // period * period, UTC)
    assert points
    assert points[0].bucket >= base
    for point in points:
        assert (point.bucket - base).total_seconds() % bucket_seconds == 0
        end = point.bucket + timedelta(seconds=bucket_seconds)
        exact = {
            r.model: r
            for r in await storage.ledger.stats(point.bucket, end, agent="coach", exact=True)
        }
        row = exact[point.model]
        assert point.turns == row.turns, point
        assert round(point.cost_usd, 9) == round(row.cost_usd, 9)
        assert point.p95_ms == (
            representative(bucket(row.p95_ms)) if row.p95_ms is not None else None
        )
    assert len({p.model for p in points}) == 2


async def test_pruning_keeps_rollups_and_rows_in_step(storage: Storage) -> None:
    calls, ratings = scripted(seed=5)
    await write(storage.ledger, calls, ratings)
    cutoff = NOW - timedelta(days=10)
    gone = await storage.ledger.prune(cutoff)
    # Whole days go: what is before the day the cutoff falls in.
    day = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
    assert gone == sum(1 for c in calls if c.at < day)
    assert gone > 0
    await assert_stats_match(storage.ledger, "pruned")
    everything = await storage.ledger.stats(NOW - timedelta(days=40), NOW + timedelta(seconds=1))
    assert sum(r.calls for r in everything if r.model is None) == len(calls) - gone


async def rollup_tables(storage: Storage, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Both rollup tables, row by row (costs rounded: sums in another order)."""
    queries = {
        "ledger_rollups": "SELECT * FROM ledger_rollups ORDER BY g, p, agent, grp",
        "ledger_histograms": (
            "SELECT * FROM ledger_histograms ORDER BY g, p, agent, model, kind, bucket"
        ),
    }
    await storage.ledger.roll_up()
    found: dict[str, Any] = {}
    if isinstance(storage, SQLiteStorage):
        for table, sql in queries.items():
            rows = await storage.db.read(sql, action="read")
            found[table] = [_rounded(dict(row)) for row in rows]
        return found
    fake: FakeInsForge = request.getfixturevalue("fake_insforge")
    conn = await asyncpg.connect(fake.dsn)
    try:
        for table, sql in queries.items():
            found[table] = [_rounded(dict(row)) for row in await conn.fetch(sql)]
    finally:
        await conn.close()
    return found


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    if "cost_usd" in row:
        row["cost_usd"] = round(float(row["cost_usd"]), 9)
    return {key: int(value) if isinstance(value, bool) else value for key, value in row.items()}


async def rebuild(storage: Storage, request: pytest.FixtureRequest) -> None:
    if isinstance(storage, SQLiteStorage):
        conn = sqlite3.connect(storage.db.path, isolation_level=None)
        try:
            conn.executescript("BEGIN;" + REBUILD_SQL + "COMMIT;")
        finally:
            conn.close()
        return
    fake: FakeInsForge = request.getfixturevalue("fake_insforge")
    conn = await asyncpg.connect(fake.dsn)
    try:
        await conn.execute("SELECT ledger_rollups_rebuild()")
    finally:
        await conn.close()


async def test_rollups_kept_by_the_writes_equal_a_rebuild_from_the_rows(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    if backend.name == "live-insforge":
        pytest.skip("reads the tables directly")
    storage = await backend.open()
    calls, ratings = scripted(seed=8)
    await write(storage.ledger, calls, ratings)
    kept = await rollup_tables(storage, request)
    assert len(kept["ledger_rollups"]) > 500
    await rebuild(storage, request)
    assert await rollup_tables(storage, request) == kept


async def test_the_sqlite_backfill_step_rolls_up_the_rows_already_there(tmp_path: Any) -> None:
    path = str(tmp_path / "old.db")
    old = SQLiteStorage(path)
    await old.db.open(migrate_to=11)  # the bot before the rollups
    await old.close()
    calls, ratings = scripted(seed=13)
    # Rows as the bot before step 12 wrote them: straight into the tables.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = [_values(c) for c in calls]
        marks = ", ".join("?" * len(rows[0]))
        conn.executemany(f"INSERT INTO ledger_calls ({COLUMNS}) VALUES ({marks})", rows)
        conn.executemany(
            "INSERT INTO ledger_ratings (turn_id, user_id, up, at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (turn_id, user_id) DO UPDATE SET up = excluded.up",
            [
                (turn, user, int(up), "2026-12-02T12:00:00.000000+00:00")
                for turn, user, up in ratings
            ],
        )
    finally:
        conn.close()
    storage = SQLiteStorage(path)
    await storage.connect()  # step 12 fills the rollups
    try:
        await assert_stats_match(storage.ledger, "backfilled")
    finally:
        await storage.close()


async def test_the_insforge_backfill_migration_rolls_up_the_rows_already_there(
    postgres_dsn: str,
) -> None:
    files = load_migration_files()
    # 023 replaces 016's roll-up, so a database without 016 lacks it too.
    later = ["016_ledger_rollups.sql", "023_ledger_roll_up_by_turn.sql"]
    before = [f for f in files if f.path.name not in later]
    assert len(before) == len(files) - 2
    calls, ratings = scripted(seed=13)
    async with fresh_database(postgres_dsn) as dsn, FakeInsForge(dsn) as fake:
        client = InsForgeClient(fake.url, fake.api_key)
        try:
            await apply_insforge_migrations(client, before)  # every other, as a DB without 016
            # Rows as the bot before 016 wrote them: straight into the tables.
            conn = await asyncpg.connect(dsn)
            try:
                await conn.executemany(
                    "INSERT INTO ledger_calls (call_id, at, turn_id, pipeline, agent, spec, "
                    "model, provider, attempt, fallback, outcome, latency_ms, ttft_ms, "
                    "prompt_tokens, completion_tokens, cost_usd, cost_source) VALUES ($1, $2, "
                    "$3, 'support', $4, 'x', $5, 'openrouter', $6, $7, $8, $9, $10, $11, $12, "
                    "$13, $14)",
                    [
                        (
                            c.call_id,
                            c.at,
                            c.turn_id,
                            c.agent,
                            c.model,
                            c.attempt,
                            c.fallback,
                            c.outcome,
                            c.latency_ms,
                            c.ttft_ms,
                            c.prompt_tokens,
                            c.completion_tokens,
                            c.cost_usd,
                            c.cost_source,
                        )
                        for c in calls
                    ],
                )
                last: dict[tuple[int, int], bool] = {}
                for turn, user, up in ratings:
                    last[turn, user] = up
                await conn.executemany(
                    "INSERT INTO ledger_ratings (turn_id, user_id, up) VALUES ($1, $2, $3)",
                    [(turn, user, up) for (turn, user), up in last.items()],
                )
            finally:
                await conn.close()
            applied, _ = await apply_insforge_migrations(client)
            assert [f.path.name for f in applied] == later
        finally:
            await client.aclose()
        from bot.storage.insforge import InsForgeStorage

        storage = InsForgeStorage.from_url(fake.url, fake.api_key, timeout=30.0)
        try:
            await assert_stats_match(storage.ledger, "backfilled")
        finally:
            await storage.close()


async def test_the_writer_rolls_up_in_the_background(tmp_path: Any) -> None:
    storage = SQLiteStorage(str(tmp_path / "bot.db"))
    await storage.connect()
    writer = LedgerWriter(storage.ledger, flush_interval=0.01, roll_up_every=0.01)
    try:
        await writer.start()
        for n in range(30):
            writer.record(replace(call(n, turn=n // 3 + 1, at=NOW), call_id=""))
        for _ in range(500):
            await asyncio.sleep(0.01)
            (rolled,) = (
                await storage.db.read("SELECT rolled_id FROM ledger_rollup_state", action="r")
            )[0]
            if writer.written == 30 and rolled == 30:
                break
        assert (writer.written, rolled) == (30, 30)
        assert await storage.ledger.roll_up() == 0  # nothing left for a read to add
        (coach,) = [
            r
            for r in await storage.ledger.stats(NOW - timedelta(days=1), NOW + timedelta(seconds=1))
            if r.model is None
        ]
        assert (coach.calls, coach.turns) == (30, 10)
    finally:
        await writer.close()
        await storage.close()
