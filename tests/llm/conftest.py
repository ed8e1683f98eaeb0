"""Fixtures for the provider layer: the loopback LLM server and settings that point at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.config import Settings
from bot.llm.registry import ProviderRegistry
from bot.llm.types import StreamChunk
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest

# Shared keys as configured by the operator; tests assert which one each request carried.
SHARED_KEYS = {
    "openrouter": "sk-or-shared-0001",
    "openai": "sk-openai-shared-0002",
    "anthropic": "sk-ant-shared-0003",
    "groq": "gsk-shared-0004",
    "xai": "xai-shared-0005",
}
# Small on purpose: the hang cases wait for it.
TIMEOUT = 0.5


async def drain(stream: AsyncIterator[StreamChunk], deltas: list[str] | None = None) -> None:
    """Consume a stream, keeping its text deltas (for asserting what was shown before a failure)."""
    async for chunk in stream:
        if deltas is not None and not chunk.is_final:
            deltas.append(chunk.delta)


def key_sent(request: RecordedRequest) -> str | None:
    """The API key a request carried (`Authorization: Bearer` or Anthropic's `x-api-key`)."""
    if "x-api-key" in request.headers:
        return request.headers["x-api-key"]
    auth = request.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None


def settings_for(server: FakeLLMServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openrouter_api_key": SHARED_KEYS["openrouter"],
        "openrouter_base_url": server.openrouter_base_url,
        "openai_api_key": SHARED_KEYS["openai"],
        "openai_base_url": server.openai_base_url,
        "anthropic_api_key": SHARED_KEYS["anthropic"],
        "anthropic_base_url": server.anthropic_base_url,
        "groq_api_key": SHARED_KEYS["groq"],
        "groq_base_url": server.groq_base_url,
        "xai_api_key": SHARED_KEYS["xai"],
        "xai_base_url": server.openai_base_url,
        "vllm_base_url": server.openai_base_url,
        "default_model": "openrouter:openai/gpt-4o-mini",
        "fallback_models": [],
        "llm_timeout": TIMEOUT,
        # The SDKs' own same-model retries are off unless a test is about them.
        "llm_max_retries": 0,
        "openrouter_app_url": "https://example.test/coach-bot",
        "openrouter_app_title": "Coach Bot Tests",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def make_registry(
    llm_server: FakeLLMServer,
) -> AsyncIterator[Callable[..., ProviderRegistry]]:
    """Build registries over the loopback server; every one is closed after the test."""
    made: list[ProviderRegistry] = []

    def make(**overrides: Any) -> ProviderRegistry:
        options = {
            k: overrides.pop(k) for k in ("wrap", "user_key_limit", "health") if k in overrides
        }
        registry = ProviderRegistry(settings_for(llm_server, **overrides), **options)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.close()
