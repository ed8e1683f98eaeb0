"""The keeper's bound, the report's Telegram-sized parts, the schema lookup, the estimate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bot.agents.strategist import ReplyPlan
from bot.llm.specs import parse_spec
from bot.pipeline.observer import NullObserver
from bot.replay.keeper import ReplayKeeper
from bot.replay.report import LIMIT, report_messages
from bot.replay.run import Estimate, Replayer, ReplayPlan, ReplayRow, schema_class
from bot.services.model_catalog import Picked
from bot.storage.replay_models import ReplayInput
from tests.storage.test_replay_contract import replay_input


class Repo:
    def __init__(self) -> None:
        self.rows: list[ReplayInput] = []
        self.pruned: list[int] = []

    async def add_many(self, inputs: Sequence[ReplayInput]) -> None:
        self.rows.extend(inputs)

    async def prune(self, keep: int) -> int:
        self.pruned.append(keep)
        return 0

    async def recent(self, agent: str, limit: int) -> list[ReplayInput]:
        return [r for r in self.rows if r.agent == agent][-limit:]

    async def clear_chat(self, chat_id: int) -> int:
        return 0


async def test_memory_holds_at_most_keep_per_agent_and_forgets_a_chat() -> None:
    repo = Repo()
    keeper = ReplayKeeper(repo, keep=3)
    for n in range(10):
        keeper.keep(replace(replay_input(n, chat=n % 2), input_id=""))
    keeper.keep(replace(replay_input(0, agent="tutor"), input_id=""))
    assert keeper.pending == 4
    await keeper.forget_chat(1)
    assert await keeper.flush() == 2
    assert sorted(r.turn_id or 0 for r in repo.rows) == [100, 108]
    assert len({r.input_id for r in repo.rows}) == 2
    assert repo.pruned == [3]
    assert await keeper.flush() == 0


def test_schema_lookup_only_finds_the_bots_own_models() -> None:
    assert schema_class("bot.agents.strategist:ReplyPlan") is ReplyPlan
    assert schema_class("bot.agents.strategist:Nope") is None
    assert schema_class("os:path") is None
    assert schema_class("bot.config:AGENT_NAMES") is None


def _plan(inputs: list[ReplayInput]) -> ReplayPlan:
    picked = Picked("fast", parse_spec("openai:gpt-4o-mini"))
    return ReplayPlan("coach", "fast", picked, inputs, len(inputs), 0, 0, Estimate(0, 0, None))


def test_a_long_report_is_split_under_telegrams_limit_without_losing_a_row() -> None:
    inputs = [replace(replay_input(n), output="x " * 3000) for n in range(20)]
    rows = [ReplayRow(item, "y " * 3000, None, 50.0, 10, 10, 0.001, None) for item in inputs]
    messages = report_messages(_plan(inputs), rows)
    assert len(messages) > 1
    assert all(len(m.encode("utf-16-le")) // 2 <= LIMIT for m in messages)
    text = "\n".join(messages)
    assert [f"#{n} " in text for n in range(1, 21)] == [True] * 20
    assert "Totals over 20 input(s):" in messages[-1]
    assert "cost $0.020000" in messages[-1]


def test_the_estimate_prices_stored_tokens_at_the_candidates_rates() -> None:
    inputs = [replay_input(n) for n in range(4)]  # prompt 30..33, completion 5 each

    def rates(provider: str, model: str) -> tuple[float, float] | None:
        return (1e-6, 4e-6) if (provider, model) == ("openai", "gpt-4o-mini") else None

    replayer = Replayer(Repo(), None, lambda p: None, rates, NullObserver())  # type: ignore[arg-type]
    picked = Picked("fast", parse_spec("openai:gpt-4o-mini"))
    estimate = replayer.estimate(picked, inputs)
    assert (estimate.prompt_tokens, estimate.completion_tokens) == (126, 20)
    assert estimate.usd is not None
    assert abs(estimate.usd - (126e-6 + 80e-6)) < 1e-12
    unknown = replayer.estimate(Picked("x", parse_spec("openai:m-unknown")), inputs)
    assert unknown.usd is None
