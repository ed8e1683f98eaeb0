"""Capture: one ledger row per model call attempt, through the real registry, SDKs and loopback
model server; a repair turn is its own row; and the rows written by the app's shutdown order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.app import build_services
from bot.llm.registry import ProviderRegistry
from bot.llm.types import system, user
from bot.observatory.capture import INVALID_OUTPUT, LedgerProvider, Turn, turn_scope
from bot.pipeline.observer import CURRENT_STEP, NullObserver, StepInfo
from bot.storage.ledger_models import LedgerCall
from bot.storage.sqlite import SQLiteStorage
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.llm.conftest import settings_for


class Plan(BaseModel):
    topic: str
    steps: list[str]


class Rows:
    def __init__(self) -> None:
        self.calls: list[LedgerCall] = []

    def record(self, call: LedgerCall) -> None:
        self.calls.append(call)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as llm:
        yield llm


async def test_a_repaired_structured_call_is_two_rows(server: FakeLLMServer) -> None:
    good = {"topic": "fractions", "steps": ["halves"]}

    def reply(request: RecordedRequest) -> str:
        return json.dumps(good) if "not valid" in request.last_user_text else '{"topic": "x"}'

    server.script("gpt-4o-mini", reply)
    rows = Rows()
    registry = ProviderRegistry(settings_for(server), wrap=lambda leaf: LedgerProvider(leaf, rows))
    step = StepInfo("strategist", "step", "openai:gpt-4o-mini", "agent", config_version=4)
    try:
        with turn_scope(Turn("support", 5, 6, turn_id=77)):
            token = CURRENT_STEP.set(step)
            try:
                response = await registry.get("openai:gpt-4o-mini").complete(
                    [system("Plan."), user("fractions")], schema=Plan
                )
            finally:
                CURRENT_STEP.reset(token)
        # Outside a turn nothing is recorded.
        await registry.get("openai:gpt-4o-mini").complete([user("hi")])
    finally:
        await registry.close()
    assert response.parsed == Plan(**good)
    first, second = rows.calls
    assert (first.outcome, second.outcome) == (INVALID_OUTPUT, "ok")
    assert len(server.answers) == 3
    for row, answered in zip(rows.calls, server.answers[:2], strict=True):
        assert (row.prompt_tokens, row.completion_tokens) == (
            answered.prompt_tokens,
            answered.completion_tokens,
        )
        assert (row.turn_id, row.chat_id, row.user_id, row.pipeline) == (77, 5, 6, "support")
        assert (row.agent, row.role, row.level, row.config_version) == (
            "strategist",
            "plan",
            "agent",
            4,
        )
        assert (row.provider, row.model, row.spec) == (
            "openai",
            "gpt-4o-mini",
            "openai:gpt-4o-mini",
        )
        assert row.cost_source == "unpriced"  # priced later, by the writer


async def test_every_call_of_a_turn_is_written_at_shutdown_background_steps_included(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    server.default.text = agent_reply
    database = tmp_path / "bot.db"
    settings = settings_for(
        server, database_url=f"sqlite:///{database}", default_model="openai:gpt-4o-mini"
    )
    async with build_services(settings, observer=NullObserver()) as services:
        assert services.ledger is not None
        result = await services.conversation.handle("support", user_id=3, chat_id=3, text="hi")
        assert result.success
        # The summarizer is still running in the background: the shutdown drains it, then
        # writes the ledger, then closes the database.
    storage = SQLiteStorage(str(database))
    await storage.connect()
    try:
        stored = await storage.messages.recent(3, 10)
        rows = await storage.db.read(
            "SELECT agent, turn_id, cost_source FROM ledger_calls ORDER BY agent", action="read"
        )
    finally:
        await storage.close()
    assert sorted(r["agent"] for r in rows) == ["coach", "extraction", "strategist", "summarizer"]
    assert len(rows) == len(server.requests)
    assert {r["turn_id"] for r in rows} == {stored[0].id}
    assert {r["cost_source"] for r in rows} == {"price_table"}  # gpt-4o-mini: genai-prices


async def test_with_the_ledger_off_nothing_is_captured(
    tmp_path: Path, server: FakeLLMServer
) -> None:
    server.default.text = agent_reply
    database = tmp_path / "bot.db"
    settings = settings_for(
        server,
        database_url=f"sqlite:///{database}",
        default_model="openai:gpt-4o-mini",
        ledger_enabled=False,
    )
    async with build_services(settings, observer=NullObserver()) as services:
        assert services.ledger is None
        assert (
            await services.conversation.handle("support", user_id=3, chat_id=3, text="hi")
        ).success
        await services.runner.wait_background()
        assert (
            await services.storage.db.read(  # type: ignore[attr-defined]
                "SELECT * FROM ledger_calls", action="read"
            )
            == []
        )
