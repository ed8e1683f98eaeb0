"""OpenRouter's catalog as `/setmodel` uses it: fetched from the loopback server, cached, closest
ids suggested, and an outage that never makes `/setmodel` impossible."""

from __future__ import annotations

import asyncio

from bot.services.openrouter_models import OpenRouterModels, closest
from tests.fakes.llm_server import FakeLLMServer, unused_port_url
from tests.services.fakes import FakeClock

IDS = [
    "openai/gpt-4o-mini",
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4.5",
    "anthropic/claude-haiku-4.5",
    "google/gemini-2.5-pro",
]


async def test_found_missing_and_one_fetch_per_ttl() -> None:
    clock = FakeClock()
    async with FakeLLMServer() as server:
        server.catalog = [{"id": i} for i in IDS]
        catalog = OpenRouterModels(server.openrouter_base_url, ttl=60, clock=clock)
        try:
            checks = await asyncio.gather(
                catalog.check("anthropic/claude-sonnet-4.5"),
                catalog.check("anthropic/claude-sonet-4.5"),
            )
            assert [c.status for c in checks] == ["found", "missing"]
            assert checks[1].suggestions[0] == "anthropic/claude-sonnet-4.5"
            assert catalog.fetches == 1  # concurrent checks share one fetch
            assert [r.path for r in server.requests] == ["/api/v1/models"]
            assert "authorization" not in server.requests[0].headers  # no key sent
            clock.advance(61)
            await catalog.check("openai/gpt-4o")
            assert catalog.fetches == 2
        finally:
            await catalog.close()


async def test_an_outage_keeps_the_old_copy_and_without_one_the_id_is_unverified() -> None:
    clock = FakeClock()
    async with FakeLLMServer() as server:
        server.catalog = [{"id": i} for i in IDS]
        catalog = OpenRouterModels(server.openrouter_base_url, ttl=1, retry_backoff=30, clock=clock)
        try:
            assert (await catalog.check("openai/gpt-4o")).status == "found"
            await server.close()
            clock.advance(5)
            assert (await catalog.check("openai/gpt-4o")).status == "found"  # the stale copy
            assert (await catalog.check("x/y")).status == "missing"
            assert catalog.fetches == 2  # one failed refresh, then the backoff holds
        finally:
            await catalog.close()

    nowhere = OpenRouterModels(unused_port_url() + "/api/v1")
    try:
        check = await nowhere.check("openai/gpt-4o")
        assert check.status == "unverified"
        assert check.problem is not None
        assert "ConnectError" in check.problem
    finally:
        await nowhere.close()


async def test_a_broken_answer_is_an_outage_not_an_empty_catalog() -> None:
    async with FakeLLMServer() as server:
        server.catalog = []
        catalog = OpenRouterModels(server.openrouter_base_url)
        try:
            assert (await catalog.check("openai/gpt-4o")).status == "unverified"
        finally:
            await catalog.close()


def test_closest_prefers_the_same_model_under_its_vendor() -> None:
    assert closest("claude-sonnet-4.5", IDS)[0] == "anthropic/claude-sonnet-4.5"
    assert closest("openai/gpt4o-mini", IDS)[0] == "openai/gpt-4o-mini"
    assert closest("zzzz/qqqq", IDS) == []
