"""The same request through every remote wire format gives the same normalized response."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.llm.protocol import LLMProvider
from bot.llm.registry import ProviderRegistry
from bot.llm.types import LLMResponse, StreamChunk, assistant, system, user
from tests.fakes.llm_server import FakeLLMServer
from tests.llm.conftest import SHARED_KEYS, key_sent

REPLY = "Practice a little every day, and review what you missed."
SPECS = [
    "openrouter:openai/gpt-4o-mini",
    "openai:gpt-4o-mini",
    "anthropic:claude-opus-test",
    "groq:llama-3.3-70b",
    "xai:grok-4",
    "vllm:qwen3-8b",
]
MESSAGES = [system("You are a coach."), user("How do I learn faster?")]


def model_of(spec: str) -> str:
    return spec.split(":", 1)[1]


async def collect(provider: LLMProvider) -> tuple[list[str], LLMResponse]:
    deltas: list[str] = []
    final: StreamChunk | None = None
    async for chunk in provider.stream(MESSAGES):
        if chunk.is_final:
            final = chunk
        else:
            deltas.append(chunk.delta)
    assert final is not None, "stream ended without a final chunk"
    assert final.response is not None
    return deltas, final.response


@pytest.mark.parametrize("spec", SPECS)
async def test_complete_returns_normalized_response(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(model_of(spec), REPLY)
    provider = make_registry().get(spec)

    response = await provider.complete(MESSAGES)

    assert response.text == REPLY
    assert (response.provider, response.model) == tuple(spec.split(":", 1))
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens == len(REPLY.split())
    assert response.finish_reason == "stop"
    assert response.latency_ms > 0
    assert [a.ok for a in response.attempts] == [True]
    [request] = llm_server.requests
    assert request.stream is False


@pytest.mark.parametrize("spec", SPECS)
async def test_stream_yields_deltas_then_full_response(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(model_of(spec), REPLY, keepalive_comments=3)
    provider = make_registry().get(spec)

    deltas, response = await collect(provider)

    assert len(deltas) == len(REPLY.split()), "one delta per streamed token"
    assert "".join(deltas) == REPLY == response.text
    assert response.usage.prompt_tokens > 0
    assert response.usage.completion_tokens == len(REPLY.split())
    assert response.finish_reason == "stop"
    [request] = llm_server.requests
    assert request.stream is True
    if request.api == "openai":
        assert request.body["stream_options"] == {"include_usage": True}


async def test_openrouter_cost_is_kept_and_requested(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("openai/gpt-4o-mini", REPLY, cost=0.00042)
    provider = make_registry().get("openrouter:openai/gpt-4o-mini")

    response = await provider.complete(MESSAGES)
    _, streamed = await collect(provider)

    assert response.usage.cost == pytest.approx(0.00042)
    assert streamed.usage.cost == pytest.approx(0.00042)
    for request in llm_server.requests:
        assert request.body["usage"] == {"include": True}


async def test_openrouter_sends_attribution_headers_and_shared_key(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    await make_registry().get("openrouter:openai/gpt-4o-mini").complete(MESSAGES)

    [request] = llm_server.requests
    assert request.path == "/api/v1/chat/completions"
    assert request.headers["http-referer"] == "https://example.test/coach-bot"
    assert request.headers["x-title"] == "Coach Bot Tests"
    assert key_sent(request) == SHARED_KEYS["openrouter"]


async def test_other_providers_get_no_openrouter_extras(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    await make_registry().get("openai:gpt-4o-mini").complete(MESSAGES)

    [request] = llm_server.requests
    assert "http-referer" not in request.headers
    assert "x-title" not in request.headers
    assert "usage" not in request.body
    assert key_sent(request) == SHARED_KEYS["openai"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("spec", "sdk"),
    [("openrouter:openai/gpt-4o-mini", "AsyncOpenAI"), ("anthropic:claude-test", "AsyncAnthropic")],
)
async def test_requests_carry_no_sdk_platform_telemetry(
    stream: bool,
    spec: str,
    sdk: str,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    provider = make_registry().get(spec)
    if stream:
        await collect(provider)
    else:
        await provider.complete(MESSAGES)

    [request] = llm_server.requests
    # The SDKs' OS / CPU / runtime / version headers are left out (on the hot path, openai's
    # per-request retry and timeout ones too); each SDK still names itself, not our subclass,
    # in the User-Agent.
    telemetry = {name for name in request.headers if name.startswith("x-stainless")}
    platform = {"os", "arch", "runtime", "runtime-version", "lang", "package-version"}
    assert not telemetry & {f"x-stainless-{name}" for name in platform}
    if sdk == "AsyncOpenAI":
        assert telemetry == {"x-stainless-async"}
    assert request.headers["user-agent"].startswith(f"{sdk}/Python ")
    assert request.headers["content-type"] == "application/json"


async def test_groq_uses_its_own_base_path(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    await make_registry().get("groq:llama-3.3-70b").complete(MESSAGES)

    [request] = llm_server.requests
    assert request.path == "/openai/v1/chat/completions"
    assert key_sent(request) == SHARED_KEYS["groq"]


async def test_openai_request_carries_messages_and_parameters(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    provider = make_registry().get("openai:gpt-4o-mini")

    await provider.complete(MESSAGES, temperature=0.3, max_tokens=77)

    body = llm_server.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "You are a coach."},
        {"role": "user", "content": "How do I learn faster?"},
    ]
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 77


async def test_anthropic_gets_system_apart_and_alternating_turns(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    provider = make_registry().get("anthropic:claude-opus-test")
    messages = [
        system("You are a coach."),
        assistant("Welcome back!"),
        user("First question."),
        user("Second question."),
        system("Be brief."),
        assistant("Sure."),
    ]

    await provider.complete(messages, temperature=0.9, max_tokens=50)

    [request] = llm_server.requests
    assert request.path == "/v1/messages"
    assert request.body["system"] == "You are a coach.\n\nBe brief."
    roles = [m["role"] for m in request.body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant"]
    assert request.body["messages"][2]["content"] == "First question.\n\nSecond question."
    assert request.body["max_tokens"] == 50
    assert "temperature" not in request.body  # anthropic 2.x create() takes none
    assert key_sent(request) == SHARED_KEYS["anthropic"]


async def test_anthropic_without_max_tokens_sends_a_default(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    await make_registry().get("anthropic:claude-haiku-test").complete([user("hi")])

    body = llm_server.requests[0].body
    assert body["max_tokens"] > 0
    assert "system" not in body


async def test_reply_function_sees_the_request(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("echo", lambda request: f"you said: {request.last_user_text}")

    response = await make_registry().get("openai:echo").complete([user("ping")])

    assert response.text == "you said: ping"


async def test_catalog_endpoint_lists_models(llm_server: FakeLLMServer) -> None:
    import httpx

    llm_server.catalog = [{"id": "meta/llama-4"}, {"id": "openai/gpt-5"}]
    async with httpx.AsyncClient() as client:
        for base in (llm_server.openrouter_base_url, llm_server.openai_base_url):
            reply = await client.get(f"{base}/models")
            assert reply.status_code == 200
            assert [m["id"] for m in reply.json()["data"]] == ["meta/llama-4", "openai/gpt-5"]
