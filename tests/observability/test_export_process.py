"""Spans are made and exported by a child process (decision 0019): every span the bot records
arrives, the bot's own interpreter makes none, and a stuck, dead or hanging exporter costs the
replies nothing and the shutdown no more than its deadline."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from bot.observability.export_process import PIPE_BYTES, WRITE_INTERVAL
from bot.observability.tracing import Tracing
from bot.pipeline.context import PipelineContext
from bot.pipeline.runner import PipelineRunner
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.test_resilience import answer, pipeline

SPANS_PER_RUN = 9  # root + 4 steps + 4 generations


class _Counter(SpanProcessor):
    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


async def support_turns(tracing: Tracing, turns: int, text: str = "hello") -> None:
    from bot.llm.function_provider import FunctionProvider

    runner = PipelineRunner(tracing.observer)
    llm = tracing.wrap_provider(FunctionProvider(answer))
    for turn in range(turns):
        ctx = PipelineContext("support", llm, user_id=turn, chat_id=turn, input_text=text)
        result = await runner.run(pipeline(), ctx)
        assert result.success
    await runner.wait_background()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def reaped(pid: int) -> bool:
    """Gone from the process table: exited and waited for (a zombie still has its entry)."""
    return not Path(f"/proc/{pid}").exists()


def exporter(tracing: Tracing) -> int:
    pid = tracing.exporter_pid
    assert pid is not None
    return pid


async def test_every_span_made_arrives_and_none_is_made_in_the_bot(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    pid = exporter(tracing)
    assert pid != os.getpid()
    assert parent_of(pid) == os.getpid()
    # The in-process SDK (scores, trace URLs) ends no span: they are all made in the child.
    in_process = _Counter()
    assert tracing._provider is not None
    tracing._provider.add_span_processor(in_process)

    await support_turns(tracing, 25)
    assert tracing.spans_made == 25 * SPANS_PER_RUN
    assert await tracing.flush(timeout=10)
    spans = receiver.spans()
    assert len(spans) == tracing.spans_made
    assert len({span.span_id for span in spans}) == len(spans)
    assert len({span.trace_id for span in spans}) == 25
    assert in_process.ended == 0


async def test_a_stopped_exporter_blocks_nothing_and_loses_nothing(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    pid = exporter(tracing)
    pipe = tracing._pipe
    assert pipe is not None
    await support_turns(tracing, 1)  # the child is up and reading
    assert await tracing.flush(timeout=10)
    os.kill(pid, signal.SIGSTOP)
    try:
        # Long prompts, so the records overflow the pipe while nobody reads it.
        text = "x" * 4000
        turns = 4 * PIPE_BYTES // (len(text) * 6) + 1
        await asyncio.wait_for(support_turns(tracing, turns, text), timeout=60)
        # The loop never waited on the full pipe: what did not fit waits in memory.
        assert pipe._pending
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await tracing.flush(timeout=30)
    assert len(receiver.spans()) == tracing.spans_made == (turns + 1) * SPANS_PER_RUN


async def test_a_dead_exporter_leaves_the_bot_answering(
    receiver: OtlpReceiver, make_tracing: TracingFactory, caplog: pytest.LogCaptureFixture
) -> None:
    tracing = make_tracing(make_settings(receiver.base_url))
    pid = exporter(tracing)
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.ERROR):
        await support_turns(tracing, 3)
        await asyncio.sleep(WRITE_INTERVAL * 3)  # the records' write is due
    assert "the export process is gone" in caplog.text
    assert not await tracing.flush(timeout=2)
    assert not await tracing.aclose(timeout=2)
    assert reaped(pid)


@pytest.mark.parametrize("mode", ["hang", "unreachable"])
async def test_shutdown_reaps_the_exporter_within_its_deadline(
    mode: str, make_tracing: TracingFactory
) -> None:
    with OtlpReceiver(mode) as receiver:  # type: ignore[arg-type]
        tracing = make_tracing(make_settings(receiver.base_url), flush_at=1, export_timeout=5)
        pid = exporter(tracing)
        await support_turns(tracing, 5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await tracing.aclose(timeout=1.0)
        assert loop.time() - started < 2.0
        assert reaped(pid)  # killed past the deadline


def test_records_are_written_without_a_flush_on_each_new_event_loop(receiver: OtlpReceiver) -> None:
    """A write scheduled on a loop that closed must not hold later records back (the console
    and tests run several loops in turn)."""
    tracing = Tracing.from_settings(make_settings(receiver.base_url), flush_interval=0.05)
    pipe = tracing._pipe
    assert pipe is not None

    async def turn_then_wait() -> None:
        await support_turns(tracing, 1)
        await asyncio.sleep(WRITE_INTERVAL * 4)
        assert not pipe._pending  # written by the loop's own scheduled write

    try:
        for _ in range(3):
            asyncio.run(turn_then_wait())
        assert receiver.wait_until(lambda r: len(r.spans()) == 3 * SPANS_PER_RUN, timeout=20)
    finally:
        asyncio.run(tracing.aclose(timeout=5))
