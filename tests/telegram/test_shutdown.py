"""Stopping takes SHUTDOWN_TIMEOUT at most, in all: updates in flight and background steps share
one deadline, and whatever still runs then is cancelled before the database closes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bot.app import ShutdownDeadline, build_services
from bot.pipeline.observer import NullObserver
from bot.telegram.runtime import BotRuntime
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import make_settings

SHUTDOWN = 1.5
HANGS = 60.0  # a model call that outlives any shutdown
SECRET = "shutdown-test-secret"


async def wait_until(check: object, timeout: float = 15.0) -> None:
    assert callable(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_updates_and_background_steps_share_one_deadline_then_are_cancelled(
    tmp_path: Path, tg: FakeTelegramServer, mode: str
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.script("m-summarizer", agent_reply, latency=HANGS)  # a background step that hangs
        llm.script("m-tutor", agent_reply, latency=HANGS)  # an update that hangs
        extra: dict[str, object] = {"shutdown_timeout": SHUTDOWN}
        port = free_port()
        extra.update(webhook_host="127.0.0.1", webhook_port=port)
        if mode == "webhook":
            extra.update(webhook_url=f"http://127.0.0.1:{port}/webhook", webhook_secret=SECRET)
        settings = make_settings(tmp_path, tg, llm, **extra)

        loop = asyncio.get_running_loop()
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services)
            await runtime.start()
            try:
                # One chat's reply went out; its summary is being written in the background.
                tg.user_message("I sleep badly", user_id=601)
                await tg.wait_for_call("sendMessage", chat_id=601, timeout=15)
                await wait_until(lambda: llm.requests_for("m-summarizer"))
                # Another chat's lesson is still being written.
                tg.user_message("/learn sleep", user_id=602)
                await wait_until(lambda: llm.requests_for("m-tutor"))
                assert services.runner.background_jobs()
            finally:
                runtime.request_stop()
                started = loop.time()
                await runtime.stop()
                stopped = loop.time()
                # What runtime.stop leaves running would meet a closed database next.
                assert runtime.feeder.tasks == set()
                assert services.runner.background_jobs() == []
                # The services' own close runs on the same deadline, now spent: what follows
                # (the trace flush) gets the floor, not another SHUTDOWN_TIMEOUT.
                assert services.shutdown is not None
                assert services.shutdown.remaining() <= ShutdownDeadline.FLOOR
        closed = loop.time()

    # The lesson had the whole budget, then was cancelled; nothing was left for the background
    # steps, which were cancelled at the same deadline instead of getting a budget of their own.
    assert SHUTDOWN - 0.1 <= stopped - started < SHUTDOWN + 1.0
    assert closed - started < SHUTDOWN + 1.0
    assert tg.calls_of("sendMessage", chat_id=602) == []


async def test_a_quick_shutdown_still_finishes_the_background_steps(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.script("m-summarizer", agent_reply, latency=0.5)
        settings = make_settings(
            tmp_path,
            tg,
            llm,
            shutdown_timeout=10,
            webhook_host="127.0.0.1",
            webhook_port=free_port(),
        )
        async with build_services(settings, observer=NullObserver()) as services:
            runtime = BotRuntime(services)
            await runtime.start()
            try:
                tg.user_message("I sleep badly", user_id=603)
                await tg.wait_for_call("sendMessage", chat_id=603, timeout=15)
                await wait_until(lambda: llm.requests_for("m-summarizer"))
            finally:
                runtime.request_stop()
                started = time.monotonic()
                await runtime.stop()
            assert time.monotonic() - started < 5
            summary = await services.storage.summaries.get(603)
        assert summary is not None
        assert "night shifts" in summary.summary
