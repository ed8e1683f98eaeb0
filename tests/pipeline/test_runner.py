"""The runner: order, parallel wall time, timeouts, optional vs required, cancellation,
background tracking and drain, and what it tells the observer."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from bot.llm.errors import AllModelsFailed, ProviderTimeout
from bot.llm.types import Attempt
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.observer import RunInfo, StepInfo
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Background, Parallel, Pipeline, Step
from tests.pipeline.helpers import FnAgent, context, text_agent


def sleeper(name: str, seconds: float, log: list[str], *, replies: bool = False) -> FnAgent:
    async def run(ctx: PipelineContext) -> AgentOutput:
        log.append(f"start {name}")
        await asyncio.sleep(seconds)
        log.append(f"end {name}")
        return AgentOutput.ok(data=name, text=name if replies else None)

    return FnAgent(name, run, replies=replies)


def failing(name: str, error: BaseException) -> FnAgent:
    async def run(ctx: PipelineContext) -> AgentOutput:
        raise error

    return FnAgent(name, run)


async def test_sequential_steps_run_in_order_and_see_earlier_results() -> None:
    log: list[str] = []

    async def second(ctx: PipelineContext) -> AgentOutput:
        log.append(f"second saw {ctx.result_data('first')}")
        return AgentOutput.ok(text="answer")

    pipeline = Pipeline(
        "support",
        [Step(sleeper("first", 0, log)), Step(FnAgent("coach", second, replies=True))],
    )
    result = await PipelineRunner().run(pipeline, context())
    assert log == ["start first", "end first", "second saw first"]
    assert result.success
    assert result.reply == "answer"
    assert set(result.outputs) == {"first", "coach"}


async def test_a_parallel_group_takes_the_time_of_its_slowest_member() -> None:
    log: list[str] = []
    pipeline = Pipeline(
        "support",
        [Parallel([Step(sleeper("a", 0.3, log)), Step(sleeper("b", 0.1, log))])],
    )
    started = time.perf_counter()
    result = await PipelineRunner().run(pipeline, context())
    elapsed = time.perf_counter() - started
    # Both started before either ended: they overlapped.
    assert log[:2] == ["start a", "start b"]
    assert log[2:] == ["end b", "end a"]
    assert result.success
    # Sequential would be 0.4 s; concurrent is the slowest member (0.3 s) plus noise.
    assert elapsed < 0.39


async def test_a_step_over_its_timeout_fails_with_a_timeout_message() -> None:
    log: list[str] = []
    pipeline = Pipeline(
        "support",
        [
            Step(sleeper("slow", 5, log), optional=True, timeout=0.05),
            Step(text_agent("coach", "ok")),
        ],
    )
    result = await PipelineRunner().run(pipeline, context())
    slow = result.outputs["slow"]
    assert not slow.success
    assert slow.error is not None
    assert "timed out after 0.05s" in slow.error
    assert result.success
    assert result.reply == "ok"


async def test_the_default_step_timeout_applies() -> None:
    pipeline = Pipeline("support", [Step(sleeper("coach", 5, []))])
    result = await PipelineRunner(step_timeout=0.05).run(pipeline, context())
    assert not result.success
    assert result.error_message is not None
    assert "took too long" in result.error_message


async def test_an_optional_failure_is_recorded_and_the_pipeline_goes_on() -> None:
    pipeline = Pipeline(
        "support",
        [
            Parallel(
                [
                    Step(failing("extraction", ValueError("bad json")), optional=True),
                    Step(text_agent("strategist", "plan", replies=False), optional=True),
                ]
            ),
            Step(text_agent("coach", "reply")),
        ],
    )
    result = await PipelineRunner().run(pipeline, context())
    assert result.success
    assert result.reply == "reply"
    assert result.outputs["extraction"] == AgentOutput(False, error="ValueError: bad json")
    assert result.outputs["strategist"].success


async def test_a_required_failure_ends_the_run_with_a_message_for_the_user() -> None:
    log: list[str] = []
    failure = AllModelsFailed(
        [Attempt("openrouter", "x", ok=False, latency_ms=1, error="503")],
        [ProviderTimeout("t")],
    )
    pipeline = Pipeline(
        "support",
        [
            Step(failing("coach", failure)),
            Step(sleeper("after", 0, log)),
            Background(Step(sleeper("summarizer", 0, log))),
        ],
    )
    runner = PipelineRunner()
    result = await runner.run(pipeline, context())
    assert not result.success
    assert result.failed_agent == "coach"
    assert result.error_message is not None
    assert "can't reach the language model" in result.error_message
    assert "503" not in result.error_message  # details are for the log, not the user
    assert log == []  # nothing after the failure, no background work for a failed run
    assert runner.background_jobs() == []


async def test_cancellation_is_never_swallowed() -> None:
    started = asyncio.Event()

    async def hang(ctx: PipelineContext) -> AgentOutput:
        started.set()
        await asyncio.sleep(10)
        return AgentOutput.ok()

    pipeline = Pipeline(
        "support",
        [Parallel([Step(FnAgent("a", hang), optional=True), Step(FnAgent("b", hang))])],
    )
    task = asyncio.create_task(PipelineRunner().run(pipeline, context()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_background_steps_outlive_the_reply_are_listed_and_drained() -> None:
    gate = asyncio.Event()
    seen: list[str] = []

    async def summarize(ctx: PipelineContext) -> AgentOutput:
        await gate.wait()
        seen.append(f"summarized {ctx.results['coach'].text}")
        return AgentOutput.ok()

    pipeline = Pipeline(
        "support",
        [Step(text_agent("coach", "reply")), Background(Step(FnAgent("summarizer", summarize)))],
    )
    runner = PipelineRunner()
    result = await runner.run(pipeline, context())
    assert result.success
    assert result.reply == "reply"
    [job] = runner.background_jobs()
    assert result.background == [job.id]
    assert (job.pipeline, job.agent) == ("support", "summarizer")
    assert seen == []  # the reply came back before the background step finished

    gate.set()
    assert await runner.drain(timeout=5) == 0
    assert seen == ["summarized reply"]
    assert runner.background_jobs() == []


async def test_drain_cancels_what_does_not_finish_by_the_deadline() -> None:
    cancelled = asyncio.Event()

    async def forever(ctx: PipelineContext) -> AgentOutput:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return AgentOutput.ok()

    pipeline = Pipeline("support", [Background(Step(FnAgent("summarizer", forever)))])
    runner = PipelineRunner(step_timeout=1000)
    await runner.run(pipeline, context())
    assert len(runner.background_jobs()) == 1
    assert await runner.drain(timeout=0.05) == 1
    assert cancelled.is_set()
    assert runner.background_jobs() == []
    # After shutdown began, new runs start no background work.
    await runner.run(pipeline, context())
    assert runner.background_jobs() == []


async def test_a_background_job_can_be_cancelled_by_id() -> None:
    pipeline = Pipeline("support", [Background(Step(sleeper("summarizer", 100, [])))])
    runner = PipelineRunner(step_timeout=1000)
    result = await runner.run(pipeline, context())
    assert runner.cancel_background(result.background[0]) is True
    await runner.wait_background()
    assert runner.background_jobs() == []
    assert runner.cancel_background(result.background[0]) is False


TRACE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)


class RecordingObserver:
    def __init__(self) -> None:
        self.runs: list[RunInfo] = []
        self.steps: list[tuple[StepInfo, str | None]] = []
        self.results: list[dict[str, Any]] = []
        self.tags: list[str] = []
        self.outputs: list[Any] = []

    @contextmanager
    def run(self, info: RunInfo) -> Iterator[Any]:
        self.runs.append(info)
        token = TRACE.set("trace-1")
        observer = self

        class Handle:
            trace_id = "trace-1"

            def add_tags(self, *tags: str) -> None:
                observer.tags.extend(tags)

            def set_output(self, output: Any) -> None:
                observer.outputs.append(output)

        try:
            yield Handle()
        finally:
            TRACE.reset(token)

    @contextmanager
    def step(self, info: StepInfo) -> Iterator[Any]:
        # Which trace the step belongs to, as the contextvars say.
        self.steps.append((info, TRACE.get()))
        observer = self

        class StepHandle:
            def set_result(self, **kwargs: Any) -> None:
                observer.results.append({"agent": info.agent, **kwargs})

        yield StepHandle()


async def test_the_observer_sees_the_run_every_step_and_background_steps_in_the_trace() -> None:
    observer = RecordingObserver()
    pipeline = Pipeline(
        "support",
        [
            Parallel(
                [
                    Step(text_agent("a", "x", replies=False)),
                    Step(failing("b", ValueError("no")), optional=True),
                ]
            ),
            Step(text_agent("coach", "reply")),
            Background(Step(text_agent("summarizer", "s", replies=False))),
        ],
    )
    runner = PipelineRunner(observer)
    ctx = context(user_id=5, chat_id=6)
    result = await runner.run(pipeline, ctx)
    await runner.wait_background()

    assert ctx.trace_id == result.trace_id == "trace-1"
    assert [(r.pipeline, r.user_id, r.chat_id) for r in observer.runs] == [("support", 5, 6)]
    kinds = {info.agent: (info.kind, trace) for info, trace in observer.steps}
    # The background step ran after the run closed, yet inside the run's context.
    assert kinds == {
        "a": ("parallel", "trace-1"),
        "b": ("parallel", "trace-1"),
        "coach": ("step", "trace-1"),
        "summarizer": ("background", "trace-1"),
    }
    assert all(
        info.model == "test:default" and info.source == "default" for info, _ in observer.steps
    )
    failed = next(r for r in observer.results if r["agent"] == "b")
    assert failed["success"] is False
    assert failed["error"] == "ValueError: no"
    assert observer.outputs == ["reply"]


async def test_hooks_run_once_the_trace_is_open_and_before_background_steps() -> None:
    order: list[str] = []

    async def summarize(ctx: PipelineContext) -> AgentOutput:
        order.append("summarizer")
        return AgentOutput.ok()

    async def on_start(ctx: PipelineContext) -> None:
        order.append(f"store input ({ctx.trace_id})")

    async def on_reply(ctx: PipelineContext, result: Any) -> None:
        order.append(f"store reply {result.reply!r}")

    pipeline = Pipeline(
        "support",
        [Step(text_agent("coach", "hello")), Background(Step(FnAgent("summarizer", summarize)))],
    )
    runner = PipelineRunner(RecordingObserver())
    await runner.run(pipeline, context(), on_start=on_start, on_reply=on_reply)
    await runner.wait_background()
    assert order == ["store input (trace-1)", "store reply 'hello'", "summarizer"]


async def test_a_failing_reply_hook_surfaces_and_starts_no_background_work() -> None:
    async def on_reply(ctx: PipelineContext, result: Any) -> None:
        raise OSError("disk full")

    pipeline = Pipeline(
        "support", [Step(text_agent("coach", "x")), Background(Step(sleeper("summarizer", 0, [])))]
    )
    runner = PipelineRunner()
    with pytest.raises(OSError, match="disk full"):
        await runner.run(pipeline, context(), on_reply=on_reply)
    assert runner.background_jobs() == []


class BrokenResolver:
    """Resolution that fails for some agents: a bad spec, or a cache refresh that never ends."""

    def __init__(self, failures: dict[str, BaseException | float]) -> None:
        self.failures = failures

    async def resolve(self, agent: str, **kwargs: Any) -> Any:
        failure = self.failures.get(agent)
        if isinstance(failure, float):
            await asyncio.sleep(failure)
        elif failure is not None:
            raise failure
        from bot.llm.specs import parse_spec
        from bot.services.model_resolution import Resolution

        default = context().default_llm
        return Resolution(default, parse_spec("openai:gpt-4o-mini"), "default")


async def test_a_step_whose_model_cannot_be_resolved_still_gets_its_span_with_the_error() -> None:
    from bot.llm.specs import ModelSpecError

    observer = RecordingObserver()
    resolver = BrokenResolver(
        {
            "extraction": ModelSpecError("GROQ_API_KEY is not set (needed by groq:llama)"),
            "coach": 5.0,  # waits on a refresh far past the step's timeout
        }
    )
    pipeline = Pipeline(
        "support",
        [
            Parallel(
                [
                    Step(text_agent("extraction", "x", replies=False), optional=True),
                    Step(text_agent("strategist", "plan", replies=False)),
                ]
            ),
            Step(text_agent("coach", "reply"), timeout=0.05),
        ],
    )
    result = await PipelineRunner(observer).run(pipeline, context(resolver=resolver))

    assert not result.success
    assert result.failed_agent == "coach"
    spans = {info.agent: (info.kind, info.model, info.source) for info, _ in observer.steps}
    # Every step has its span, those whose resolution failed included, in the run's trace.
    assert spans == {
        "extraction": ("parallel", "(unresolved)", "unresolved"),
        "strategist": ("parallel", "openai:gpt-4o-mini", "default"),
        "coach": ("step", "(unresolved)", "unresolved"),
    }
    assert all(trace == "trace-1" for _, trace in observer.steps)
    by_agent = {r["agent"]: r for r in observer.results}
    assert by_agent["extraction"]["success"] is False
    assert by_agent["extraction"]["error"] == (
        "ModelSpecError: GROQ_API_KEY is not set (needed by groq:llama)"
    )
    assert by_agent["coach"]["success"] is False
    assert by_agent["coach"]["error"] == "model resolution timed out after 0.05s"
    assert by_agent["strategist"]["success"] is True
    assert len(observer.results) == 3


async def test_the_users_preference_is_on_the_step_and_tags_the_trace() -> None:
    from bot.llm.specs import parse_spec
    from bot.services.model_resolution import Resolution

    class LocalResolver:
        async def resolve(self, agent: str, **kwargs: Any) -> Resolution:
            default = context().default_llm
            spec = parse_spec("vllm:m-local")
            return Resolution(default, spec, "preference", "LOCAL_MODEL", preference="local")

    observer = RecordingObserver()
    pipeline = Pipeline("support", [Step(text_agent("coach", "reply"))])
    await PipelineRunner(observer).run(pipeline, context(resolver=LocalResolver()))
    [(info, _)] = observer.steps
    assert (info.model, info.source, info.preference) == ("vllm:m-local", "preference", "local")
    assert observer.tags == ["preference:local"]
