"""Issue 6's "done when", through the real stack: the console on `build_services` with the real
provider registry and openai SDK (against the loopback LLM server) and the real Langfuse SDK
(exporting to the loopback OTLP receiver).

A support turn is exactly one trace, with one span per agent and one generation per model call
(a structured-output repair turn included); after `/setmodel strategist <model>` the strategist's
generations name the override model with source `override` and the trace is tagged
`override:strategist`; leaving the console flushes the traces; no configured key is in any byte
that reached "Langfuse".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bot.app import build_services
from bot.config import Settings
from bot.console import ConsoleSession
from bot.observability.tracing import Tracing
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, unused_port_url
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.observability.kit import children, configured_secrets, generations, one, search

DEFAULT = "openai:gpt-4o-mini"
OVERRIDE = "anthropic/claude-sonnet-4.5"
SUPPORT_AGENTS = ["coach", "extraction", "strategist", "summarizer"]
INPUT = "langfuse.observation.input"


def override_reply(request: RecordedRequest) -> str:
    """The override model's first plan is prose, not JSON; its repair turn (which quotes the bad
    reply back as an assistant message) is valid."""
    if any(m.get("role") == "assistant" for m in request.messages):
        return agent_reply(request)
    return "Sure! The plan: talk about a wind-down routine."


def scripted_input(lines: list[str]):  # type: ignore[no-untyped-def]
    feed: Iterator[str] = iter(lines)

    async def read_line() -> str | None:
        return next(feed, None)

    return read_line


def as_sent(messages: list[dict[str, Any]]) -> str:
    """A model call's messages as a comparable string (role and text of each)."""
    return json.dumps([(m["role"], m["content"]) for m in messages])


def model_calls(llm: FakeLLMServer) -> list[RecordedRequest]:
    return [r for r in llm.requests if r.api == "openai"]


def trace_of(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


async def test_a_console_support_turn_is_one_trace_and_setmodel_moves_only_the_strategist(
    tmp_path: Path,
) -> None:
    secrets = configured_secrets()
    out: list[str] = []
    with OtlpReceiver() as receiver:
        async with FakeLLMServer() as llm:
            llm.default.text = agent_reply
            llm.script(OVERRIDE, text=override_reply)
            settings = Settings(  # type: ignore[call-arg]
                _env_file=None,
                database_url=f"sqlite:///{tmp_path / 'bot.db'}",
                default_model=DEFAULT,
                openai_base_url=llm.openai_base_url,
                openrouter_base_url=llm.openrouter_base_url,
                anthropic_base_url=unused_port_url(),
                groq_base_url=unused_port_url(),
                langfuse_public_key=f"pk-lf-test-{uuid.uuid4().hex[:12]}",
                langfuse_base_url=receiver.base_url,
                # The summarizer runs (and calls its model) on every turn.
                summary_every=1,
                llm_max_retries=0,
                shutdown_timeout=5,
                **secrets,
            )
            async with build_services(settings) as services:
                assert isinstance(services.observer, Tracing)
                session = ConsoleSession(
                    services,
                    scripted_input(
                        [
                            "I sleep badly",
                            f"/setmodel strategist {OVERRIDE}",
                            "what should I do tonight?",
                            "/quit",
                        ]
                    ),
                    out.append,
                    user_id=7,
                    chat_id=7,
                )
                assert await session.run() == 0
                await services.runner.wait_background()
                stored = await services.storage.messages.recent(7)
            # Leaving build_services closed tracing: that alone must have flushed the traces
            # (the SDK's own batching would wait 5 s; nothing else flushed).
        calls = model_calls(llm)
        override_calls = [r for r in calls if r.model == OVERRIDE]
        assert [r.headers["authorization"] for r in override_calls] == [
            f"Bearer {secrets['openrouter_api_key']}"
        ] * 2  # the plan, and its repair turn
        spans = receiver.spans()

    text = "".join(out)
    assert "bot> Try a fixed wind-down routine (gpt-4o-mini)." in text
    assert f"strategist now runs on openrouter:{OVERRIDE}" in text

    # Two turns, two traces; each stored message names the trace that produced it.
    assert [(m.role, m.text[:12]) for m in stored] == [
        ("user", "I sleep badl"),
        ("assistant", "Try a fixed "),
        ("user", "what should "),
        ("assistant", "Try a fixed "),
    ]
    first_id, second_id = stored[0].trace_id, stored[2].trace_id
    assert first_id is not None
    assert second_id is not None
    assert (stored[1].trace_id, stored[3].trace_id) == (first_id, second_id)
    assert {span.trace_id for span in spans} == {first_id, second_id}

    # One generation per model call: the generations are exactly the calls the server saw
    # (the repair turn's input is the one thing tracing cannot see: it is matched by model).
    assert len(calls) == 9  # 4 agents x 2 turns, and the strategist's repair turn
    repair = next(g for g in generations(spans) if g.metadata("repair"))
    assert repair.name == f"openrouter:{OVERRIDE} (repair)"
    assert repair.attributes["langfuse.observation.model.name"] == OVERRIDE
    [repair_call] = [r for r in override_calls if r.messages[-2]["role"] == "assistant"]
    calls_without_repair = [r for r in calls if r is not repair_call]
    assert sorted(
        (g.attributes["langfuse.observation.model.name"], as_sent(g.json_attr(INPUT)))
        for g in generations(spans)
        if g is not repair
    ) == sorted((r.model, as_sent(r.messages)) for r in calls_without_repair)

    first, second = trace_of(spans, first_id), trace_of(spans, second_id)
    for trace in (first, second):
        root = one(trace, "support")
        assert root.parent_id is None
        steps = children(trace, root)
        # One span per agent, with a generation per model call, and nothing else in the trace
        # (the search of the user's notes has its span and calls no model).
        assert sorted(step.name for step in steps) == sorted([*SUPPORT_AGENTS, "archives"])
        for step in steps:
            assert step.observation_type == "agent"
            assert step.metadata("success") is True
            made = children(trace, step)
            assert all(g.observation_type == "generation" for g in made)
            assert all(g.metadata("agent") == step.name for g in made)
            repaired = trace is second and step.name == "strategist"
            assert len(made) == (2 if repaired else 0 if step.name == "archives" else 1)
    assert len(first) == 1 + 5 + 4
    assert len(second) == 1 + 5 + 5

    def models(trace: list[ReceivedSpan]) -> list[tuple[str, str, str, str]]:
        return sorted(
            (
                g.metadata("agent"),
                g.metadata("provider"),
                g.attributes["langfuse.observation.model.name"],
                g.metadata("source"),
            )
            for g in generations(trace)
        )

    default = ("openai", "gpt-4o-mini", "default")
    assert models(first) == [(agent, *default) for agent in SUPPORT_AGENTS]
    # After /setmodel the strategist alone moved, to the override on OpenRouter.
    assert models(second) == [
        ("coach", *default),
        ("extraction", *default),
        ("strategist", "openrouter", OVERRIDE, "override"),
        ("strategist", "openrouter", OVERRIDE, "override"),
        ("summarizer", *default),
    ]
    strategist = one(second, "strategist")
    assert strategist.metadata("source") == "override"
    assert strategist.metadata("model") == f"openrouter:{OVERRIDE}"
    assert "override:strategist" in one(second, "support").attributes["langfuse.trace.tags"]
    assert "override:strategist" not in one(first, "support").attributes["langfuse.trace.tags"]

    # Not one configured key in any byte that reached Langfuse.
    assert search(receiver, list(secrets.values())) == []
    assert search(receiver, settings.secrets()) == []
