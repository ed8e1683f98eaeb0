"""Background steps yield to replies (`bot.pipeline.background_lane`, decision 0028): they wait
while the event loop lags or the process is busy, at most `max_wait`, start in order, and a
later step with the same key replaces one still waiting."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable

from bot.pipeline.background_lane import BackgroundLane
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Background, Pipeline, Step
from tests.pipeline.helpers import FnAgent, context, text_agent

ALWAYS = -1.0  # a busy share no process is under: always busy
NEVER = 1e9  # a limit nothing reaches
KEEP = 10**6  # idle ticks: the watcher keeps measuring through the test


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def measuring(lane: BackgroundLane) -> None:
    """Start the lane's watcher (the first step after a quiet spell goes unmeasured) and let it
    take one measurement."""
    assert await lane.admit() is True
    await asyncio.sleep(lane.tick * 2.5)


async def test_a_step_starts_at_once_when_the_loop_keeps_up() -> None:
    lane = BackgroundLane(idle_ticks=KEEP, tick=0.01)
    await measuring(lane)
    started = time.monotonic()
    assert await lane.admit() is True
    assert time.monotonic() - started < 0.005
    assert lane.deferred == 0


async def test_steps_wait_while_the_loop_lags_and_start_in_order_when_it_catches_up() -> None:
    lane = BackgroundLane(
        idle_ticks=KEEP, tick=0.01, lag_limit=0.005, busy_share=NEVER, max_wait=10
    )
    await measuring(lane)
    loop = asyncio.get_running_loop()
    stop_at = time.monotonic() + 0.4
    blocked_until = 0.0

    def hog() -> None:  # holds the loop 30 ms at a time, as a bot behind on turns does
        nonlocal blocked_until
        time.sleep(0.03)
        blocked_until = time.monotonic()
        if blocked_until < stop_at:
            loop.call_soon(hog)

    loop.call_soon(hog)
    await until(lambda: lane.busy)
    order: list[tuple[int, float]] = []

    async def step(n: int) -> None:
        assert await lane.admit() is True
        order.append((n, time.monotonic()))

    await asyncio.gather(*(step(n) for n in range(3)))
    assert [n for n, _ in order] == [0, 1, 2]
    # None started before the loop stopped lagging.
    assert all(at >= blocked_until for _, at in order)
    assert lane.deferred == 3
    assert lane.overdue == 0


async def test_steps_wait_while_the_process_is_busy() -> None:
    lane = BackgroundLane(idle_ticks=KEEP, tick=0.02, lag_limit=NEVER, busy_share=0.3, max_wait=10)
    await measuring(lane)
    done = threading.Event()
    data = b"x" * (1 << 20)

    def burn() -> (
        None
    ):  # a core's worth of CPU in this process, off the loop (hashlib drops the GIL)
        while not done.is_set():
            hashlib.sha256(data).digest()

    thread = threading.Thread(target=burn)
    thread.start()
    try:
        await until(lambda: lane.busy)
        waiter = asyncio.ensure_future(lane.admit())
        await asyncio.sleep(0.2)
        assert not waiter.done()  # busy: the step waits
    finally:
        done.set()
        thread.join()
    assert await asyncio.wait_for(waiter, 5) is True
    assert lane.deferred == 1


async def test_a_step_waits_at_most_max_wait() -> None:
    lane = BackgroundLane(idle_ticks=KEEP, tick=0.01, busy_share=ALWAYS, max_wait=0.15)
    await measuring(lane)
    started = time.monotonic()
    assert await lane.admit() is True
    waited = time.monotonic() - started
    assert 0.14 <= waited < 2.0
    assert (lane.deferred, lane.overdue) == (1, 1)


async def test_a_later_step_with_the_same_key_replaces_a_waiting_one() -> None:
    lane = BackgroundLane(idle_ticks=KEEP, tick=0.01, busy_share=ALWAYS, max_wait=10)
    await measuring(lane)
    first = asyncio.ensure_future(lane.admit(("summarizer", 1)))
    other = asyncio.ensure_future(lane.admit(("summarizer", 2)))
    await asyncio.sleep(0.03)
    later = asyncio.ensure_future(lane.admit(("summarizer", 1)))
    assert await asyncio.wait_for(first, 1) is False  # replaced at once, not at the release
    assert not later.done()
    assert not other.done()
    lane.busy_share = NEVER
    assert await asyncio.wait_for(later, 5) is True
    assert await asyncio.wait_for(other, 5) is True
    assert lane.superseded == 1


async def test_open_starts_every_waiting_step_and_later_ones_do_not_wait() -> None:
    lane = BackgroundLane(idle_ticks=KEEP, tick=0.01, busy_share=ALWAYS, max_wait=60)
    await measuring(lane)
    waiters = [asyncio.ensure_future(lane.admit()) for _ in range(20)]
    await asyncio.sleep(0.03)
    assert not any(w.done() for w in waiters)
    lane.open()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True] * 20
    assert await asyncio.wait_for(lane.admit(), 0.01) is True


# --- in the runner ---


def busy_runner() -> PipelineRunner:
    # As if other chats' replies were in flight throughout (the runs here end before it matters).
    lane = BackgroundLane(
        idle_ticks=KEEP, tick=0.01, busy_share=ALWAYS, max_wait=60, foreground=lambda: True
    )
    return PipelineRunner(lane=lane)


def chat_context(chat_id: int, text: str) -> PipelineContext:
    ctx = context(chat_id=chat_id)
    ctx.input_text = text
    return ctx


def summarizer(seen: list[str]) -> FnAgent:
    async def summarize(ctx: PipelineContext) -> AgentOutput:
        seen.append(ctx.input_text)
        return AgentOutput.ok(data=ctx.input_text)

    return FnAgent("summarizer", summarize)


async def test_the_reply_comes_while_its_background_step_waits_and_drain_runs_it() -> None:
    runner = busy_runner()
    await measuring(runner.lane)
    seen: list[str] = []
    pipeline = Pipeline(
        "support", [Step(text_agent("coach", "reply")), Background(Step(summarizer(seen)))]
    )
    result = await runner.run(pipeline, context())
    assert result.reply == "reply"
    await asyncio.sleep(0.05)
    assert seen == []
    assert len(runner.background_jobs()) == 1
    started = time.monotonic()
    assert await runner.drain(timeout=5) == 0  # shutdown lets it run now, not after max_wait
    assert seen == ["hi"]
    assert time.monotonic() - started < 2


async def test_a_chats_later_summarizer_replaces_its_waiting_one_and_other_chats_keep_theirs() -> (
    None
):
    runner = busy_runner()
    await measuring(runner.lane)
    seen: list[str] = []
    agent = summarizer(seen)
    pipeline = Pipeline(
        "support",
        [Step(text_agent("coach", "reply")), Background(Step(agent, latest_only=True))],
    )
    plain = Pipeline("train", [Step(text_agent("trainer", "reply")), Background(Step(agent))])
    first = await runner.run(pipeline, chat_context(7, "first"))
    await runner.run(pipeline, chat_context(8, "other chat"))
    await runner.run(plain, chat_context(7, "not latest_only"))
    await asyncio.sleep(0.03)
    await runner.run(pipeline, chat_context(7, "second"))
    first_job = next(j for j in runner.background_jobs() if j.id == first.background[0])
    assert await asyncio.wait_for(first_job.task, 1) == AgentOutput.ok()
    runner.lane.busy_share = NEVER
    await asyncio.wait_for(runner.wait_background(), 5)
    assert sorted(seen) == ["not latest_only", "other chat", "second"]


async def test_the_lane_stops_measuring_once_nothing_waits() -> None:
    lane = BackgroundLane(tick=0.01)  # three idle ticks

    def watchers() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "background-lane"]

    assert await lane.admit() is True
    assert len(watchers()) == 1
    await until(lambda: not watchers(), timeout=2)
    assert (lane.lag, lane.load) == (0.0, 0.0)  # no old figure makes the next step wait


async def test_with_no_reply_in_flight_a_busy_process_does_not_hold_background_steps() -> None:
    # A test or a console session keeps its CPU busy with no turn in flight: nothing to yield to.
    runner = PipelineRunner(lane=BackgroundLane(idle_ticks=KEEP, tick=0.01, busy_share=ALWAYS))
    await measuring(runner.lane)
    seen: list[str] = []
    pipeline = Pipeline(
        "support", [Step(text_agent("coach", "reply")), Background(Step(summarizer(seen)))]
    )
    await runner.run(pipeline, context())
    await asyncio.wait_for(runner.wait_background(), 1)
    assert seen == ["hi"]
    assert runner.lane.deferred == 0
