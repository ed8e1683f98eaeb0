"""Fallback over real providers: each retryable failure moves on, a rejected request does not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from pydantic import BaseModel

from bot.llm.errors import (
    AllModelsFailed,
    LLMError,
    MalformedResponse,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeout,
    RequestRejected,
)
from bot.llm.fallback import CURRENT_ATTEMPT, AttemptContext, FallbackProvider
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.protocol import LLMProvider
from bot.llm.registry import ProviderRegistry
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk, user
from tests.fakes.llm_server import FakeLLMServer, Fault, unused_port_url
from tests.llm.conftest import drain

RETRYABLE = [
    Fault.SERVER_ERROR,
    Fault.RATE_LIMITED,
    Fault.HANG,
    Fault.DROP_CONNECTION,
    Fault.HTML_502,
    Fault.MALFORMED_JSON,
]
# Faults that break a stream part-way: the answer never reaches its terminal event.
BROKEN_STREAMS = [Fault.MID_STREAM_ERROR, Fault.CUT_STREAM, Fault.DROP_MID_STREAM]
STREAM_FAULTS = [*RETRYABLE, *BROKEN_STREAMS]
PRIMARIES = ["openrouter:primary/model", "anthropic:primary-claude"]
# DESIGN.md: timeout, connection error, 408, 409, 429, 5xx fall back; a 4xx the request itself
# caused does not.
FALLBACK_STATUSES = [408, 409, 429, 500, 502, 503, 504]
FINAL_STATUSES = [400, 401, 403, 404, 422]


@pytest.mark.parametrize("primary", PRIMARIES)
@pytest.mark.parametrize("fault", RETRYABLE, ids=[f.name for f in RETRYABLE])
async def test_backup_answers_when_primary_fails(
    primary: str,
    fault: Fault,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(primary.split(":", 1)[1], fault=fault)
    llm_server.script("backup-model", "backup answer")
    registry = make_registry(fallback_models=["openai:backup-model"])

    response = await registry.chain(primary).complete([user("hi")])

    assert response.text == "backup answer"
    assert (response.provider, response.model) == ("openai", "backup-model")
    first, second = response.attempts
    assert (first.index, first.ok, second.index, second.ok) == (0, False, 1, True)
    assert first.error is not None
    assert f"{first.provider}:{first.model}" == primary
    assert second.is_fallback
    assert second.usage is not None
    assert first.started_at <= second.started_at


@pytest.mark.parametrize("primary", PRIMARIES)
@pytest.mark.parametrize("fault", STREAM_FAULTS, ids=[f.name for f in STREAM_FAULTS])
async def test_stream_falls_back_before_the_first_delta(
    primary: str,
    fault: Fault,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    # error_after_tokens=0: the mid-stream error comes before any text was shown.
    llm_server.script(primary.split(":", 1)[1], "lost", fault=fault, error_after_tokens=0)
    llm_server.script("backup-model", "backup streamed answer")
    chain = make_registry(fallback_models=["openai:backup-model"]).chain(primary)

    deltas: list[str] = []
    final: LLMResponse | None = None
    async for chunk in chain.stream([user("hi")]):
        if chunk.response is not None:
            final = chunk.response
        deltas.append(chunk.delta)

    assert "".join(deltas) == "backup streamed answer"
    assert final is not None
    assert final.model == "backup-model"
    assert [(a.index, a.ok) for a in final.attempts] == [(0, False), (1, True)]


@pytest.mark.parametrize("primary", PRIMARIES)
@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Fault.MID_STREAM_ERROR, MalformedResponse),
        (Fault.CUT_STREAM, MalformedResponse),
        (Fault.DROP_MID_STREAM, ProviderConnectionError),
    ],
    ids=[f.name for f in BROKEN_STREAMS],
)
async def test_stream_does_not_fall_back_after_text_was_shown(
    primary: str,
    fault: Fault,
    expected: type[LLMError],
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    """A broken answer is an error the caller sees, never a silent success, and never spliced
    together with another model's answer."""
    llm_server.script(primary.split(":", 1)[1], "one two three four", fault=fault)
    chain = make_registry(fallback_models=["openai:backup-model"]).chain(primary)
    deltas: list[str] = []

    with pytest.raises(expected) as info:
        await drain(chain.stream([user("hi")]), deltas)

    assert deltas == ["one ", "two "]
    assert llm_server.requests_for("backup-model") == []
    assert any("streaming began" in note for note in info.value.__notes__)


@pytest.mark.parametrize("primary", PRIMARIES)
@pytest.mark.parametrize("status", FALLBACK_STATUSES)
async def test_backup_answers_when_primary_answers_a_retryable_status(
    primary: str,
    status: int,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(primary.split(":", 1)[1], fault=Fault.STATUS, status=status, retry_after=0)
    llm_server.script("backup-model", "backup answer")
    chain = make_registry(fallback_models=["openai:backup-model"]).chain(primary)

    response = await chain.complete([user("hi")])
    deltas: list[str] = []
    await drain(chain.stream([user("hi")]), deltas)

    assert response.text == "backup answer" == "".join(deltas)
    assert [(a.index, a.ok) for a in response.attempts] == [(0, False), (1, True)]
    assert f"[{status}]" in (response.attempts[0].error or "")
    assert len(llm_server.requests_for(primary.split(":", 1)[1])) == 2
    assert len(llm_server.requests_for("backup-model")) == 2


@pytest.mark.parametrize("primary", PRIMARIES)
@pytest.mark.parametrize("status", FINAL_STATUSES)
async def test_primary_rejecting_the_request_does_not_fall_back(
    primary: str,
    status: int,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(primary.split(":", 1)[1], fault=Fault.STATUS, status=status)
    chain = make_registry(fallback_models=["openai:backup-model"]).chain(primary)

    with pytest.raises(RequestRejected) as complete_info:
        await chain.complete([user("hi")])
    with pytest.raises(RequestRejected) as stream_info:
        await drain(chain.stream([user("hi")]))

    assert complete_info.value.status == stream_info.value.status == status
    assert llm_server.requests_for("backup-model") == []


@pytest.mark.parametrize("primary", ["openai:down", "anthropic:down"])
async def test_backup_answers_when_the_primary_refuses_connections(
    primary: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    refused = unused_port_url()
    llm_server.script("backup-model", "backup answer")
    registry = make_registry(
        openai_base_url=f"{refused}/v1",
        anthropic_base_url=refused,
        fallback_models=["openrouter:backup-model"],
    )
    chain = registry.chain(primary)

    response = await chain.complete([user("hi")])
    deltas: list[str] = []
    await drain(chain.stream([user("hi")]), deltas)

    assert response.text == "backup answer" == "".join(deltas)
    assert response.provider == "openrouter"
    assert "ProviderConnectionError" in (response.attempts[0].error or "")
    assert llm_server.requests_for("down") == []


@pytest.mark.parametrize("primary", PRIMARIES)
async def test_rejected_request_does_not_fall_back(
    primary: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(primary.split(":", 1)[1], fault=Fault.BAD_REQUEST)
    chain = make_registry(fallback_models=["openai:backup-model"]).chain(primary)

    with pytest.raises(RequestRejected) as info:
        await chain.complete([user("hi")])
    with pytest.raises(RequestRejected):
        await drain(chain.stream([user("hi")]))

    assert info.value.status == 400
    assert llm_server.requests_for("backup-model") == []


async def test_all_fail_raises_one_error_listing_every_attempt(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("a", fault=Fault.SERVER_ERROR)
    llm_server.script("b", fault=Fault.HANG)
    llm_server.script("c", fault=Fault.HTML_502)
    chain = make_registry(fallback_models=["anthropic:b", "openai:c"]).chain("openrouter:a")

    with pytest.raises(AllModelsFailed) as info:
        await chain.complete([user("hi")])

    error = info.value
    assert [(a.provider, a.model, a.index) for a in error.attempts] == [
        ("openrouter", "a", 0),
        ("anthropic", "b", 1),
        ("openai", "c", 2),
    ]
    assert [type(e) for e in error.errors] == [
        ProviderServerError,
        ProviderTimeout,
        MalformedResponse,
    ]
    assert all(not a.ok and a.error for a in error.attempts)
    for spec in ("openrouter:a", "anthropic:b", "openai:c"):
        assert spec in str(error)


async def test_all_fail_while_streaming(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("a", fault=Fault.RATE_LIMITED)
    llm_server.script("b", fault=Fault.DROP_CONNECTION)
    chain = make_registry(fallback_models=["openai:b"]).chain("anthropic:a")

    with pytest.raises(AllModelsFailed) as info:
        await drain(chain.stream([user("hi")]))

    assert len(info.value.attempts) == 2


class Verdict(BaseModel):
    ok: bool


async def test_structured_output_failure_falls_back(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("rambler", "I think so, yes!")
    llm_server.script("precise", '{"ok": true}')
    chain = make_registry(fallback_models=["openai:precise"]).chain("anthropic:rambler")

    response = await chain.complete([user("ok?")], schema=Verdict)

    assert response.parsed == Verdict(ok=True)
    assert "StructuredOutputError" in (response.attempts[0].error or "")
    assert len(llm_server.requests_for("rambler")) == 2  # first try + one repair


def recording(inner: LLMProvider, seen: list[tuple[str, AttemptContext | None]]) -> LLMProvider:
    """A wrapper like tracing's: notes which attempt it runs in."""

    class Recording:
        provider = inner.provider
        model = inner.model
        spec = inner.spec

        async def complete(self, messages: Sequence[ChatMessage], **kw: object) -> LLMResponse:
            seen.append((inner.spec, CURRENT_ATTEMPT.get()))
            return await inner.complete(messages, **kw)  # type: ignore[arg-type]

        async def stream(
            self, messages: Sequence[ChatMessage], **kw: object
        ) -> AsyncIterator[StreamChunk]:
            seen.append((inner.spec, CURRENT_ATTEMPT.get()))
            async for chunk in inner.stream(messages, **kw):  # type: ignore[arg-type]
                yield chunk

        async def close(self) -> None:
            await inner.close()

    return Recording()  # type: ignore[return-value]


async def test_wrappers_see_which_attempt_they_run_in(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    seen: list[tuple[str, AttemptContext | None]] = []
    llm_server.script("down", fault=Fault.SERVER_ERROR)
    registry = make_registry(fallback_models=["openai:up"], wrap=lambda p: recording(p, seen))
    chain = registry.chain("openrouter:down")

    await chain.complete([user("hi")])
    async for _ in chain.stream([user("hi")]):
        assert CURRENT_ATTEMPT.get() is None, "the attempt must not leak to the consumer"

    for calls in (seen[:2], seen[2:]):
        (first_spec, first), (second_spec, second) = calls
        assert (first_spec, first) == ("openrouter:down", AttemptContext(0, None))
        assert second_spec == "openai:up"
        assert second is not None
        assert second.index == 1
        assert second.is_fallback
        assert "ProviderServerError" in (second.previous_error or "")
    assert CURRENT_ATTEMPT.get() is None


async def test_fallback_names_the_primary_and_closes_every_provider() -> None:
    def fail(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        raise ProviderServerError("boom", provider=info.provider, model=info.model, status=503)

    primary = FunctionProvider(fail, provider="openai", model="a")
    backup = FunctionProvider(lambda m, i: "fine", provider="groq", model="b")
    chain = FallbackProvider([primary, backup])

    assert (chain.provider, chain.model, chain.spec) == ("openai", "a", "openai:a")
    assert (await chain.complete([user("x")])).text == "fine"
    await chain.close()
    assert primary.closed
    assert backup.closed


async def test_unexpected_errors_are_not_swallowed() -> None:
    def bug(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        raise KeyError("a bug")

    backup = FunctionProvider(lambda m, i: "fine", model="b")
    chain = FallbackProvider([FunctionProvider(bug, model="a"), backup])

    with pytest.raises(KeyError):
        await chain.complete([user("x")])
    assert backup.calls == []


async def test_structured_error_from_function_provider_counts_as_retryable() -> None:
    bad = FunctionProvider(lambda m, i: "not json", model="bad")
    good = FunctionProvider(lambda m, i: '{"ok": false}', model="good")

    response = await FallbackProvider([bad, good]).complete([user("x")], schema=Verdict)

    assert response.parsed == Verdict(ok=False)
