"""Resolution order: override -> user -> agent -> pipeline -> default, over every combination."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.llm.registry import ProviderRegistry
from bot.llm.specs import ModelSpec, parse_spec
from bot.services.model_config import ModelConfigService
from bot.services.model_resolution import ModelResolver, UserModelChoice
from tests.services.fakes import FakeConfigRepo, FakeProviders

OVERRIDE = "anthropic/claude-sonnet-4.5"
AGENT = "anthropic:claude-haiku"
PIPELINE = "groq:llama-3.3-70b"
DEFAULT = "openai:gpt-4o-mini"
USER = "openai:gpt-4.1"
USER_KEY = "sk-user-own-key"

USER_CASES: dict[str, UserModelChoice | None] = {
    "no user choice": None,
    "user model, no key": UserModelChoice(parse_spec(USER)),
    "user model + own key for it": UserModelChoice(parse_spec(USER), "openai", SecretStr(USER_KEY)),
    "user model + own key for another provider": UserModelChoice(
        parse_spec(USER), "anthropic", SecretStr(USER_KEY)
    ),
    "own key only, no model": UserModelChoice(None, "openai", SecretStr(USER_KEY)),
}


def settings(*, agent: bool, pipeline: bool, openrouter: bool = True) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_model=DEFAULT,
        agent_models={"strategist": AGENT} if agent else {},
        pipeline_models={"support": PIPELINE} if pipeline else {},
        openrouter_api_key="sk-or-shared" if openrouter else None,
        openai_api_key="sk-openai-shared",
        anthropic_api_key="sk-anthropic-shared",
        groq_api_key="sk-groq-shared",
    )


def expected(
    override: bool, user: UserModelChoice | None, agent: bool, pipeline: bool
) -> tuple[str, str, str | None]:
    if override:
        return f"openrouter:{OVERRIDE}", "override", None
    if user is not None and user.spec is not None:
        key = USER_KEY if user.key_provider == "openai" else None
        return USER, "user", key
    if agent:
        return AGENT, "agent", None
    if pipeline:
        return PIPELINE, "pipeline", None
    return DEFAULT, "default", None


CASES = list(itertools.product([False, True], USER_CASES, [False, True], [False, True]))


@pytest.mark.parametrize(
    ("override", "user_case", "agent", "pipeline"),
    CASES,
    ids=[
        f"{'override' if o else '-'}|{u}|{'agent' if a else '-'}|{'pipeline' if p else '-'}"
        for o, u, a, p in CASES
    ],
)
async def test_most_specific_level_wins(
    override: bool, user_case: str, agent: bool, pipeline: bool
) -> None:
    repo = FakeConfigRepo()
    if override:
        repo.put("strategist", OVERRIDE)
    providers = FakeProviders()
    config = ModelConfigService(repo, providers=providers)
    resolver = ModelResolver(settings(agent=agent, pipeline=pipeline), providers, config)
    user = USER_CASES[user_case]

    resolution = await resolver.resolve("strategist", pipeline="support", user=user)

    model, source, key = expected(override, user, agent, pipeline)
    assert (resolution.model, resolution.source) == (model, source)
    assert resolution.provider.spec == model
    assert resolution.provider.api_key == key  # type: ignore[attr-defined]
    # Another agent is never affected by the strategist's override or agent model.
    other = await resolver.resolve("coach", pipeline="support", user=user)
    other_model, other_source, _ = expected(False, user, False, pipeline)
    assert (other.model, other.source) == (other_model, other_source)
    await config.close()


async def test_the_pipeline_level_applies_to_its_own_pipeline_only() -> None:
    resolver = ModelResolver(settings(agent=False, pipeline=True), FakeProviders())
    assert (await resolver.resolve("tutor", pipeline="learn")).model == DEFAULT
    assert (await resolver.resolve("coach", pipeline="support")).model == PIPELINE


async def test_overrides_without_the_shared_openrouter_key_fall_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = FakeConfigRepo()
    repo.put("strategist", OVERRIDE)
    cfg = settings(agent=True, pipeline=False, openrouter=False)
    providers = FakeProviders()
    config = ModelConfigService.from_settings(cfg, repo, None, providers)
    resolver = ModelResolver(cfg, providers, config)
    with caplog.at_level(logging.WARNING):
        first = await resolver.resolve("strategist", pipeline="support")
        await resolver.resolve("strategist", pipeline="support")
    assert (first.model, first.source) == (AGENT, "agent")
    assert sum("OPENROUTER_API_KEY" in r.getMessage() for r in caplog.records) == 1
    model, source, note = await resolver.explain("strategist", pipeline="support")
    assert (model, source) == (AGENT, "agent")
    assert note is not None
    assert "ignored" in note
    await config.close()


async def test_a_users_own_key_is_used_for_that_user_only() -> None:
    cfg = settings(agent=False, pipeline=False)
    providers = FakeProviders()
    resolver = ModelResolver(cfg, providers)
    alice = UserModelChoice(parse_spec(USER), "openai", SecretStr(USER_KEY))
    bob = UserModelChoice(parse_spec(USER))

    a = await resolver.resolve("coach", pipeline="support", user=alice)
    b = await resolver.resolve("coach", pipeline="support", user=bob)
    anyone = await resolver.resolve("coach", pipeline="support")

    assert a.provider.api_key == USER_KEY  # type: ignore[attr-defined]
    assert b.provider.api_key is None  # type: ignore[attr-defined]
    assert anyone.provider.api_key is None  # type: ignore[attr-defined]
    assert a.provider is not b.provider
    assert USER_KEY not in repr(alice)


async def test_user_choice_that_cannot_be_served_falls_back_to_configuration() -> None:
    # Real registry: xAI has no shared key and the user brought none, so their choice can't run.
    cfg = settings(agent=False, pipeline=False)
    registry = ProviderRegistry(cfg)
    resolver = ModelResolver(cfg, registry)
    user = UserModelChoice(ModelSpec("xai", "grok-4"))
    resolution = await resolver.resolve("coach", pipeline="support", user=user)
    assert (resolution.model, resolution.source) == (DEFAULT, "default")
    # With their own xAI key it runs on their key.
    own = UserModelChoice(ModelSpec("xai", "grok-4"), "xai", SecretStr("xai-user-key"))
    mine = await resolver.resolve("coach", pipeline="support", user=own)
    assert (mine.model, mine.source, mine.provider.spec) == ("xai:grok-4", "user", "xai:grok-4")
    await registry.close()


async def test_configured_chains_are_built_once() -> None:
    providers = FakeProviders()
    resolver = ModelResolver(settings(agent=False, pipeline=False), providers)
    first: Any = await resolver.resolve("coach", pipeline="support")
    second: Any = await resolver.resolve("tutor", pipeline="learn")
    assert first.provider is second.provider
    assert providers.built == [(DEFAULT, None)]


async def test_explain_agrees_with_resolve_when_the_users_choice_cannot_be_served() -> None:
    # The user picked a provider the bot has no key for, and gave no key of their own.
    cfg = settings(agent=True, pipeline=False)
    registry = ProviderRegistry(cfg)
    resolver = ModelResolver(cfg, registry)
    user = UserModelChoice(parse_spec("xai:grok-4"))
    try:
        resolved = await resolver.resolve("strategist", pipeline="support", user=user)
        model, source, note = await resolver.explain("strategist", pipeline="support", user=user)
        assert (resolved.model, resolved.source) == (AGENT, "agent")
        assert (model, source) == (resolved.model, resolved.source)
        assert note is not None
        assert "xai:grok-4" in note
        assert "XAI_API_KEY" in note

        # A choice that can be served is reported as the user's, like resolve does.
        served = UserModelChoice(parse_spec(USER))
        resolved = await resolver.resolve("coach", pipeline="support", user=served)
        explained = await resolver.explain("coach", pipeline="support", user=served)
        assert (resolved.model, resolved.source) == (USER, "user")
        assert explained == (USER, "user", None)
    finally:
        await registry.close()
