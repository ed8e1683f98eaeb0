"""Tracing off costs nothing; a hanging or unreachable Langfuse never slows a run or a shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from bot.config import Settings
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage
from bot.observability.tracing import Tracing
from bot.pipeline.context import PipelineContext
from bot.pipeline.observer import NullObserver, RunInfo, StepInfo
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Background, Parallel, Pipeline, Step
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import LLMAgent

RUNS = 8
LATENCY = 0.02


def answer(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return "fine " * 20


def pipeline() -> Pipeline:
    return Pipeline(
        "support",
        [
            Parallel([Step(LLMAgent("extraction")), Step(LLMAgent("strategist"))]),
            Step(LLMAgent("coach", replies=True, stream=True)),
            Background(Step(LLMAgent("summarizer"))),
        ],
    )


async def timed_runs(tracing: Tracing) -> float:
    """Seconds for RUNS chat turns (background steps included) through this tracing."""
    runner = PipelineRunner(tracing.observer)
    llm = tracing.wrap_provider(FunctionProvider(answer, latency=LATENCY))
    started = time.perf_counter()
    for turn in range(RUNS):
        ctx = PipelineContext("support", llm, user_id=turn, chat_id=turn, input_text="hello")
        result = await runner.run(pipeline(), ctx)
        assert result.success
        await runner.wait_background()
    return time.perf_counter() - started


async def test_tracing_off_creates_nothing_and_changes_nothing() -> None:
    threads_before = threading.active_count()
    # A public key without a secret key is "off" too.
    tracing = Tracing.from_settings(Settings(_env_file=None, langfuse_public_key="pk-lf-only"))  # type: ignore[call-arg]
    assert tracing.client is None
    assert not tracing.enabled
    assert isinstance(tracing.observer, NullObserver)
    provider = FunctionProvider(answer)
    assert tracing.wrap_provider(provider) is provider

    with (
        tracing.run(RunInfo("support", 1, 1, "hi")) as run,
        tracing.step(StepInfo("coach", "step", "function:function", "default")) as step,
    ):
        step.set_result(success=True, output="x")
    assert run.trace_id is None

    ctx = PipelineContext("support", provider, user_id=1, chat_id=1, input_text="hi")
    result = await PipelineRunner(tracing.observer).run(pipeline(), ctx)
    assert result.trace_id is None
    assert await tracing.trace_url("0" * 32) is None
    assert not await tracing.score("0" * 32, "user_rating", True)
    assert await tracing.flush()
    assert await tracing.aclose()
    assert threading.active_count() == threads_before


@pytest.mark.parametrize("mode", ["hang", "unreachable"])
async def test_a_broken_langfuse_slows_neither_runs_nor_shutdown(
    mode: Literal["hang", "unreachable"], make_tracing: TracingFactory
) -> None:
    with OtlpReceiver(mode) as receiver:
        off = Tracing.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
        # flush_at=1: the exporter tries to send every span at once and is always stuck.
        on = make_tracing(make_settings(receiver.base_url), flush_at=1, export_timeout=1)
        await timed_runs(off)  # warm-up: imports, first-call costs
        off_seconds = await timed_runs(off)
        on_seconds = await timed_runs(on)
        print(f"\n{mode}: {RUNS} runs, tracing off {off_seconds:.3f}s, on {on_seconds:.3f}s")
        assert on_seconds < off_seconds * 1.5 + 0.5

        # Still answering the loop while Langfuse is stuck: a url lookup gives up on time.
        assert await on.trace_url("0" * 32, timeout=0.5) is None

        deadline = 1.0
        started = time.perf_counter()
        delivered = await asyncio.wait_for(on.aclose(timeout=deadline), timeout=10)
        closing = time.perf_counter() - started
        print(f"{mode}: aclose took {closing:.3f}s (deadline {deadline}s), delivered={delivered}")
        assert closing < deadline + 1.0
        if mode == "hang":
            assert receiver.requests(), "the SDK never tried to export"
    # Past the deadline the exports were abandoned: the SDK's shutdown ends soon after, it does
    # not go on retrying a dead Langfuse batch after batch.
    assert await asyncio.to_thread(join_threads, "langfuse-shutdown", 5)


def join_threads(name: str, timeout: float) -> bool:
    for thread in threading.enumerate():
        if thread.name == name:
            thread.join(timeout)
            if thread.is_alive():
                return False
    return True


def test_a_client_that_cannot_start_leaves_the_bot_untraced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(**kwargs: object) -> None:
        raise ValueError(f"bad configuration {kwargs.get('secret_key')}")

    monkeypatch.setattr("bot.observability.tracing.Langfuse", refuse)
    settings = make_settings("http://127.0.0.1:1")
    tracing = Tracing.from_settings(settings)
    assert tracing.client is None
    assert isinstance(tracing.observer, NullObserver)
    assert "tracing is off" in caplog.text
    secret = settings.langfuse_secret_key
    assert secret is not None
    assert secret.get_secret_value() not in caplog.text


@pytest.mark.parametrize("shutdown_timeout", [0.5, 1.5])
async def test_the_apps_shutdown_gives_tracing_the_shutdown_deadline(
    shutdown_timeout: float, tmp_path: Path
) -> None:
    """build_services closes tracing within SHUTDOWN_TIMEOUT, not the tracing's own default,
    however long a hanging Langfuse would keep the last traces waiting."""
    from bot.app import build_services
    from tests.services.fakes import FakeProviders

    with OtlpReceiver("hang") as receiver:
        settings = make_settings(
            receiver.base_url,
            database_url=f"sqlite:///{tmp_path / 'bot.db'}",
            default_model="openai:gpt-4o-mini",
            openai_api_key="sk-openai-test",
            shutdown_timeout=shutdown_timeout,
        )
        async with build_services(settings, providers=FakeProviders()) as services:
            tracing = services.observer
            assert isinstance(tracing, Tracing)
            result = await services.conversation.handle("support", user_id=1, chat_id=1, text="hi")
            assert result.success
            await services.runner.wait_background()
            started = time.perf_counter()
        closing = time.perf_counter() - started
        print(f"\nshutdown took {closing:.3f}s (SHUTDOWN_TIMEOUT {shutdown_timeout}s)")
        assert not tracing.enabled  # closed
        # Tracing's own default deadline is 5 s: a shutdown this quick used SHUTDOWN_TIMEOUT.
        assert shutdown_timeout - 0.1 < closing < shutdown_timeout + 0.8
