"""Every way the world fails becomes the right `bot.llm.errors` type, on both SDKs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.llm.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
)
from bot.llm.registry import ProviderRegistry
from bot.llm.types import user
from tests.fakes.llm_server import FakeLLMServer, Fault, unused_port_url
from tests.llm.conftest import SHARED_KEYS, drain

SPECS = ["openrouter:vendor/model-x", "anthropic:claude-opus-test"]
FAULTS: list[tuple[Fault, type[ProviderError], int | None]] = [
    (Fault.SERVER_ERROR, ProviderServerError, 500),
    (Fault.RATE_LIMITED, RateLimited, 429),
    (Fault.HANG, ProviderTimeout, None),
    (Fault.DROP_CONNECTION, ProviderConnectionError, None),
    (Fault.HTML_502, MalformedResponse, 502),
    (Fault.MALFORMED_JSON, MalformedResponse, None),
    (Fault.WRONG_SHAPE, MalformedResponse, None),
    (Fault.BAD_REQUEST, RequestRejected, 400),
]
STATUSES: list[tuple[int, type[ProviderError]]] = [
    (401, RequestRejected),
    (403, RequestRejected),
    (404, RequestRejected),
    (408, ProviderServerError),
    (409, ProviderServerError),
    (422, RequestRejected),
    (429, RateLimited),
    (500, ProviderServerError),
    (503, ProviderServerError),
    (504, ProviderServerError),
    (529, ProviderServerError),  # Anthropic's "overloaded"
]


async def complete_error(provider_call: object) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await provider_call  # type: ignore[misc]
    return info.value


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(("fault", "expected", "status"), FAULTS, ids=[f.name for f, *_ in FAULTS])
async def test_complete_maps_fault(
    spec: str,
    fault: Fault,
    expected: type[ProviderError],
    status: int | None,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(spec.split(":", 1)[1], fault=fault, retry_after=1)
    provider = make_registry().get(spec)

    error = await complete_error(provider.complete([user("hi")]))

    assert type(error) is expected
    assert error.status == status
    assert error.retryable is (expected is not RequestRejected)
    assert (error.provider, error.model) == tuple(spec.split(":", 1))
    assert SHARED_KEYS["openrouter"] not in str(error)
    assert SHARED_KEYS["anthropic"] not in str(error)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(("fault", "expected", "status"), FAULTS, ids=[f.name for f, *_ in FAULTS])
async def test_stream_maps_fault(
    spec: str,
    fault: Fault,
    expected: type[ProviderError],
    status: int | None,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(spec.split(":", 1)[1], fault=fault)
    provider = make_registry().get(spec)

    with pytest.raises(ProviderError) as info:
        await drain(provider.stream([user("hi")]))

    assert type(info.value) is expected
    assert info.value.status == status


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(("status", "expected"), STATUSES, ids=[str(s) for s, _ in STATUSES])
async def test_status_is_mapped_on_both_calls(
    spec: str,
    status: int,
    expected: type[ProviderError],
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    llm_server.script(spec.split(":", 1)[1], fault=Fault.STATUS, status=status, retry_after=0)
    provider = make_registry().get(spec)

    completed = await complete_error(provider.complete([user("hi")]))
    with pytest.raises(ProviderError) as streamed:
        await drain(provider.stream([user("hi")]))

    for error in (completed, streamed.value):
        assert type(error) is expected
        assert error.status == status
        assert error.retryable is (expected is not RequestRejected)


@pytest.mark.parametrize("spec", SPECS)
async def test_stream_that_ends_without_its_terminal_event_is_malformed(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """The body ends cleanly, but the answer never finished: not a reply to show as complete."""
    llm_server.script(spec.split(":", 1)[1], "one two three four five", fault=Fault.CUT_STREAM)
    provider = make_registry().get(spec)
    deltas: list[str] = []

    with pytest.raises(MalformedResponse, match="ended before") as info:
        await drain(provider.stream([user("hi")]), deltas)

    assert deltas == ["one ", "two "]
    assert info.value.retryable


async def test_stream_finishing_with_openrouters_error_reason_is_malformed(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """OpenRouter ends a generation that failed upstream with `finish_reason: "error"`."""
    llm_server.script("vendor/model-x", "one two", finish_reason="error")
    provider = make_registry().get("openrouter:vendor/model-x")

    with pytest.raises(MalformedResponse, match="finish_reason 'error'"):
        await drain(provider.stream([user("hi")]))


@pytest.mark.parametrize("spec", SPECS)
async def test_stream_whose_connection_drops_mid_answer_is_a_connection_error(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(spec.split(":", 1)[1], "one two three four five", fault=Fault.DROP_MID_STREAM)
    provider = make_registry().get(spec)
    deltas: list[str] = []

    with pytest.raises(ProviderConnectionError) as info:
        await drain(provider.stream([user("hi")]), deltas)

    assert deltas == ["one ", "two "]
    assert (info.value.provider, info.value.model) == tuple(spec.split(":", 1))


@pytest.mark.parametrize("spec", SPECS)
async def test_stream_that_goes_silent_mid_answer_times_out(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """After the first token only the read timeout guards the stream; it must map too."""
    llm_server.script(spec.split(":", 1)[1], "one two three", fault=Fault.STALL_MID_STREAM)
    provider = make_registry(llm_timeout=0.3).get(spec)
    deltas: list[str] = []

    with pytest.raises(ProviderTimeout):
        await drain(provider.stream([user("hi")]), deltas)

    assert deltas == ["one ", "two "]


@pytest.mark.parametrize("spec", SPECS)
async def test_mid_stream_error_after_some_tokens(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(
        spec.split(":", 1)[1], "one two three four five", fault=Fault.MID_STREAM_ERROR
    )
    provider = make_registry().get(spec)
    deltas: list[str] = []

    with pytest.raises(MalformedResponse, match="stream"):
        await drain(provider.stream([user("hi")]), deltas)

    assert deltas == ["one ", "two "]


async def test_rate_limit_carries_retry_after(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("m", fault=Fault.RATE_LIMITED, retry_after=42)
    for spec in ("openai:m", "anthropic:m"):
        with pytest.raises(RateLimited) as info:
            await make_registry().get(spec).complete([user("hi")])
        assert info.value.retry_after == 42


@pytest.mark.parametrize("spec", ["openai:down", "anthropic:down"])
async def test_refused_connection(
    spec: str, make_registry: Callable[..., ProviderRegistry]
) -> None:
    url = unused_port_url()
    registry = make_registry(openai_base_url=f"{url}/v1", anthropic_base_url=url)

    with pytest.raises(ProviderConnectionError):
        await registry.get(spec).complete([user("hi")])


@pytest.mark.parametrize("spec", ["openai:flaky", "anthropic:flaky"])
async def test_sdk_retries_once_on_the_same_model(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """llm_max_retries=1: a single 500 is absorbed by the SDK without changing models."""
    llm_server.script("flaky", "recovered", fault=Fault.SERVER_ERROR, fault_times=1)
    provider = make_registry(llm_max_retries=1).get(spec)

    response = await provider.complete([user("hi")])

    assert response.text == "recovered"
    assert len(llm_server.requests_for("flaky")) == 2


@pytest.mark.parametrize("spec", ["openai:busy", "anthropic:busy"])
async def test_long_retry_after_is_not_waited_for(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """A 429 asking for 60 s fails at once (the fallback chain moves on) instead of sleeping."""
    llm_server.script("busy", fault=Fault.RATE_LIMITED, retry_after=60)
    provider = make_registry(llm_max_retries=2).get(spec)

    with pytest.raises(RateLimited):
        await provider.complete([user("hi")])

    assert len(llm_server.requests_for("busy")) == 1


@pytest.mark.parametrize("spec", ["openai:slow", "anthropic:slow"])
async def test_per_call_timeout_overrides_the_default(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("slow", "late but fine", latency=0.3)
    provider = make_registry(llm_timeout=0.1).get(spec)

    with pytest.raises(ProviderTimeout):
        await provider.complete([user("hi")])
    response = await provider.complete([user("hi")], timeout=2.0)

    assert response.text == "late but fine"


async def test_keepalive_only_stream_hits_the_overall_deadline(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """Comments trickling in reset the read timeout; the first-token deadline still fires."""
    llm_server.script("trickle", "never", keepalive_comments=1, token_delay=2.0)
    provider = make_registry(llm_timeout=0.3).get("openrouter:trickle")

    with pytest.raises(ProviderTimeout):
        await drain(provider.stream([user("hi")]))
