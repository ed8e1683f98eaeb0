"""Fallback attempts as separate generations, through the real registry, fallback chain, openai
and anthropic SDKs (against the loopback LLM server) and the real Langfuse SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.llm.registry import ProviderRegistry
from bot.llm.types import system, user
from bot.observability.tracing import Tracing
from bot.pipeline.observer import RunInfo, StepInfo
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import children, one

PRIMARY = "openrouter:acme/broken"
SECOND = "anthropic:claude-limited"
THIRD = "openrouter:openai/gpt-4o-mini"
OPENROUTER_KEY = "sk-or-v1-fallbacktestkey0123456789"
ANTHROPIC_KEY = "sk-ant-api03-fallbacktestkey0123"


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        server.script("acme/broken", fault=Fault.SERVER_ERROR)
        server.script("claude-limited", fault=Fault.RATE_LIMITED, retry_after=0.01)
        server.script("openai/gpt-4o-mini", text="Third time lucky.", cost=0.00042)
        yield server


async def traced_chain_call(
    receiver: OtlpReceiver,
    llm_server: FakeLLMServer,
    make_tracing: TracingFactory,
    *,
    streaming: bool,
) -> tuple[Tracing, list[ReceivedSpan]]:
    settings = make_settings(
        receiver.base_url,
        openrouter_api_key=OPENROUTER_KEY,
        openrouter_base_url=llm_server.openrouter_base_url,
        anthropic_api_key=ANTHROPIC_KEY,
        anthropic_base_url=llm_server.anthropic_base_url,
        default_model=PRIMARY,
        fallback_models=f"{SECOND},{THIRD}",
        llm_max_retries=0,
    )
    tracing = make_tracing(settings)
    registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
    try:
        chain = registry.chain(PRIMARY)
        messages = [system("Be kind."), user("Help me plan my week")]
        with (
            tracing.run(RunInfo("support", 3, 3, "Help me plan my week")),
            tracing.step(StepInfo("coach", "step", PRIMARY, "default")) as step,
        ):
            if streaming:
                text = ""
                async for chunk in chain.stream(messages):
                    text += chunk.delta
            else:
                response = await chain.complete(messages, temperature=0.3)
                text = response.text
                assert [a.index for a in response.attempts] == [0, 1, 2]
            step.set_result(success=True, output=text)
        assert text == "Third time lucky."
    finally:
        await registry.close()
    assert await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 5)
    return tracing, receiver.spans()


@pytest.mark.parametrize("streaming", [False, True], ids=["complete", "stream"])
async def test_each_fallback_attempt_is_its_own_generation_with_its_cause(
    receiver: OtlpReceiver,
    llm_server: FakeLLMServer,
    make_tracing: TracingFactory,
    streaming: bool,
) -> None:
    _, spans = await traced_chain_call(receiver, llm_server, make_tracing, streaming=streaming)
    assert len(spans) == 5  # run, step, three attempts: nothing else (no SDK's own spans)
    assert {span.scope for span in spans} == {"langfuse-sdk"}
    step = one(spans, "coach")
    attempts = sorted(children(spans, step), key=lambda g: g.metadata("attempt"))
    assert [g.metadata("attempt") for g in attempts] == [0, 1, 2]
    assert [g.metadata("fallback") for g in attempts] == [False, True, True]
    assert [g.name for g in attempts] == [
        PRIMARY,
        f"{SECOND} (fallback #1)",
        f"{THIRD} (fallback #2)",
    ]
    assert [g.attributes["langfuse.observation.model.name"] for g in attempts] == [
        "acme/broken",
        "claude-limited",
        "openai/gpt-4o-mini",
    ]
    assert [g.metadata("provider") for g in attempts] == ["openrouter", "anthropic", "openrouter"]
    assert [g.metadata("source") for g in attempts] == ["default", "fallback", "fallback"]

    first, second, third = attempts
    assert first.attributes["langfuse.observation.level"] == "ERROR"
    assert first.metadata("status") == 500
    assert first.metadata("fallback_reason") is None
    assert second.attributes["langfuse.observation.level"] == "ERROR"
    assert second.metadata("status") == 429
    # each fallback says which error sent it there
    assert second.metadata("fallback_reason").startswith("ProviderServerError")
    assert third.metadata("fallback_reason").startswith("RateLimited")
    assert "langfuse.observation.level" not in third.attributes
    assert third.attributes["langfuse.observation.output"] == "Third time lucky."
    usage = third.json_attr("langfuse.observation.usage_details")
    assert usage["output"] > 0
    assert usage["total"] == usage["input"] + usage["output"]
    assert third.json_attr("langfuse.observation.cost_details") == {"total": 0.00042}
    if streaming:
        assert "langfuse.observation.completion_start_time" in third.attributes
    else:
        parameters = third.json_attr("langfuse.observation.model.parameters")
        assert parameters == {"temperature": 0.3}


async def test_the_shared_keys_used_by_the_sdks_never_reach_langfuse(
    receiver: OtlpReceiver, llm_server: FakeLLMServer, make_tracing: TracingFactory
) -> None:
    tracing, _ = await traced_chain_call(receiver, llm_server, make_tracing, streaming=False)
    assert await tracing.aclose()
    # The SDKs did send them to the model server...
    sent = " ".join(str(r.headers) for r in llm_server.requests)
    assert OPENROUTER_KEY in sent
    assert ANTHROPIC_KEY in sent
    # ... and nothing of them went to Langfuse.
    everything = b"".join(receiver.all_bytes())
    for key in (OPENROUTER_KEY, ANTHROPIC_KEY):
        assert key.encode() not in everything
