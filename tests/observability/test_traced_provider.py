"""`TracedProvider` records every call and never changes what the call does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from bot.llm.errors import RateLimited
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage, user
from bot.observability.traced_provider import TracedProvider
from bot.pipeline.observer import RunInfo, StepInfo
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import generations


def long_answer(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return "word " * 50


async def test_wrapping_keeps_the_providers_surface(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    inner = FunctionProvider(long_answer, provider="groq", model="llama")
    traced = tracing.wrap_provider(inner)
    assert isinstance(traced, TracedProvider)
    assert tracing.wrap_provider(traced) is traced  # never wrapped twice
    assert (traced.provider, traced.model, traced.spec) == ("groq", "llama", "groq:llama")
    assert traced.calls is inner.calls  # anything else is the inner provider's
    await traced.close()
    assert inner.closed


async def test_errors_pass_through_unchanged_and_are_recorded(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    error = RateLimited("slow down", provider="openrouter", model="m", status=429, retry_after=3)

    def limited(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        raise error

    traced = tracing.wrap_provider(FunctionProvider(limited, provider="openrouter", model="m"))
    with pytest.raises(RateLimited) as caught:
        await traced.complete([user("hi")])
    assert caught.value is error
    await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 1)
    (generation,) = receiver.spans()
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    assert generation.metadata("error_type") == "RateLimited"
    assert generation.metadata("status") == 429


async def test_an_abandoned_stream_and_a_cancelled_call_end_their_generations(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    inner = FunctionProvider(long_answer, model="stream", chunk_size=5)
    traced = tracing.wrap_provider(inner)
    with (
        tracing.run(RunInfo("support", 1, 1, "hi")),
        tracing.step(StepInfo("coach", "step", "function:stream", "default")),
    ):
        stream = traced.stream([user("hi")])
        async for chunk in stream:
            assert chunk.delta
            break  # the reader stops early (e.g. the user deleted the chat)
        await stream.aclose()  # type: ignore[attr-defined]

        slow = tracing.wrap_provider(FunctionProvider(long_answer, model="slow", latency=5))
        task = asyncio.create_task(slow.complete([user("hi")]))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 4)
    by_model = {
        g.attributes["langfuse.observation.model.name"]: g for g in generations(receiver.spans())
    }
    abandoned, cancelled = by_model["stream"], by_model["slow"]
    assert abandoned.attributes["langfuse.observation.level"] == "WARNING"
    assert abandoned.attributes["langfuse.observation.status_message"] == (
        "stream closed before the end"
    )
    assert "langfuse.observation.completion_start_time" in abandoned.attributes
    assert cancelled.attributes["langfuse.observation.level"] == "WARNING"
    assert cancelled.attributes["langfuse.observation.status_message"] == "cancelled"


async def test_a_broken_tracing_never_breaks_a_call(
    receiver: OtlpReceiver, make_tracing: TracingFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    traced = tracing.wrap_provider(FunctionProvider(long_answer))
    pipe = tracing._pipe
    assert pipe is not None

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracing bug")

    # Every record the bot makes goes through the pipe to the export process.
    monkeypatch.setattr(pipe, "send", explode)
    with (
        tracing.run(RunInfo("support", 1, 1, "hi")) as run,
        tracing.step(StepInfo("coach", "step", "function:function", "default")) as step,
    ):
        response = await traced.complete([user("hi")])
        step.set_result(success=True, output=response.text)
    assert response.text.startswith("word")
    assert run.trace_id is None

    # After shutdown, calls still work; they are just not traced.
    monkeypatch.undo()
    assert await tracing.aclose()
    response = await traced.complete([user("hi")])
    assert response.text.startswith("word")
    chunks = [chunk async for chunk in traced.stream([user("hi")])]
    assert chunks[-1].response is not None
    assert receiver.spans() == []
