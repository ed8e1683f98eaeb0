"""Trials on every backend: one running trial per agent, ended once, and each arm's figures from
the ledger's `trial_id` / `trial_arm` (on InsForge the migration's function over PostgreSQL)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.services.trials import Trials
from bot.storage.repositories import Storage, StorageConflict
from bot.trials.guard import TrialGuard
from tests.storage.test_ledger_contract import call


async def test_one_running_trial_per_agent_ended_once(storage: Storage) -> None:
    trial = await storage.trials.start("coach", "fast", 10.0, 100, started_by="tg:1")
    assert (trial.agent, trial.candidate, trial.share, trial.min_calls) == (
        "coach",
        "fast",
        10.0,
        100,
    )
    with pytest.raises(StorageConflict):
        await storage.trials.start("coach", "other", 50.0, 10, started_by="tg:2")
    other = await storage.trials.start("tutor", "fast", 50.0, 10, started_by="tg:1")
    assert [t.agent for t in await storage.trials.running()] == ["coach", "tutor"]
    assert await storage.trials.end(trial.id, "stopped", by="tg:1", reason="done")
    assert not await storage.trials.end(trial.id, "guardrail", by="tg:2")
    ended = await storage.trials.get(trial.id)
    assert ended is not None
    assert ended.status == "stopped"
    assert ended.reason == "done"
    assert [t.id for t in await storage.trials.running()] == [other.id]
    [last] = await storage.trials.ended(5)
    assert (last.id, last.status, last.ended_by) == (trial.id, "stopped", "tg:1")
    # The agent may start a new trial once the old one ended.
    again = await storage.trials.start("coach", "other", 20.0, 5, started_by="tg:1")
    assert again.id not in (trial.id, other.id)


async def test_trial_stats_split_the_calls_by_arm(storage: Storage) -> None:
    calls = []
    for n in range(10):
        arm = "candidate" if n < 4 else "incumbent"
        failed = n in (0, 1, 5)
        calls.append(
            replace(
                call(
                    n, turn=100 + n, latency=50.0 + n, outcome="ProviderTimeout" if failed else "ok"
                ),
                trial_id=7,
                trial_arm=arm,
            )
        )
    # Another trial's call and a call outside any trial are not counted.
    calls.append(replace(call(50, turn=200), trial_id=8, trial_arm="candidate"))
    calls.append(call(51, turn=201))
    await storage.ledger.add_many(calls)
    await storage.ledger.rate(102, 7, 7, True)
    await storage.ledger.rate(106, 7, 7, False)
    rows = {row.model: row for row in await storage.ledger.trial_stats(7)}
    assert set(rows) == {"candidate", "incumbent"}
    cand, inc = rows["candidate"], rows["incumbent"]
    assert (cand.calls, cand.errors, cand.turns) == (4, 2, 4)
    assert (inc.calls, inc.errors, inc.turns) == (6, 1, 6)
    assert (cand.ratings_up, cand.ratings) == (1, 1)
    assert (inc.ratings_up, inc.ratings) == (0, 1)
    assert cand.p50_ms == 52.0  # the answered calls: 52, 53 (nearest rank)
    assert await storage.ledger.trial_stats(9) == []


async def test_an_arms_raw_calls_in_a_bounded_window(storage: Storage) -> None:
    start = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    calls = []
    for n in range(12):
        arm = "candidate" if n % 3 == 0 else "incumbent"
        calls.append(
            replace(
                call(
                    n,
                    turn=300 + n,
                    latency=float(n),
                    at=start + timedelta(seconds=n),
                    cost=None if n == 6 else 0.001 * n,
                    outcome="RateLimited" if n == 9 else "ok",
                ),
                trial_id=11,
                trial_arm=arm,
            )
        )
    calls.append(replace(call(40, at=start), trial_id=12, trial_arm="candidate"))
    await storage.ledger.add_many(calls)
    ledger = storage.ledger
    assert await ledger.trial_call_count(11, "candidate") == 4
    assert await ledger.trial_call_count(11, "incumbent") == 8
    assert await ledger.trial_call_count(13, "candidate") == 0
    # The n-th call in time order: candidates are calls 0, 3, 6, 9.
    assert await ledger.trial_nth_call(11, "candidate", 3) == start + timedelta(seconds=6)
    assert await ledger.trial_nth_call(11, "candidate", 5) is None
    # Newest first, within since/until, at most `limit`.
    got = await ledger.trial_calls(11, "candidate", limit=10, until=start + timedelta(seconds=6))
    assert [(c.turn_id, c.latency_ms, c.cost_usd) for c in got] == [
        (306, 6.0, None),
        (303, 3.0, 0.003),
        (300, 0.0, 0.0),
    ]
    assert got[0].at == start + timedelta(seconds=6)
    window = await ledger.trial_calls(
        11,
        "incumbent",
        limit=3,
        since=start + timedelta(seconds=2),
        until=start + timedelta(seconds=9),
    )
    assert [c.turn_id for c in window] == [308, 307, 305]
    failed = await ledger.trial_calls(11, "candidate", limit=1)
    assert [(c.turn_id, c.outcome) for c in failed] == [(309, "RateLimited")]


async def test_the_guardrails_stop_a_failing_candidate_once_on_every_backend(
    storage: Storage,
) -> None:
    # The guard over the backend's own queries: the count, the n-th call, the bounded windows.
    trials = Trials(storage.trials, ttl=60)
    trial = await trials.start("coach", "fast", share=50, min_calls=30, by="tg:1")
    start = datetime.now(UTC) - timedelta(minutes=10)
    rows = []
    for n in range(70):
        arm = "candidate" if n % 2 else "incumbent"
        failed = arm == "candidate" and n % 4 == 1  # half the candidate's calls fail
        rows.append(
            replace(
                call(
                    1000 + n,
                    turn=1000 + n,
                    at=start + timedelta(seconds=n),
                    outcome="ProviderError" if failed else "ok",
                    cost=None if failed else 0.001,
                    source="unpriced" if failed else "provider",
                    user=n % 10,  # five users on each arm
                ),
                trial_id=trial.id,
                trial_arm=arm,
            )
        )
    await storage.ledger.add_many(rows)
    guards = [TrialGuard(Trials(storage.trials, ttl=60), storage.ledger) for _ in range(2)]
    stops = [stop for guard in guards for stop in await guard.check()]
    assert len(stops) == 1
    [stop] = stops
    assert [b.guardrail for b in stop.breaches] == ["error rate"]
    # The look is over the calls up to the candidate's 30th (call 59): 30 and 30.
    assert "50.0% (15/30, CI" in stop.text
    assert "0.0% (0/30, CI" in stop.text
    ended = await storage.trials.get(trial.id)
    assert ended is not None
    assert ended.status == "guardrail"
