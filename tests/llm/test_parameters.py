"""Per-model parameters on the wire: the catalog entry's timeout, max_tokens and temperature on
every call of that model, through the real SDKs to the loopback server; a parameter the provider
does not take is left out and logged once; a fallback runs with its own."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from bot.llm.errors import ProviderTimeout
from bot.llm.parameters import ModelParams, ParameterizedProvider
from bot.llm.registry import ProviderRegistry
from bot.llm.specs import ModelSpec, parse_spec
from bot.llm.types import user
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.llm.conftest import drain

Registry = Callable[..., ProviderRegistry]


def params_for(table: dict[str, ModelParams]) -> Callable[[ModelSpec], ModelParams | None]:
    return lambda spec: table.get(str(spec))


@pytest.mark.parametrize("spec", ["openai:gpt-4o", "openrouter:x/y", "groq:llama", "xai:grok"])
async def test_the_entrys_values_win_over_the_agents_and_empty_ones_leave_them(
    llm_server: FakeLLMServer, make_registry: Registry, spec: str
) -> None:
    registry = make_registry()
    chain = registry.chain(
        spec, parameters=params_for({spec: ModelParams(max_tokens=64, temperature=0.9)})
    )
    await chain.complete([user("hi")], temperature=0.2, max_tokens=500)
    await drain(chain.stream([user("hi")], temperature=0.2))
    plain = registry.chain(spec)  # the same model without parameters: the agent's values
    await plain.complete([user("hi")], temperature=0.2, max_tokens=500)
    sent = [(r.body.get("max_tokens"), r.body.get("temperature")) for r in llm_server.requests]
    assert sent == [(64, 0.9), (64, 0.9), (500, 0.2)]
    only_tokens = registry.chain(spec, parameters=params_for({spec: ModelParams(max_tokens=7)}))
    await only_tokens.complete([user("hi")], temperature=0.3)
    last = llm_server.requests[-1].body
    assert (last["max_tokens"], last["temperature"]) == (7, 0.3)


async def test_the_entrys_timeout_bounds_each_call(
    llm_server: FakeLLMServer, make_registry: Registry
) -> None:
    llm_server.script("slow", "late", latency=0.6)
    registry = make_registry(llm_timeout=5.0)
    fast = registry.chain(
        "openai:slow", parameters=params_for({"openai:slow": ModelParams(timeout=0.2)})
    )
    with pytest.raises(ProviderTimeout):
        await fast.complete([user("hi")], timeout=5.0)
    patient = registry.chain("openai:slow")
    assert (await patient.complete([user("hi")])).text == "late"


async def test_anthropic_takes_no_temperature_so_it_is_left_out_and_logged_once(
    llm_server: FakeLLMServer, make_registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    registry = make_registry()
    spec = "anthropic:claude-x"
    with caplog.at_level(logging.WARNING, logger="bot.llm.parameters"):
        for _ in range(3):
            chain = registry.chain(
                spec,
                parameters=params_for({spec: ModelParams(max_tokens=50, temperature=0.7)}),
            )
            await chain.complete([user("hi")], temperature=0.1)
    bodies = [r.body for r in llm_server.requests]
    assert [b["max_tokens"] for b in bodies] == [50, 50, 50]
    assert all("temperature" not in b for b in bodies)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "anthropic:claude-x takes no temperature: the catalog's temperature for it is not sent"
    ]


async def test_a_fallback_runs_with_its_own_parameters_not_the_chosen_models(
    llm_server: FakeLLMServer, make_registry: Registry
) -> None:
    llm_server.script("primary", fault=Fault.SERVER_ERROR)
    registry = make_registry(fallback_models=["openai:backup"])
    table = {
        "openai:primary": ModelParams(max_tokens=11),
        "openai:backup": ModelParams(max_tokens=22, temperature=0.0),
    }
    response = await registry.chain("openai:primary", parameters=params_for(table)).complete(
        [user("hi")], temperature=0.5, max_tokens=300
    )
    assert response.model == "backup"
    sent = [
        (r.model, r.body.get("max_tokens"), r.body.get("temperature")) for r in llm_server.requests
    ]
    assert sent == [("primary", 11, 0.5), ("backup", 22, 0.0)]


async def test_wrappers_are_kept_per_leaf_and_parameters_and_share_the_models_health(
    make_registry: Registry,
) -> None:
    registry = make_registry()
    spec = parse_spec("openai:m")
    one = registry.chain(spec, parameters=params_for({"openai:m": ModelParams(max_tokens=1)}))
    again = registry.chain(spec, parameters=params_for({"openai:m": ModelParams(max_tokens=1)}))
    other = registry.chain(spec, parameters=params_for({"openai:m": ModelParams(max_tokens=2)}))
    leaf = registry.get(spec)
    assert isinstance(one, ParameterizedProvider)
    assert one is again
    assert isinstance(other, ParameterizedProvider)
    assert other is not one
    assert one.inner is other.inner is leaf
    assert registry.chain(spec) is leaf  # no parameters: no wrapper
    for _ in range(3):
        registry.health.failed(one, ProviderTimeout("no answer"))
    # Two entries of one model, or an edit of its parameters, share its breaker.
    assert registry.health.is_open(other)
    assert registry.health.is_open(leaf)
