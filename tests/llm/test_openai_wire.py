"""A completion's lean POST (`bot.llm.openai_wire`) says to the server what the SDK would say, and
answers what the SDK would answer.

Each pair of calls below is made twice on one real client against the fake server: once on the
lean path (`client.wire` set, as `make_openai_client` makes it) and once through the SDK
(`wire = None`); what the server received and what the provider returned or raised must match.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.llm.errors import MalformedResponse, ProviderServerError, RateLimited, RequestRejected
from bot.llm.openai_compat import OpenAICompatibleProvider, make_openai_client
from bot.llm.types import ChatMessage
from tests.fakes.llm_server import FakeLLMServer, Fault, unused_port_url

# Headers each HTTP stack adds of its own accord (aiohttp or httpx2), not the SDK's.
TRANSPORT_HEADERS = {"accept-encoding", "connection", "content-length", "host"}
PROMPT = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="héllo"),
]


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


def provider_for(base_url: str, *, max_retries: int = 0) -> OpenAICompatibleProvider:
    client = make_openai_client(
        provider="openrouter",
        base_url=base_url,
        api_key="sk-or-test",
        timeout=5,
        max_retries=max_retries,
        app_url="https://example.test/bot",
        app_title="Bot Tests",
    )
    return OpenAICompatibleProvider(
        provider="openrouter", model="m", client=client, owns_client=True
    )


def sent(server: FakeLLMServer) -> tuple[dict[str, str], dict[str, Any], str]:
    request = server.requests[-1]
    headers = {k: v for k, v in request.headers.items() if k not in TRANSPORT_HEADERS}
    return headers, request.body, request.path


async def both_ways(
    server: FakeLLMServer, call: Any, script: dict[str, Any], **options: Any
) -> list[Any]:
    """`call(provider)` on the lean path, then through the SDK, model "m" answering as
    `script` says: [(what the server got, how many requests, the outcome)] for each."""
    outcomes = []
    for lean in (True, False):
        llm = provider_for(server.openrouter_base_url, **options)
        client: Any = llm._client
        assert client.wire is not None
        if not lean:
            client.wire = None
        server.reset()
        server.script("m", **script)
        try:
            outcome: Any = await call(llm)
        except Exception as exc:
            outcome = (type(exc), str(exc), getattr(exc, "status", None))
        finally:
            await llm.close()
        outcomes.append((sent(server) if server.requests else None, len(server.requests), outcome))
    return outcomes


async def test_a_completion_sends_the_sdks_headers_and_body_and_reads_the_same_answer(
    server: FakeLLMServer,
) -> None:
    async def call(llm: OpenAICompatibleProvider) -> Any:
        response = await llm.complete(PROMPT, temperature=0.2, max_tokens=50)
        return (response.text, response.usage, response.finish_reason, response.served_model)

    lean, sdk = await both_ways(server, call, {"text": "Hello there"})
    assert lean == sdk
    headers, body, path = lean[0]
    assert path.endswith("/chat/completions")
    assert headers["authorization"] == "Bearer sk-or-test"
    assert headers["x-title"] == "Bot Tests"
    assert not any(name.startswith("x-stainless-retry") for name in headers)
    assert body["messages"][1]["content"] == "héllo"
    assert lean[2][0] == "Hello there"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.BAD_REQUEST, RequestRejected),
        (Fault.SERVER_ERROR, ProviderServerError),
        (Fault.RATE_LIMITED, RateLimited),
        (Fault.HTML_502, MalformedResponse),
    ],
)
async def test_an_error_status_raises_what_the_sdk_raises_after_as_many_requests(
    server: FakeLLMServer, fault: Fault, error: type[Exception]
) -> None:
    """Retried by the SDK's rules (a 400 never, a 500 once, a 429 within MAX_SAME_MODEL_WAIT)."""

    async def call(llm: OpenAICompatibleProvider) -> Any:
        return await llm.complete(PROMPT)

    script = {"text": "unused", "fault": fault, "retry_after": 0.01}
    lean, sdk = await both_ways(server, call, script, max_retries=1)
    assert lean == sdk
    assert lean[2][0] is error
    assert lean[1] == (1 if fault is Fault.BAD_REQUEST else 2)


async def test_a_broken_body_and_a_refused_connection_read_as_through_the_sdk(
    server: FakeLLMServer,
) -> None:
    async def call(llm: OpenAICompatibleProvider) -> Any:
        return await llm.complete(PROMPT)

    lean, sdk = await both_ways(server, call, {"text": "x", "fault": Fault.MALFORMED_JSON})
    assert lean == sdk
    assert lean[2][0] is MalformedResponse

    outcomes = []
    for lean_path in (True, False):
        llm = provider_for(f"{unused_port_url()}/api/v1")
        if not lean_path:
            llm._client.wire = None  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(llm.complete(PROMPT), 5)
        except Exception as exc:
            outcomes.append((type(exc), str(exc)))
        finally:
            await llm.close()
    assert len(outcomes) == 2
    assert outcomes[0] == outcomes[1]


async def streamed(llm: OpenAICompatibleProvider) -> Any:
    deltas, last = [], None
    try:
        async for chunk in llm.stream(PROMPT, max_tokens=50):
            if chunk.delta:
                deltas.append(chunk.delta)
            if chunk.response is not None:
                last = chunk.response
    except Exception as exc:
        return (deltas, type(exc), str(exc))
    assert last is not None
    return (deltas, last.text, last.usage, last.finish_reason, last.served_model)


@pytest.mark.parametrize(
    "script",
    [
        {"text": "one two three four"},
        {"text": "one two three four", "fault": Fault.MID_STREAM_ERROR, "error_after_tokens": 2},
        {"text": "one two three four", "fault": Fault.CUT_STREAM, "error_after_tokens": 2},
        {"text": "one two three four", "fault": Fault.DROP_MID_STREAM, "error_after_tokens": 2},
        {"text": "unused", "fault": Fault.SERVER_ERROR},
        {"text": "unused", "fault": Fault.BAD_REQUEST},
    ],
    ids=["answer", "error-event", "cut", "dropped", "500", "400"],
)
async def test_a_stream_sends_and_reads_as_through_the_sdk(
    server: FakeLLMServer, script: dict[str, Any]
) -> None:
    lean, sdk = await both_ways(server, streamed, script, max_retries=1)
    assert lean == sdk
    assert lean[0][1]["stream"] is True
    if "fault" not in script:
        assert "".join(lean[2][0]) == "one two three four"
