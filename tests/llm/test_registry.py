"""The registry: keys, base URLs, caching, client reuse, chains and the errors that name a fix."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.llm.fallback import FallbackProvider
from bot.llm.protocol import LLMProvider
from bot.llm.registry import USER_KEY_LIMIT, ProviderRegistry, validate_settings
from bot.llm.specs import ModelSpecError, parse_spec
from bot.llm.types import user
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.llm.conftest import SHARED_KEYS, drain, key_sent, settings_for

USER_KEY = "sk-or-users-own-key-9999"


async def test_providers_are_cached_per_spec_and_key(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry()

    shared = registry.get("openrouter:openai/gpt-4o-mini")

    assert registry.get("openrouter:openai/gpt-4o-mini") is shared
    assert registry.get(parse_spec("openrouter:openai/gpt-4o-mini")) is shared
    assert registry.get("openrouter:openai/gpt-4o-mini", api_key=USER_KEY) is not shared
    assert registry.get("openrouter:openai/gpt-4o", api_key=USER_KEY) is registry.get(
        "openrouter:openai/gpt-4o", api_key=USER_KEY
    )


async def test_one_client_per_provider_and_key(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry()

    a = registry.get("openrouter:openai/gpt-4o-mini")
    b = registry.get("openrouter:anthropic/claude-sonnet-4.5")
    mine = registry.get("openrouter:openai/gpt-4o-mini", api_key=USER_KEY)
    other = registry.get("openai:gpt-4o-mini")

    assert a._client is b._client  # type: ignore[attr-defined]
    assert mine._client is not a._client  # type: ignore[attr-defined]
    assert other._client is not a._client  # type: ignore[attr-defined]


async def test_users_key_is_used_for_the_primary_only(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("mine", fault=Fault.SERVER_ERROR)
    registry = make_registry(fallback_models=["openrouter:shared-backup"])

    response = await registry.chain("openrouter:mine", api_key=USER_KEY).complete([user("hi")])

    assert response.model == "shared-backup"
    [primary] = llm_server.requests_for("mine")
    [backup] = llm_server.requests_for("shared-backup")
    assert key_sent(primary) == USER_KEY
    assert key_sent(backup) == SHARED_KEYS["openrouter"]


async def test_missing_key_names_the_variable(llm_server: FakeLLMServer) -> None:
    registry = ProviderRegistry(settings_for(llm_server, openai_api_key=None))
    try:
        expected = r"OPENAI_API_KEY is not set \(needed by openai:gpt-4o\)"
        with pytest.raises(ModelSpecError, match=expected):
            registry.get("openai:gpt-4o")
        # A user's own key is enough.
        assert registry.get("openai:gpt-4o", api_key="sk-user").model == "gpt-4o"
    finally:
        await registry.close()


async def test_keyless_vllm_needs_no_key(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("qwen", "local answer")

    response = await make_registry().get("vllm:qwen").complete([user("hi")])

    assert response.text == "local answer"


def test_typo_gets_did_you_mean(make_registry: Callable[..., ProviderRegistry]) -> None:
    with pytest.raises(ModelSpecError, match="did you mean 'openrouter'"):
        make_registry().get("openruter:openai/gpt-4o-mini")


async def test_base_url_comes_from_settings(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    # xai points at the /v1 prefix, openrouter at /api/v1: each request goes where its setting says.
    registry = make_registry()
    await registry.get("xai:grok-4").complete([user("hi")])
    await registry.get("openrouter:x/y").complete([user("hi")])

    assert [r.path for r in llm_server.requests] == [
        "/v1/chat/completions",
        "/api/v1/chat/completions",
    ]


async def test_default_base_urls_when_not_configured() -> None:
    from bot.config import Settings

    settings = Settings(_env_file=None, openai_api_key="sk-x")  # type: ignore[call-arg]
    registry = ProviderRegistry(settings)
    client = registry.get("openai:gpt-4o")._client  # type: ignore[attr-defined]
    await registry.close()

    assert str(client.base_url).rstrip("/") == "https://api.openai.com/v1"


async def test_chain_skips_duplicates_and_fallbacks_without_key(
    llm_server: FakeLLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(
        llm_server,
        xai_api_key=None,
        fallback_models=["openrouter:a", "xai:grok-4", "openai:b", "openrouter:a"],
    )
    registry = ProviderRegistry(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="bot.llm.registry"):
            chain = registry.chain("openrouter:a")
            registry.chain("openrouter:a")

        assert isinstance(chain, FallbackProvider)
        assert [p.spec for p in chain.providers] == ["openrouter:a", "openai:b"]
        warnings = [r for r in caplog.records if "xai:grok-4" in r.getMessage()]
        assert len(warnings) == 1, "warned once, not on every chain"
        assert "XAI_API_KEY" in warnings[0].getMessage()
    finally:
        await registry.close()


def test_chain_without_fallbacks_is_the_leaf(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry(fallback_models=["openrouter:openai/gpt-4o-mini"])

    chain = registry.chain("openrouter:openai/gpt-4o-mini")

    assert chain is registry.get("openrouter:openai/gpt-4o-mini")


def test_explicit_fallbacks_replace_the_configured_ones(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry(fallback_models=["openai:configured"])

    chain = registry.chain("openrouter:a", fallbacks=["anthropic:explicit"])

    assert isinstance(chain, FallbackProvider)
    assert [p.spec for p in chain.providers] == ["openrouter:a", "anthropic:explicit"]


async def test_wrap_is_applied_once_per_leaf(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    wrapped: list[str] = []

    def wrap(provider: LLMProvider) -> LLMProvider:
        wrapped.append(provider.spec)
        return provider

    registry = make_registry(wrap=wrap, fallback_models=["openai:b"])
    registry.chain("openrouter:a")
    registry.chain("openrouter:a")
    registry.get("openai:b")

    assert wrapped == ["openrouter:a", "openai:b"]


async def test_close_closes_every_client_once(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry()
    a = registry.get("openrouter:x")
    registry.get("openrouter:y")
    b = registry.get("anthropic:z")

    await registry.close()

    assert a._client.is_closed()  # type: ignore[attr-defined]
    assert b._client.is_closed()  # type: ignore[attr-defined]
    assert registry.get("openrouter:x") is not a, "a closed registry builds fresh providers"


def test_validate_settings_names_variables(llm_server: FakeLLMServer) -> None:
    settings = settings_for(
        llm_server,
        anthropic_api_key=None,
        default_model="anthropic:claude-opus-test",
        fallback_models=["mlx:tiny"],
    )

    problems = validate_settings(settings)

    assert any("ANTHROPIC_API_KEY" in p and "DEFAULT_MODEL" in p for p in problems)
    assert any("MLX_MODEL_PATH" in p for p in problems)
    assert validate_settings(settings_for(llm_server)) == []


def test_key_never_in_repr_or_errors(make_registry: Callable[..., ProviderRegistry]) -> None:
    registry = make_registry()
    provider = registry.get("openrouter:x", api_key=USER_KEY)

    assert USER_KEY not in repr(provider)
    assert USER_KEY not in repr(registry._providers)  # type: ignore[attr-defined]
    assert USER_KEY not in repr(registry._user_providers)  # type: ignore[attr-defined]


# --- clients on users' own keys: a bounded LRU ---------------------------------------------------


def user_key(n: int) -> str:
    return f"sk-or-user-{n:04d}"


async def wait_until(predicate: Callable[[], bool], what: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def client_of(provider: LLMProvider) -> Any:
    return provider._client  # type: ignore[attr-defined]


def test_the_default_bound_is_256() -> None:
    assert USER_KEY_LIMIT == 256


async def test_users_clients_are_bounded_least_recently_used_first(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    registry = make_registry(user_key_limit=3)
    providers = [registry.get("openrouter:m", api_key=user_key(n)) for n in range(3)]
    clients = [client_of(p) for p in providers]
    for provider in providers:
        await provider.complete([user("hi")])  # each client now holds a pooled connection
    assert llm_server.connections_opened == 3

    assert registry.get("openrouter:m", api_key=user_key(0)) is providers[0]  # used: now newest
    fourth = registry.get("openrouter:m", api_key=user_key(3))

    await wait_until(lambda: clients[1].is_closed(), "the evicted client to close")
    await wait_until(lambda: llm_server.connections_closed == 1, "its connection to close")
    assert not clients[0].is_closed()
    assert not clients[2].is_closed()
    assert registry.get("openrouter:m", api_key=user_key(0)) is providers[0]
    assert registry.get("openrouter:m", api_key=user_key(2)) is providers[2]
    assert registry.get("openrouter:m", api_key=user_key(1)) is not providers[1]
    assert len(registry._user_providers) == 3  # type: ignore[attr-defined]
    assert (await fourth.complete([user("hi")])).text


async def test_the_bound_applies_with_the_default_limit(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry()
    first = registry.get("openai:m", api_key=user_key(0))
    first_client = client_of(first)
    for n in range(1, USER_KEY_LIMIT + 1):
        registry.get("openai:m", api_key=user_key(n))

    await wait_until(first_client.is_closed, "the least recently used client to close")
    assert len(registry._user_providers) == USER_KEY_LIMIT  # type: ignore[attr-defined]


@pytest.mark.parametrize("spec", ["openrouter:slow", "anthropic:slow"])
async def test_an_evicted_client_stays_open_until_its_stream_ends(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("slow", "one two three four five six", token_delay=0.05)
    registry = make_registry(user_key_limit=1)
    mine = registry.get(spec, api_key=user_key(0))
    client = client_of(mine)
    stream = mine.stream([user("hi")])
    deltas = [(await anext(stream)).delta]  # type: ignore[call-overload]

    registry.get(spec, api_key=user_key(1))  # evicts the entry whose stream is running
    await asyncio.sleep(0.1)
    assert not client.is_closed(), "closed under a running call"
    await drain(stream, deltas)  # type: ignore[arg-type]

    assert "".join(deltas) == "one two three four five six"
    await wait_until(client.is_closed, "the evicted client to close once idle")


async def test_an_evicted_client_stays_open_until_its_call_ends(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script("slow", "late but whole", latency=0.3)
    registry = make_registry(user_key_limit=1)
    mine = registry.get("openai:slow", api_key=user_key(0))
    client = client_of(mine)
    call = asyncio.create_task(mine.complete([user("hi")]))
    await wait_until(lambda: llm_server.requests_for("slow") != [], "the request to arrive")

    registry.get("openai:slow", api_key=user_key(1))
    await asyncio.sleep(0.05)
    assert not client.is_closed(), "closed under a running call"

    assert (await call).text == "late but whole"
    await wait_until(client.is_closed, "the evicted client to close once idle")


async def test_a_provider_held_past_its_eviction_still_answers(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """A pipeline may hold its provider across many messages of other users; it must not break,
    nor leak the connection it opens again."""
    registry = make_registry(user_key_limit=1)
    held = registry.get("openrouter:m", api_key=user_key(0))
    await held.complete([user("hi")])
    old_client = client_of(held)
    registry.get("openrouter:m", api_key=user_key(1))
    await wait_until(old_client.is_closed, "the evicted client to close")

    response = await held.complete([user("again")])
    deltas: list[str] = []
    await drain(held.stream([user("and again")]), deltas)

    assert response.text == "Hello from m." == "".join(deltas)
    assert [key_sent(r) for r in llm_server.requests] == [user_key(0)] * 3
    await wait_until(
        lambda: llm_server.connections_closed == llm_server.connections_opened,
        "every connection of the evicted key to close",
    )


async def test_shared_key_providers_are_not_evicted(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry(user_key_limit=1)
    shared = [registry.get(f"openrouter:model-{n}") for n in range(3)]
    registry.get("openrouter:x", api_key=user_key(0))
    registry.get("openrouter:x", api_key=user_key(1))

    assert [registry.get(f"openrouter:model-{n}") for n in range(3)] == shared
    assert not client_of(shared[0]).is_closed()


async def test_close_closes_users_clients_too(
    make_registry: Callable[..., ProviderRegistry],
) -> None:
    registry = make_registry(user_key_limit=1)
    evicted = client_of(registry.get("openai:m", api_key=user_key(0)))
    kept = client_of(registry.get("anthropic:m", api_key=user_key(1)))

    await registry.close()

    assert evicted.is_closed()
    assert kept.is_closed()


async def test_mlx_spec_builds_the_local_provider(
    tmp_path: Path, make_registry: Callable[..., ProviderRegistry]
) -> None:
    local = pytest.importorskip("bot.llm.local")
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    by_path = make_registry().get(f"mlx:{folder}")
    by_setting = make_registry(mlx_model_path=str(folder)).get("mlx:tiny")

    assert isinstance(by_path, local.LocalProvider)
    assert Path(by_path.model_path) == folder  # type: ignore[attr-defined]
    assert Path(by_setting.model_path) == folder  # type: ignore[attr-defined]
    assert by_setting.model == "tiny"
    with pytest.raises(ModelSpecError, match="MLX_MODEL_PATH"):
        make_registry().get("mlx:tiny")
