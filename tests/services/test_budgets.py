"""Budgets over the real parts: reservations made from prices, settled with the cost OpenRouter
reports through the real openai SDK on the loopback server, counters in process and on the real
Redis. Two replicas on Redis share one budget: concurrent turns from both overshoot by at most one
reservation per turn in flight, where counters per process would each spend the whole budget."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.llm.protocol import LLMProvider
from bot.llm.registry import ProviderRegistry
from bot.llm.specs import ModelSpec, parse_spec
from bot.llm.types import ChatMessage
from bot.observatory.capture import LedgerProvider, Turn, turn_scope
from bot.pipeline.observer import CURRENT_STEP, StepInfo
from bot.services.budget_counters import LocalCounters, RedisCounters, SpendCounters
from bot.services.budget_ledger import LedgerSeeder
from bot.services.budgets import BudgetExceeded, Budgets, BudgetSkipped, ScopeKey
from bot.storage.ledger_models import LedgerCall
from bot.storage.sqlite import SQLiteStorage
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.ports import free_port
from tests.fakes.redis_monitor import RedisCommands
from tests.llm.conftest import settings_for

COST = 0.01
# USD per token: a 100-token answer costs 0.001 by the price; the worst case of max_tokens=1000
# is 0.01 plus the prompt.
RATES = (0.000001, 0.00001)
MODEL = "test/m-budget"


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    storage = SQLiteStorage(str(tmp_path / "bot.db"))
    await storage.connect()
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def registry(llm_server: FakeLLMServer) -> AsyncIterator[ProviderRegistry]:
    llm_server.default.text = "ok"
    llm_server.default.cost = COST
    llm_server.default.latency = 0.05
    registry = ProviderRegistry(settings_for(llm_server))
    try:
        yield registry
    finally:
        await registry.close()


def budgets_over(
    storage: SQLiteStorage, counters: SpendCounters, *, user_day: float, **kwargs: object
) -> Budgets:
    budgets = Budgets(
        storage.budgets,
        counters,
        env={"user:day": user_day},
        policies={},
        **kwargs,  # type: ignore[arg-type]
    )
    budgets.add_price_source("openrouter", lambda model: RATES)
    return budgets


async def ask(
    budgets: Budgets, registry: ProviderRegistry, user: int, agent: str = "coach"
) -> bool:
    """One call of `agent` for `user` behind the budgets; False when refused."""
    llm = budgets.guard(
        agent, registry.get(f"openrouter:{MODEL}"), user_id=user, optional=agent != "coach"
    )
    try:
        await llm.complete([ChatMessage("user", "hello")], max_tokens=1000)
    except BudgetExceeded:
        return False
    return True


async def spent(budgets: Budgets, user: int) -> float:
    key = f"user:{user}:day:{budgets.period_id('day')}"
    return (await budgets.spent([key]))[0][key]


async def test_a_reservation_is_settled_with_the_reported_cost(
    storage: SQLiteStorage, registry: ProviderRegistry
) -> None:
    budgets = budgets_over(storage, LocalCounters(), user_day=0.035)
    assert [await ask(budgets, registry, 1) for _ in range(4)] == [True, True, True, True]
    # 0.03 spent after three; the fourth's worst case (~0.01) was reserved under the limit.
    assert await spent(budgets, 1) == pytest.approx(0.04)
    assert await ask(budgets, registry, 1) is False
    assert await ask(budgets, registry, 2) is True  # another user has their own budget
    llm = budgets.guard("strategist", registry.get(f"openrouter:{MODEL}"), user_id=1, optional=True)
    with pytest.raises(BudgetSkipped):  # an optional helper is skipped, not refused
        await llm.complete([ChatMessage("user", "hi")], max_tokens=1000)


async def test_a_new_day_in_the_zone_starts_from_zero(
    storage: SQLiteStorage, registry: ProviderRegistry
) -> None:
    now = datetime(2026, 12, 2, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    budgets = budgets_over(
        storage, LocalCounters(), user_day=0.01, timezone="Europe/Berlin", now=lambda: now
    )
    assert await ask(budgets, registry, 1) is True
    assert await ask(budgets, registry, 1) is False
    assert budgets.reset_text("day") == "at midnight Europe/Berlin (in 0 h 30 min)"
    now += timedelta(minutes=31)  # 00:01 in Berlin, still 2 December in UTC
    assert await ask(budgets, registry, 1) is True


def test_the_period_ids_change_at_the_zones_midnight_and_follow_a_clock_set_back(
    storage: SQLiteStorage,
) -> None:
    """`period_ids` is worked out once a day; the cache must never outlive the zone's day."""
    clock = [datetime(2026, 11, 30, 22, 59, 59, tzinfo=UTC)]  # 23:59:59 in Berlin
    budgets = budgets_over(
        storage, LocalCounters(), user_day=1.0, timezone="Europe/Berlin", now=lambda: clock[0]
    )
    assert budgets.period_ids() == ("2026-11-30", "2026-11")
    clock[0] += timedelta(seconds=1)  # midnight in Berlin: a new day and a new month
    assert budgets.period_ids() == ("2026-12-01", "2026-12")
    clock[0] -= timedelta(hours=2)  # the clock set back
    assert budgets.period_ids() == ("2026-11-30", "2026-11")
    clock[0] = datetime(2027, 3, 28, 21, 59, tzinfo=UTC)  # 23:59 on the 23-hour day (CEST)
    assert budgets.period_id("day") == "2027-03-28"
    clock[0] += timedelta(minutes=1)
    assert budgets.period_id("day") == "2027-03-29"


async def _race(
    replicas: list[Budgets], registry: ProviderRegistry, *, turns: int, limit: float
) -> float:
    results = await asyncio.gather(
        *(ask(replicas[i % len(replicas)], registry, 7) for i in range(turns))
    )
    assert not all(results)  # the budget stopped some
    return await spent(replicas[0], 7)


async def test_two_replicas_on_redis_share_one_budget(
    storage: SQLiteStorage, registry: ProviderRegistry, redis_url: str
) -> None:
    prefix = f"test-spend-{secrets.token_hex(4)}"
    counters = [RedisCounters(redis_url, prefix=prefix) for _ in range(2)]
    try:
        replicas = [budgets_over(storage, c, user_day=0.05) for c in counters]
        # 40 turns at once, 20 on each replica: every one reserves before any settles.
        total = await _race(replicas, registry, turns=40, limit=0.05)
        # The first reservations that fit under 0.05 were let through, and nothing else:
        # at most one reservation (~0.0101) over, with 40 turns in flight together.
        assert total <= 0.05 + 0.0102
    finally:
        for c in counters:
            await c.close()


async def test_counters_per_process_would_overshoot(
    storage: SQLiteStorage, registry: ProviderRegistry
) -> None:
    # The same race with each replica counting on its own: each lets its own budget's worth
    # through, and the shared budget is overshot by a whole budget. (This is what the test
    # above would see without Redis.)
    replicas = [budgets_over(storage, LocalCounters(), user_day=0.05) for _ in range(2)]
    await _race(replicas, registry, turns=40, limit=0.05)
    per_replica = [await spent(r, 7) for r in replicas]
    assert sum(per_replica) > 0.05 + 0.0102


class RegistryDowngrade:
    """`downgrade:<model>` read as a spec and run on the registry's shared keys."""

    def __init__(self, registry: ProviderRegistry) -> None:
        self.registry = registry

    def interpret(self, model: str) -> ModelSpec:
        return parse_spec(model)

    def chain(self, spec: ModelSpec, preference: str) -> LLMProvider:
        return self.registry.get(spec)


async def test_a_downgrade_runs_on_the_cheaper_model_but_never_crosses_a_local_preference(
    storage: SQLiteStorage, registry: ProviderRegistry, llm_server: FakeLLMServer
) -> None:
    budgets = Budgets(
        storage.budgets,
        LocalCounters(),
        env={"user:day": 0.01},
        policies={"coach": "downgrade:openrouter:test/m-cheap"},
    )
    budgets.add_price_source("openrouter", lambda model: RATES)
    budgets.downgrade = RegistryDowngrade(registry)
    assert await ask(budgets, registry, 1) is True  # spends the day's 0.01
    llm = budgets.guard("coach", registry.get(f"openrouter:{MODEL}"), user_id=1, optional=False)
    reply = await llm.complete([ChatMessage("user", "hi")], max_tokens=100)
    assert llm_server.requests[-1].model == "test/m-cheap"
    assert reply.text == "ok"
    local = budgets.guard(
        "coach", registry.get(f"openrouter:{MODEL}"), user_id=1, optional=False, preference="local"
    )
    mark = len(llm_server.requests)
    with pytest.raises(BudgetExceeded):  # refused: the cheaper model is a cloud one
        await local.complete([ChatMessage("user", "hi")], max_tokens=100)
    assert len(llm_server.requests) == mark


@pytest.mark.parametrize("kind", ["local", "redis"])
async def test_a_limit_reached_through_float_sums_counts_as_reached(
    kind: str, redis_url: str
) -> None:
    # 0.0018934... reserved, then settled up to a real cost of 0.01: the float sum is
    # 0.009999999999999998, which must count as the limit of 0.01 reached.
    counters: SpendCounters = (
        LocalCounters()
        if kind == "local"
        else RedisCounters(redis_url, prefix=f"test-eps-{secrets.token_hex(4)}")
    )
    try:
        reserved = 0.0018934812749936492
        assert await counters.reserve([("k", 0.01)], reserved) is None
        await counters.settle(["k"], 0.01 - reserved)
        if kind == "local":  # Redis sums in long double: no error there to begin with
            assert (await counters.totals(["k"]))["k"] < 0.01
        assert await counters.reserve([("k", 0.01)], 0.001) == "k"
    finally:
        await counters.close()


class Recorded(list[LedgerCall]):
    def record(self, call: LedgerCall) -> None:
        self.append(call)


class LedgerDowngrade(RegistryDowngrade):
    def __init__(self, registry: ProviderRegistry, sink: Recorded) -> None:
        super().__init__(registry)
        self.sink = sink

    def chain(self, spec: ModelSpec, preference: str) -> LLMProvider:
        return LedgerProvider(self.registry.get(spec), self.sink)


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_downgraded_call_is_not_counted_in_the_trial_arm(
    streamed: bool, storage: SQLiteStorage, registry: ProviderRegistry, llm_server: FakeLLMServer
) -> None:
    recorded = Recorded()
    budgets = Budgets(
        storage.budgets,
        LocalCounters(),
        env={"user:day": 0.01},
        policies={"coach": "downgrade:openrouter:test/m-cheap"},
    )
    budgets.add_price_source("openrouter", lambda model: RATES)
    budgets.downgrade = LedgerDowngrade(registry, recorded)
    step = StepInfo(
        "coach", "step", f"openrouter:{MODEL}", "trial", trial_id=3, trial_arm="candidate"
    )
    messages = [ChatMessage("user", "hi")]
    with turn_scope(Turn("support", 1, 1, turn_id=10)):
        token = CURRENT_STEP.set(step)
        try:
            for _ in range(2):  # the first spends the day's 0.01, the second is downgraded
                leaf = LedgerProvider(registry.get(f"openrouter:{MODEL}"), recorded)
                llm = budgets.guard("coach", leaf, user_id=1, optional=False)
                if streamed:
                    async for _chunk in llm.stream(messages, max_tokens=100):
                        pass
                else:
                    await llm.complete(messages, max_tokens=100)
            assert CURRENT_STEP.get() is step  # the step is left as it was
        finally:
            CURRENT_STEP.reset(token)
    assert llm_server.requests[-1].model == "test/m-cheap"
    assert [(c.model, c.trial_id, c.trial_arm) for c in recorded] == [
        (MODEL, 3, "candidate"),
        ("test/m-cheap", None, None),
    ]


@pytest.mark.parametrize("priced", [True, False])
async def test_a_call_under_a_budget_is_two_redis_round_trips_and_alerts_from_the_settlement(
    priced: bool,
    storage: SQLiteStorage,
    registry: ProviderRegistry,
    llm_server: FakeLLMServer,
    redis_url: str,
) -> None:
    # The reservation, then one settlement that corrects it, counts an unpriced call and
    # answers the totals the 80 % alert is checked against (no read of its own).
    counters = RedisCounters(redis_url, prefix=f"test-trips-{secrets.token_hex(4)}")
    budgets = Budgets(storage.budgets, counters, env={"user:day": 0.012}, policies={})
    if priced:
        budgets.add_price_source("openrouter", lambda model: RATES)
    else:
        llm_server.default.cost = None  # no figure from the provider, none in a table
    alerts: list[str] = []

    async def notify(text: str) -> None:
        alerts.append(text)

    budgets.notify = notify
    try:
        async with RedisCommands(redis_url) as seen:
            assert await ask(budgets, registry, 8, agent="extraction")  # loads the scripts
            await budgets.drain()  # its settlement, which would otherwise ride with 9's call
            mark = await seen.mark()
            assert await ask(budgets, registry, 9)
            await budgets.drain()  # the turn does not wait for the settlement; this test does
            names = await seen.since(mark)
        key = f"user:9:day:{budgets.period_id('day')}"
        totals, unpriced = await budgets.spent([key])
        if priced:
            # 0.01 of 0.012 spent: one alert, its claim the call's third command.
            assert names == ["EVALSHA", "EVALSHA", "SET"]
            assert totals[key] == pytest.approx(COST)
            assert unpriced[key] == 0
            assert len(alerts) == 2
            assert "user 9's daily budget is 83% spent" in alerts[1]
        else:
            assert names == ["EVALSHA", "EVALSHA"]
            assert totals[key] == 0.0
            assert unpriced[key] == 1
            assert alerts == []
    finally:
        await counters.close()


async def test_the_settlement_answers_the_totals_and_never_goes_below_zero(redis_url: str) -> None:
    counters = RedisCounters(redis_url, prefix=f"test-settle-{secrets.token_hex(4)}")
    try:
        assert await counters.reserve([("a", 1.0), ("b", None)], 0.25) is None
        assert await counters.settle(["a", "b"], -0.125) == {"a": 0.125, "b": 0.125}
        # Settled after its key expired (or was never reserved): 0, not below.
        assert await counters.settle(["c"], -0.5, unpriced=True) == {"c": 0.0}
        assert await counters.settle(["a"], 0.0) == {"a": 0.125}
        assert await counters.totals(["a", "b", "c"]) == {"a": 0.125, "b": 0.125, "c": 0.0}
        assert await counters.unpriced(["a", "c"]) == {"a": 0, "c": 1}
    finally:
        await counters.close()


async def test_calls_in_flight_share_round_trips_and_a_reservation_counts_after_earlier_settlements(
    redis_url: str,
) -> None:
    """In a burst a call's reservation and its settlement were two round trips each (8 of a
    turn's ~12 Redis commands). What one loop turn asks goes as one script call, and a
    settlement rides with the next reservation; queued when called, it is counted first."""
    counters = RedisCounters(redis_url, prefix=f"test-batch-{secrets.token_hex(4)}")
    try:
        async with RedisCommands(redis_url) as seen:
            assert await counters.reserve([("warm", None)], 0.0) is None  # loads the script
            mark = await seen.mark()
            # Two parallel agents' reservations: one round trip.
            first, second = await asyncio.gather(
                counters.reserve([("u", 0.01), ("bot", None)], 0.002),
                counters.reserve([("u", 0.01), ("bot", None)], 0.002),
            )
            assert (first, second) == (None, None)
            assert await seen.since(mark) == ["EVALSHA"]
            # The first call cost 0.009 more than it reserved (0.011 of the 0.01 limit): its
            # settlement is not awaited (the turn goes on), the next reservation is refused
            # all the same, and both went in one round trip.
            mark = await seen.mark()
            settled = counters.settle(["u", "bot"], 0.009)
            assert await counters.reserve([("u", 0.01), ("bot", None)], 0.002) == "u"
            assert await settled == {"u": pytest.approx(0.013), "bot": pytest.approx(0.013)}
            assert await seen.since(mark) == ["EVALSHA"]
            # A settlement alone goes within SETTLE_WINDOW, and before the counters close.
            mark = await seen.mark()
            assert await counters.settle(["u"], -0.004, unpriced=True) == {
                "u": pytest.approx(0.009)
            }
            assert await seen.since(mark) == ["EVALSHA"]
            late = counters.settle(["bot"], -0.013)
        await counters.close()
        totals = RedisCounters(redis_url, prefix=counters._prefix)
        try:
            assert await totals.totals(["u", "bot"]) == {"u": pytest.approx(0.009), "bot": 0.0}
            assert await totals.unpriced(["u"]) == {"u": 1}
        finally:
            await totals.close()
        assert await late == {"bot": 0.0}
    finally:
        await counters.close()


async def test_with_redis_unreachable_every_call_of_a_batch_counts_in_process(
    storage: SQLiteStorage, registry: ProviderRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed script call fails each operation in it; each falls back on its own, so the
    limit still holds (in this process) and no call waits for ever."""
    counters = RedisCounters(f"redis://127.0.0.1:{free_port()}/0", prefix="test-down")
    budgets = budgets_over(storage, counters, user_day=COST)
    try:
        first, second = await asyncio.wait_for(
            asyncio.gather(ask(budgets, registry, 3), ask(budgets, registry, 4)), 30
        )
        assert (first, second) == (True, True)  # both reservations in one failed batch
        await budgets.drain()  # the settlements failed too, and were counted here
        assert not await ask(budgets, registry, 3)  # 0.01 of 0.01 spent, in process
        assert "counting in process" in caplog.text
    finally:
        await counters.close()


class RefusingSettlements(LocalCounters):
    def settle(
        self, keys: Sequence[str], delta: float, *, unpriced: bool = False
    ) -> Awaitable[dict[str, float]]:
        raise RuntimeError("no settlement taken")


async def test_a_settlement_the_counters_refuse_at_once_never_fails_the_call(
    storage: SQLiteStorage, registry: ProviderRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """A settlement is queued inside the model call's `finally`: an error there would have
    replaced the call's answer."""
    budgets = budgets_over(storage, RefusingSettlements(), user_day=1.0)
    assert await ask(budgets, registry, 6)
    assert "did not take a settlement" in caplog.text


async def test_a_turn_does_not_wait_for_its_settlement_but_the_figures_shown_do(
    storage: SQLiteStorage, registry: ProviderRegistry, redis_url: str
) -> None:
    counters = RedisCounters(redis_url, prefix=f"test-soon-{secrets.token_hex(4)}")
    budgets = budgets_over(storage, counters, user_day=10.0)
    try:
        assert await ask(budgets, registry, 5)
        assert budgets._settling  # still going when the call has returned
        assert await spent(budgets, 5) == pytest.approx(COST)  # `spent` waits for it
        assert not budgets._settling
    finally:
        await counters.close()


async def test_a_new_users_parallel_calls_read_the_ledger_once(
    storage: SQLiteStorage, registry: ProviderRegistry
) -> None:
    """A new user's first turn runs two agents in parallel; each started the user's counters from
    the ledger, so every new user cost two ledger reads (0.50 InsForge requests a turn in
    `e2e_load --production`). Callers of a counter being started now wait for that one read."""
    budgets = budgets_over(storage, LocalCounters(), user_day=10.0)
    seeder = LedgerSeeder(storage.ledger)
    reads: list[list[str]] = []

    async def counting(keys: Sequence[ScopeKey], starts: dict[str, datetime]) -> dict[str, float]:
        reads.append([k.key for k in keys])
        await asyncio.sleep(0.05)  # the read in flight while the other calls arrive
        return await seeder(keys, starts)

    budgets.seeder = counting
    results = await asyncio.gather(
        *(ask(budgets, registry, 4201, agent) for agent in ("coach", "strategist", "extraction"))
    )
    assert results == [True, True, True]
    assert len(reads) == 1
    assert await spent(budgets, 4201) == pytest.approx(3 * COST)
