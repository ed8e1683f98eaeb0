"""A structured-output repair turn is a model call of its own, so it is a generation of its own.

The repair happens inside the leaf provider (`bot.llm.structured`), below `TracedProvider`; here
the real OpenAI-compatible provider, built by the real registry with tracing's wrapper, talks to
the loopback LLM server through the real openai SDK, and the real Langfuse SDK exports to the
loopback OTLP receiver.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from bot.llm.registry import ProviderRegistry
from bot.llm.types import system, user
from bot.pipeline.observer import RunInfo, StepInfo
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import children, generations, one

MODEL = "anthropic/claude-sonnet-4.5"
LATENCY = 0.05
COST = 0.0015


class ReplyPlan(BaseModel):
    intent: str
    key_points: list[str]


def invalid_then_valid(request: RecordedRequest) -> str:
    """The first answer misses a field; the repair turn (which quotes it back) gets it right."""
    if any(m.get("role") == "assistant" for m in request.messages):
        return json.dumps({"intent": "sleep advice", "key_points": ["wind down"]})
    return json.dumps({"intent": "sleep advice"})


async def test_a_repair_turn_is_its_own_generation(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    async with FakeLLMServer() as llm:
        llm.script(MODEL, text=invalid_then_valid, latency=LATENCY, cost=COST)
        settings = make_settings(
            receiver.base_url,
            openrouter_api_key="sk-or-test",
            openrouter_base_url=llm.openrouter_base_url,
        )
        tracing = make_tracing(settings)
        registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
        try:
            provider = registry.chain(f"openrouter:{MODEL}")
            with (
                tracing.run(RunInfo("support", 1, 1, "I sleep badly")),
                tracing.step(StepInfo("strategist", "step", f"openrouter:{MODEL}", "override")),
            ):
                response = await provider.complete(
                    [system("Plan the reply."), user("I sleep badly")], schema=ReplyPlan
                )
        finally:
            await registry.close()

    assert response.parsed == ReplyPlan(intent="sleep advice", key_points=["wind down"])
    calls = [r for r in llm.requests if r.api == "openai"]
    assert len(calls) == 2  # the model was asked twice...

    assert await tracing.flush(timeout=5)
    assert await receiver.wait_until_async(lambda r: len(generations(r.spans())) >= 2)
    spans = receiver.spans()
    step = one(spans, "strategist")
    # ...so the step has two generations, in the order the calls were made.
    first, repair = sorted(children(spans, step), key=lambda s: s.start_ns)
    assert len(generations(spans)) == 2
    assert first.observation_type == repair.observation_type == "generation"
    assert first.name == f"openrouter:{MODEL}"
    assert repair.name == f"openrouter:{MODEL} (repair)"
    for generation in (first, repair):
        assert generation.attributes["langfuse.observation.model.name"] == MODEL
        assert generation.metadata("source") == "override"
        assert generation.metadata("agent") == "strategist"
        assert generation.json_attr("langfuse.observation.cost_details") == {"total": COST}
    assert (first.metadata("turn"), repair.metadata("turn")) == (0, 1)
    assert repair.metadata("repair") is True

    # The first reply did not validate: a warning, not the answer.
    assert first.attributes["langfuse.observation.level"] == "WARNING"
    assert (
        "did not validate against ReplyPlan"
        in first.attributes["langfuse.observation.status_message"]
    )
    assert "langfuse.observation.output" not in first.attributes
    assert repair.json_attr("langfuse.observation.output") == {
        "intent": "sleep advice",
        "key_points": ["wind down"],
    }

    # Each generation carries its own call's tokens, which add up to the response's.
    first_usage = first.json_attr("langfuse.observation.usage_details")
    repair_usage = repair.json_attr("langfuse.observation.usage_details")
    assert first_usage["input"] + repair_usage["input"] == response.usage.prompt_tokens
    assert first_usage["output"] + repair_usage["output"] == response.usage.completion_tokens
    assert repair_usage["input"] > first_usage["input"]  # the repair quotes the bad reply back

    # And its own time: one after the other, each as long as its call.
    assert first.end_ns <= repair.start_ns
    assert first.end_ns - first.start_ns >= LATENCY * 1e9
    assert repair.end_ns - repair.start_ns >= LATENCY * 1e9
    assert repair.end_ns - first.start_ns < (response.latency_ms / 1000 + 0.5) * 1e9


async def test_a_call_without_repair_stays_one_generation(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    async with FakeLLMServer() as llm:
        llm.script(MODEL, text=json.dumps({"intent": "ok", "key_points": []}))
        settings = make_settings(
            receiver.base_url,
            openrouter_api_key="sk-or-test",
            openrouter_base_url=llm.openrouter_base_url,
        )
        tracing = make_tracing(settings)
        registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
        try:
            provider = registry.chain(f"openrouter:{MODEL}")
            with (
                tracing.run(RunInfo("support", 1, 1, "hi")),
                tracing.step(StepInfo("strategist", "step", f"openrouter:{MODEL}", "default")),
            ):
                await provider.complete([user("hi")], schema=ReplyPlan)
        finally:
            await registry.close()
    assert await tracing.flush(timeout=5)
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 3)
    (generation,) = generations(receiver.spans())
    assert generation.name == f"openrouter:{MODEL}"
    assert generation.attributes.get("langfuse.observation.level", "DEFAULT") == "DEFAULT"
    assert generation.json_attr("langfuse.observation.output") == {"intent": "ok", "key_points": []}
