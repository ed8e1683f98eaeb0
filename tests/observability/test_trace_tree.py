"""The real Langfuse SDK, driven by the real PipelineRunner, exporting to a loopback receiver:
what arrives is one trace per run, a span per step and a generation per model call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from bot import __version__
from bot.llm.errors import ProviderServerError
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage
from bot.pipeline.context import PipelineContext
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Background, Parallel, Pipeline, Step
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import (
    LLMAgent,
    TableResolver,
    by_name,
    children,
    generations,
    one,
)

OVERRIDE_MODEL = "anthropic/claude-sonnet-4.5"


def reply(text: str):  # type: ignore[no-untyped-def]
    def function(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        return text

    return function


def support_pipeline() -> Pipeline:
    return Pipeline(
        "support",
        [
            Parallel([Step(LLMAgent("extraction"), optional=True), Step(LLMAgent("strategist"))]),
            Step(LLMAgent("coach", replies=True, stream=True)),
            Background(Step(LLMAgent("summarizer"))),
        ],
    )


async def run_support(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> tuple[str | None, list[ReceivedSpan]]:
    tracing = make_tracing(make_settings(receiver.base_url))
    wrap = tracing.wrap_provider
    default = wrap(
        FunctionProvider(reply("noted"), provider="openrouter", model="openai/gpt-4o-mini")
    )
    override = wrap(
        FunctionProvider(reply("be brief"), provider="openrouter", model=OVERRIDE_MODEL)
    )
    coach = wrap(
        FunctionProvider(
            reply("Hello there, friend. Keep going!"),
            provider="openai",
            model="gpt-4o",
            latency=0.01,
        )
    )
    summarizer = wrap(
        FunctionProvider(reply("a summary"), provider="groq", model="llama-3.1-8b", latency=0.3)
    )
    resolver = TableResolver(
        {
            "extraction": (default, "openrouter:openai/gpt-4o-mini", "default"),
            "strategist": (override, f"openrouter:{OVERRIDE_MODEL}", "override"),
            "coach": (coach, "openai:gpt-4o", "agent"),
            "summarizer": (summarizer, "groq:llama-3.1-8b", "pipeline"),
        }
    )
    ctx = PipelineContext(
        "support", default, user_id=42, chat_id=-1007, input_text="I feel stuck", resolver=resolver
    )
    runner = PipelineRunner(tracing.observer)
    result = await runner.run(support_pipeline(), ctx)
    assert result.success, result
    assert result.reply == "Hello there, friend. Keep going!"
    await runner.wait_background()
    assert await tracing.flush(timeout=5)
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 9)
    return result.trace_id, receiver.spans()


async def test_a_run_is_one_trace_of_step_spans_and_generations(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    trace_id, spans = await run_support(receiver, make_tracing)

    # Exactly one trace, and the runner got its id.
    assert trace_id is not None
    assert len(trace_id) == 32
    assert {span.trace_id for span in spans} == {trace_id}
    assert len(spans) == 9  # root + 4 steps + 4 generations

    root = one(spans, "support")
    assert root.parent_id is None
    assert root.attributes["langfuse.trace.name"] == "support"
    assert root.attributes["user.id"] == "42"
    assert root.attributes["session.id"] == "-1007"
    assert json.loads(root.attributes["langfuse.trace.metadata.bot_version"]) == __version__
    assert root.attributes["langfuse.release"] == __version__
    assert root.attributes["langfuse.observation.input"] == "I feel stuck"
    assert root.attributes["langfuse.observation.output"] == "Hello there, friend. Keep going!"
    assert set(root.attributes["langfuse.trace.tags"]) == {"support", "override:strategist"}

    steps = children(spans, root)
    assert sorted(s.name for s in steps) == ["coach", "extraction", "strategist", "summarizer"]
    for step in steps:
        assert step.observation_type == "agent"
        assert step.metadata("agent") == step.name
        assert step.metadata("success") is True
        # user and session reach every observation, not just the root
        assert step.attributes["user.id"] == "42"
        assert step.attributes["session.id"] == "-1007"
        (generation,) = children(spans, step)
        assert generation.observation_type == "generation"
        assert generation.metadata("agent") == step.name
        assert generation.metadata("fallback") is False

    kinds = {s.name: (s.metadata("kind"), s.metadata("source"), s.metadata("model")) for s in steps}
    assert kinds == {
        "extraction": ("parallel", "default", "openrouter:openai/gpt-4o-mini"),
        "strategist": ("parallel", "override", f"openrouter:{OVERRIDE_MODEL}"),
        "coach": ("step", "agent", "openai:gpt-4o"),
        "summarizer": ("background", "pipeline", "groq:llama-3.1-8b"),
    }


async def test_the_override_is_on_the_strategists_generation(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    _, spans = await run_support(receiver, make_tracing)
    strategist = one(spans, "strategist")
    (generation,) = children(spans, strategist)
    assert generation.attributes["langfuse.observation.model.name"] == OVERRIDE_MODEL
    assert generation.metadata("source") == "override"
    assert generation.metadata("provider") == "openrouter"
    assert "override:strategist" in generation.attributes["langfuse.trace.tags"]
    # ... and only there: the other agents' generations name their own models and sources.
    others = {
        g.metadata("agent"): (g.attributes["langfuse.observation.model.name"], g.metadata("source"))
        for g in generations(spans)
        if g.metadata("agent") != "strategist"
    }
    assert others == {
        "extraction": ("openai/gpt-4o-mini", "default"),
        "coach": ("gpt-4o", "agent"),
        "summarizer": ("llama-3.1-8b", "pipeline"),
    }


async def test_generations_carry_model_call_details(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    _, spans = await run_support(receiver, make_tracing)
    (strategist,) = children(spans, one(spans, "strategist"))
    assert json.loads(strategist.attributes["langfuse.observation.model.parameters"]) == {
        "temperature": 0.2,
        "max_tokens": 64,
    }
    assert strategist.json_attr("langfuse.observation.input") == [
        {"role": "system", "content": "You are the strategist."},
        {"role": "user", "content": "I feel stuck"},
    ]
    assert strategist.attributes["langfuse.observation.output"] == "be brief"
    usage = strategist.json_attr("langfuse.observation.usage_details")
    assert usage == {"input": 0, "output": 2, "total": 2}
    assert strategist.json_attr("langfuse.observation.cost_details") == {"total": 0.0}
    assert strategist.end_ns > strategist.start_ns  # latency is the span's duration

    # The streamed reply: the whole text, and when the first token came.
    (coach,) = children(spans, one(spans, "coach"))
    assert coach.metadata("streaming") is True
    assert coach.attributes["langfuse.observation.output"] == "Hello there, friend. Keep going!"
    assert "langfuse.observation.completion_start_time" in coach.attributes


async def test_background_steps_join_the_trace_after_the_reply(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    trace_id, spans = await run_support(receiver, make_tracing)
    root = one(spans, "support")
    summarizer = one(spans, "summarizer")
    assert summarizer.trace_id == trace_id
    assert summarizer.parent_id == root.span_id
    # It ran after the run (and its root span) had ended: the reply had gone out.
    assert summarizer.end_ns > root.end_ns
    (generation,) = children(spans, summarizer)
    assert generation.attributes["langfuse.observation.output"] == "a summary"


async def test_a_failing_model_call_is_an_error_generation_and_step(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))

    def broken(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        raise ProviderServerError(
            "upstream exploded", provider="openrouter", model="x/y", status=502
        )

    provider = tracing.wrap_provider(FunctionProvider(broken, provider="openrouter", model="x/y"))
    resolver = TableResolver({"coach": (provider, "openrouter:x/y", "default")})
    ctx = PipelineContext(
        "support", provider, user_id=1, chat_id=1, input_text="hi", resolver=resolver
    )
    result = await PipelineRunner(tracing.observer).run(
        Pipeline("support", [Step(LLMAgent("coach", replies=True))]), ctx
    )
    assert not result.success
    await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 3)
    spans = receiver.spans()
    step = one(spans, "coach")
    assert step.attributes["langfuse.observation.level"] == "ERROR"
    assert "upstream exploded" in step.attributes["langfuse.observation.status_message"]
    (generation,) = children(spans, step)
    assert generation.attributes["langfuse.observation.level"] == "ERROR"
    message = generation.attributes["langfuse.observation.status_message"]
    assert message.startswith("ProviderServerError [502]")
    assert generation.metadata("status") == 502
    assert generation.metadata("retryable") is True
    # The exception is described in attributes only: no traceback event leaves the process.
    assert all(not span.events for span in spans)


async def test_a_step_whose_model_cannot_be_resolved_is_an_error_span_in_the_trace(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    from bot.llm.specs import ModelSpecError

    tracing = make_tracing(make_settings(receiver.base_url))
    provider = tracing.wrap_provider(FunctionProvider(reply("fine"), provider="openai", model="m"))

    class Resolver(TableResolver):
        async def resolve(self, agent: str, **kwargs: object) -> Any:
            if agent == "coach":
                raise ModelSpecError("ANTHROPIC_API_KEY is not set (needed by anthropic:x)")
            return await super().resolve(agent)

    resolver = Resolver({"strategist": (provider, "openai:m", "default")})
    ctx = PipelineContext(
        "support", provider, user_id=1, chat_id=1, input_text="hi", resolver=resolver
    )
    pipeline = Pipeline(
        "support", [Step(LLMAgent("strategist")), Step(LLMAgent("coach", replies=True))]
    )
    result = await PipelineRunner(tracing.observer).run(pipeline, ctx)
    assert not result.success
    assert result.failed_agent == "coach"
    await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 4)
    spans = receiver.spans()
    assert {span.trace_id for span in spans} == {result.trace_id}
    root = one(spans, "support")
    coach = one(spans, "coach")
    assert coach.parent_id == root.span_id
    assert coach.attributes["langfuse.observation.level"] == "ERROR"
    assert coach.attributes["langfuse.observation.status_message"] == (
        "ModelSpecError: ANTHROPIC_API_KEY is not set (needed by anthropic:x)"
    )
    assert (coach.metadata("source"), coach.metadata("success")) == ("unresolved", False)
    assert children(spans, coach) == []  # no model was called
    assert len(children(spans, one(spans, "strategist"))) == 1


async def test_scores_and_trace_urls_reach_langfuse(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    ctx = PipelineContext(
        "support",
        tracing.wrap_provider(FunctionProvider(reply("ok"))),
        user_id=5,
        chat_id=6,
        input_text="hi",
    )
    result = await PipelineRunner(tracing.observer).run(
        Pipeline("support", [Step(LLMAgent("coach", replies=True))]), ctx
    )
    assert result.trace_id is not None

    url = await tracing.trace_url(result.trace_id)
    assert url == f"{receiver.base_url}/project/proj-loopback/traces/{result.trace_id}"

    assert await tracing.score(result.trace_id, "user_rating", True, comment="👍")
    assert await tracing.score(result.trace_id, "helpfulness", 0.5)
    assert await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.scores()) >= 2)
    scores = {s["name"]: s for s in receiver.scores()}
    assert scores["user_rating"]["traceId"] == result.trace_id
    assert scores["user_rating"]["value"] == 1.0
    assert scores["user_rating"]["dataType"] == "BOOLEAN"
    assert scores["user_rating"]["comment"] == "👍"
    assert scores["helpfulness"]["dataType"] == "NUMERIC"
    assert scores["helpfulness"]["value"] == 0.5


async def test_parallel_runs_stay_in_their_own_traces(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    runner = PipelineRunner(tracing.observer)

    async def one_run(chat: int) -> str | None:
        llm = tracing.wrap_provider(FunctionProvider(reply(f"chat {chat}"), latency=0.02))
        ctx = PipelineContext("support", llm, user_id=chat, chat_id=chat, input_text=str(chat))
        result = await runner.run(Pipeline("support", [Step(LLMAgent("coach", replies=True))]), ctx)
        return result.trace_id

    trace_ids = await asyncio.gather(*(one_run(chat) for chat in range(5)))
    await tracing.flush()
    assert await receiver.wait_until_async(lambda r: len(r.spans()) >= 15)
    spans = receiver.spans()
    assert len(set(trace_ids)) == 5
    for trace_id in trace_ids:
        in_trace = [s for s in spans if s.trace_id == trace_id]
        assert len(in_trace) == 3
        sessions = {s.attributes["session.id"] for s in in_trace}
        outputs = {s.attributes["langfuse.observation.output"] for s in generations(in_trace)}
        assert len(sessions) == 1
        assert outputs == {f"chat {sessions.pop()}"}
    assert len(by_name(spans, "support")) == 5
