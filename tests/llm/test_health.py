"""Circuit breakers: a model that keeps failing is skipped for a while, probed, then trusted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bot.llm.errors import (
    AllModelsFailed,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
)
from bot.llm.health import ModelHealth
from bot.llm.registry import ProviderRegistry
from bot.llm.types import user
from tests.fakes.llm_server import FakeLLMServer, Fault, Script
from tests.llm.conftest import drain


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down() -> ProviderServerError:
    return ProviderServerError("upstream 500", provider="openai", model="m", status=500)


def test_failures_in_a_row_open_the_breaker_for_the_cool_down_then_one_probe_passes() -> None:
    clock = Clock()
    health = ModelHealth(failures_to_open=3, cool_down=30, clock=clock)
    model = object()
    for _ in range(3):
        assert health.admit(model)
        health.failed(model, down())
    assert not health.admit(model)
    assert "3 failures in a row" in health.skipped_because(model)
    clock.now += 29
    assert not health.admit(model)
    clock.now += 2
    assert health.admit(model)  # the probe
    assert not health.admit(model)  # ...and only one at a time
    health.succeeded(model)
    assert health.admit(model)
    assert not health.is_open(model)


def test_a_failed_probe_doubles_the_cool_down_up_to_the_cap() -> None:
    clock = Clock()
    health = ModelHealth(failures_to_open=1, cool_down=10, max_cool_down=25, clock=clock)
    model = object()
    health.failed(model, down())
    waits = []
    for _ in range(3):
        started = clock.now
        while not health.admit(model):
            clock.now += 1
        waits.append(clock.now - started)
        health.failed(model, down())
    assert waits == [10, 20, 25]


def test_a_rate_limit_opens_for_at_least_its_retry_after() -> None:
    clock = Clock()
    health = ModelHealth(failures_to_open=1, cool_down=5, clock=clock)
    model = object()
    health.failed(model, RateLimited("slow down", retry_after=42, provider="openai", model="m"))
    clock.now += 41
    assert not health.admit(model)
    clock.now += 2
    assert health.admit(model)


def test_only_retryable_failures_count_and_a_success_resets_them() -> None:
    health = ModelHealth(failures_to_open=2)
    model = object()
    rejected = RequestRejected("bad request", provider="openai", model="m", status=400)
    for _ in range(5):
        health.failed(model, rejected)
    assert health.admit(model)
    health.failed(model, ProviderTimeout("slow", provider="openai", model="m"))
    health.succeeded(model)
    health.failed(model, ProviderTimeout("slow", provider="openai", model="m"))
    assert health.admit(model)  # one failure since the success: still closed


def test_a_cancelled_probe_frees_the_slot() -> None:
    clock = Clock()
    health = ModelHealth(failures_to_open=1, cool_down=1, clock=clock)
    model = object()
    health.failed(model, down())
    clock.now += 2
    assert health.admit(model)
    health.released(model)
    assert health.admit(model)


async def test_a_failing_primary_is_skipped_then_probed_and_trusted_again(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    clock = Clock()
    health = ModelHealth(failures_to_open=2, cool_down=30, clock=clock)
    llm_server.script("primary", fault=Fault.SERVER_ERROR)
    llm_server.script("backup", "backup answer")
    registry = make_registry(fallback_models=["openai:backup"], health=health)
    chain = registry.chain("openai:primary")

    def calls_to(model: str) -> int:
        return sum(1 for r in llm_server.requests if r.model == model)

    for _ in range(2):
        assert (await chain.complete([user("hi")])).text == "backup answer"
    assert calls_to("primary") == 2

    # Open: the next calls go straight to the backup, and say why the primary was skipped.
    response = await chain.complete([user("hi")])
    assert response.text == "backup answer"
    assert calls_to("primary") == 2
    skip, answered = response.attempts
    assert (skip.model, skip.ok) == ("primary", False)
    assert skip.error is not None
    assert skip.error.startswith("skipped: cooling down")
    assert (answered.model, answered.ok, answered.index) == ("backup", True, 1)
    deltas: list[str] = []
    await drain(chain.stream([user("hi")]), deltas)  # streams skip it too
    assert "".join(deltas) == "backup answer"
    assert calls_to("primary") == 2

    # The primary recovers; after the cool-down one call probes it, and it is used again.
    llm_server.scripts["primary"] = Script(text="primary answer")
    clock.now += 31
    assert (await chain.complete([user("hi")])).text == "primary answer"
    assert (await chain.complete([user("hi")])).text == "primary answer"
    assert calls_to("primary") == 4


async def test_when_every_model_is_cooling_down_they_are_still_tried(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    health = ModelHealth(failures_to_open=1, cool_down=300)
    llm_server.script("primary", fault=Fault.SERVER_ERROR)
    llm_server.script("backup", fault=Fault.SERVER_ERROR)
    registry = make_registry(fallback_models=["openai:backup"], health=health)
    chain = registry.chain("openai:primary")
    with pytest.raises(AllModelsFailed):
        await chain.complete([user("hi")])
    llm_server.scripts["backup"] = Script(text="back again")
    before = len(llm_server.requests)

    response = await chain.complete([user("hi")])

    # Both were cooling down: the call still asked them, in order, and the backup answered.
    assert [r.model for r in llm_server.requests[before:]] == ["primary", "backup"]
    assert response.text == "back again"
    assert not health.is_open(registry.get("openai:backup"))


@pytest.mark.parametrize("stream", [False, True])
async def test_last_resort_calls_make_one_attempt_without_back_off(
    stream: bool, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """With every breaker open, each model is asked once more, but without the SDKs' own
    retries and their back-off (0.375 s and more each): in a total outage the user hears back
    at once; a model that works again still answers, as the test above shows."""
    health = ModelHealth(failures_to_open=1, cool_down=300)
    llm_server.script("primary", fault=Fault.SERVER_ERROR)
    llm_server.script("claude-backup", fault=Fault.SERVER_ERROR)
    # One SDK retry per call, on both SDKs (openai for the primary, anthropic for the backup).
    registry = make_registry(
        fallback_models=["anthropic:claude-backup"], health=health, llm_max_retries=1
    )
    chain = registry.chain("openai:primary")
    with pytest.raises(AllModelsFailed):
        await chain.complete([user("hi")])  # opens both breakers
    # Models not yet cooling down retry as configured: two requests each.
    assert [r.model for r in llm_server.requests].count("primary") == 2
    assert [r.model for r in llm_server.requests].count("claude-backup") == 2
    before = len(llm_server.requests)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def ask() -> None:
        if stream:
            await drain(chain.stream([user("hi")]))
        else:
            await chain.complete([user("hi")])

    with pytest.raises(AllModelsFailed):
        await ask()

    assert [r.model for r in llm_server.requests[before:]] == ["primary", "claude-backup"]
    # Each SDK's first back-off is at least 0.375 s (0.5 s less up to a quarter of jitter).
    assert loop.time() - started < 0.35
