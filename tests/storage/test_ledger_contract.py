"""The call ledger's repository on every backend: batched writes, the `/stats` aggregates (one
query; on InsForge the migration's functions over the real PostgreSQL), ratings credited to
every agent x model of a turn, retention, change-report claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.observatory.writer import LedgerWriter
from bot.storage.ledger_models import LedgerCall
from bot.storage.ledger_rollups import bucket, representative
from bot.storage.repositories import Storage
from tests.storage.conftest import Backend

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def call(
    n: int,
    *,
    agent: str = "coach",
    model: str = "m-a",
    turn: int | None = 1,
    outcome: str = "ok",
    latency: float = 100.0,
    attempt: int = 0,
    at: datetime = NOW,
    cost: float | None = 0.001,
    source: str = "provider",
    ttft: float | None = None,
    user: int | None = 7,
    version: int | None = 1,
) -> LedgerCall:
    return LedgerCall(
        at=at,
        turn_id=turn,
        chat_id=7,
        user_id=user,
        pipeline="support",
        agent=agent,
        role="chat",
        level="agent",
        spec="openrouter:m-a",
        model=model,
        provider="openrouter",
        attempt=attempt,
        fallback=attempt > 0,
        outcome=outcome,
        latency_ms=latency,
        ttft_ms=ttft,
        prompt_tokens=10,
        completion_tokens=5,
        cost_usd=cost,
        cost_source=source,  # type: ignore[arg-type]
        config_version=version,
        call_id=f"c-{n}",
    )


async def test_stats_per_agent_and_model_are_computed_by_the_database(storage: Storage) -> None:
    calls = [
        # coach on m-a: 20 answered calls of 10..200 ms in turns 1..20, one timeout (turn 21)
        *(call(i, latency=10.0 * i, turn=i, ttft=5.0 * i) for i in range(1, 21)),
        call(21, turn=21, outcome="ProviderTimeout", latency=5000.0, cost=None, source="unpriced"),
        # ...and turn 21 answered by the fallback m-b
        call(22, model="m-b", turn=21, attempt=1, latency=300.0, cost=0.002),
        # strategist in turn 1, priced from the table, and one call unpriced
        call(23, agent="strategist", model="m-s", cost=0.0005, source="price_table"),
        call(24, agent="strategist", model="m-s", turn=2, cost=None, source="unpriced"),
        # outside the window
        call(25, at=NOW - timedelta(days=2)),
    ]
    await storage.ledger.add_many(calls)
    await storage.ledger.add_many(calls[:3])  # a repeated batch stores nothing more
    await storage.ledger.rate(1, 100, 7, up=True)
    await storage.ledger.rate(1, 101, 7, up=False)
    await storage.ledger.rate(1, 101, 7, up=True)  # a second vote replaces the first
    await storage.ledger.rate(21, 100, 7, up=False)

    rows = await storage.ledger.stats(NOW - timedelta(hours=24), NOW + timedelta(seconds=1))
    by = {(r.agent, r.model): r for r in rows}
    assert [(r.agent, r.model) for r in rows] == [
        ("coach", None),
        ("coach", "m-a"),
        ("coach", "m-b"),
        ("strategist", None),
        ("strategist", "m-s"),
    ]
    coach, coach_a, coach_b = by["coach", None], by["coach", "m-a"], by["coach", "m-b"]
    assert (coach.calls, coach.turns, coach.errors, coach.fallbacks) == (22, 21, 1, 1)
    assert (coach_a.calls, coach_a.turns, coach_a.errors, coach_a.fallbacks) == (21, 21, 1, 0)
    assert (coach_b.calls, coach_b.turns, coach_b.errors, coach_b.fallbacks) == (1, 1, 0, 1)
    assert (coach.prompt_tokens, coach.completion_tokens) == (220, 110)
    assert round(coach.cost_usd, 9) == round(20 * 0.001 + 0.002, 9)
    assert coach.unpriced == 0  # the timeout reported no usage: nothing to price
    # Nearest rank over the 20 answered calls of m-a: 10th and 19th values.
    assert (coach_a.p50_ms, coach_a.p95_ms) == (100.0, 190.0)
    assert coach_a.ttft_p50_ms == 50.0
    # All 21 answered coach calls: 10..200 and 300.
    assert (coach.p50_ms, coach.p95_ms) == (110.0, 200.0)
    assert coach_b.p50_ms == 300.0
    # Turn 1 (two 👍) was served by coach on m-a and the strategist; turn 21 (👎) by m-b.
    assert (coach_a.ratings_up, coach_a.ratings) == (2, 2)
    assert (coach_b.ratings_up, coach_b.ratings) == (0, 1)
    assert (coach.ratings_up, coach.ratings) == (2, 3)
    strategist = by["strategist", None]
    assert (strategist.ratings_up, strategist.ratings) == (2, 2)
    assert round(strategist.cost_usd, 9) == 0.0005
    assert strategist.unpriced == 1

    only = await storage.ledger.stats(
        NOW - timedelta(hours=24), NOW + timedelta(seconds=1), agent="strategist"
    )
    assert {r.agent for r in only} == {"strategist"}


async def test_version_ranges_split_before_and_after_a_change(storage: Storage) -> None:
    await storage.ledger.add_many(
        [call(i, version=3, model="old") for i in range(3)]
        + [call(10 + i, version=5, model="new") for i in range(2)]
    )
    since, until = NOW - timedelta(hours=1), NOW + timedelta(seconds=1)
    before = await storage.ledger.stats(since, until, versions=(None, 5))
    after = await storage.ledger.stats(since, until, versions=(5, None))
    assert [(r.model, r.calls) for r in before] == [(None, 3), ("old", 3)]
    assert [(r.model, r.calls) for r in after] == [(None, 2), ("new", 2)]


async def test_series_usage_pruning_and_report_claims(storage: Storage) -> None:
    ledger = storage.ledger
    await ledger.add_many(
        [
            call(1, at=NOW - timedelta(minutes=90), latency=100.0, turn=1),
            call(2, at=NOW - timedelta(minutes=80), latency=300.0, turn=2, cost=0.003),
            call(3, at=NOW - timedelta(minutes=10), latency=50.0, turn=3, user=8),
            call(4, at=NOW - timedelta(days=100), turn=4),
        ]
    )
    # Hour buckets come from the hourly rollups: p95 is its histogram bucket's middle.
    points = await ledger.series("coach", NOW - timedelta(hours=2), NOW, 3600)
    assert [(p.bucket, p.model, p.p95_ms, p.turns) for p in points] == [
        (NOW - timedelta(hours=2), "m-a", representative(bucket(300.0)), 2),
        (NOW - timedelta(hours=1), "m-a", representative(bucket(50.0)), 1),
    ]
    assert round(points[0].cost_usd, 9) == 0.004
    # Shorter buckets (`/stats <agent> 1h`) read the raw rows: nearest rank, exact.
    points = await ledger.series("coach", NOW - timedelta(hours=2), NOW, 1800)
    assert [(p.bucket, p.model, p.p95_ms, p.turns) for p in points] == [
        (NOW - timedelta(minutes=90), "m-a", 300.0, 2),
        (NOW - timedelta(minutes=30), "m-a", 50.0, 1),
    ]

    mine = await ledger.user_cost(7, NOW - timedelta(days=1))
    assert (mine.calls, round(mine.cost_usd, 9), mine.unpriced) == (2, 0.004, 0)

    assert await ledger.prune(NOW - timedelta(days=90)) == 1
    assert await ledger.prune(NOW - timedelta(days=90)) == 0

    assert await ledger.claim_report(5, "coach") is True
    assert await ledger.claim_report(5, "coach") is False  # another replica took it
    assert await ledger.claim_report(5, "tutor") is True
    assert await ledger.reported(5) == {(5, "coach"), (5, "tutor")}
    assert await ledger.reported(6) == set()


async def test_the_writer_keeps_rows_through_an_outage_up_to_its_bound(backend: Backend) -> None:
    storage = await backend.open()
    writer = LedgerWriter(storage.ledger, max_pending=5)
    for i in range(3):
        writer.record(fresh(i))
    await backend.break_writes()
    assert await writer.flush() == 0  # the database is down: nothing lost, nothing delays
    assert writer.pending == 3
    for i in range(3, 7):
        writer.record(fresh(i))
    assert (writer.pending, writer.dropped) == (5, 2)  # past the bound: the oldest go, counted
    await backend.heal()
    assert await writer.flush() == 5
    assert writer.pending == 0
    rows = await storage.ledger.stats(NOW - timedelta(hours=1), NOW + timedelta(seconds=1))
    (coach, _model) = rows
    assert (coach.calls, coach.turns) == (5, 5)


def fresh(i: int) -> LedgerCall:
    """A row as the capture makes it: no id yet (the writer gives one per batch)."""
    row = call(i, turn=i + 1)
    row.call_id = ""
    return row
