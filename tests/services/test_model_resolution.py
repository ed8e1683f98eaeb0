"""Resolution order: override -> pipeline -> role -> user -> AGENT_MODELS -> PIPELINE_MODELS ->
the admin's default -> DEFAULT_MODEL, over every combination of the levels, plus what each
resolution says about itself (level, who set it, alias, configuration version)."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from bot.config import Settings
from bot.llm.parameters import ModelParams
from bot.llm.registry import ProviderRegistry
from bot.llm.specs import ModelSpec, parse_spec
from bot.services.model_config import ModelConfigService
from bot.services.model_levels import ConfigSnapshot, LevelQuery, Pick, standard_levels
from bot.services.model_resolution import ModelResolver, UserModelChoice
from bot.storage.models import ModelCatalogRow
from tests.services.fakes import FakeCatalogRepo, FakeConfigRepo, FakeHistoryRepo, FakeProviders

# One model per level, each written the way that level is most often given.
OVERRIDE = "ov"  # a catalog alias (stored entry openai:m-override)
PIPELINE = "groq:m-pipeline"  # a provider:model spec
ROLE = "vendor/m-role"  # a bare OpenRouter id
USER = "openai:m-user"  # offered to users by USER_MODELS
AGENT = "anthropic:m-agent"  # AGENT_MODELS
PIPELINE_DEFAULT = "groq:m-pdefault"  # PIPELINE_MODELS
ADMIN_DEFAULT = "xai:m-admin-default"  # /setmodel default
DEFAULT = "openai:m-default"  # DEFAULT_MODEL
USER_KEY = "sk-user-own-key"

LEVELS = ("override", "pipeline", "role", "user", "agent", "pipeline-default", "admin-default")
# What each level resolves to: (spec, level name, set by, target).
EXPECTED = {
    "override": ("openai:m-override", "override", "tg:1", "strategist"),
    "pipeline": (PIPELINE, "pipeline", "tg:2", "pipeline:support"),
    "role": (f"openrouter:{ROLE}", "role", "tg:3", "role:plan"),
    "user": (USER, "user", "the user", "user"),
    "agent": (AGENT, "agent", "AGENT_MODELS", "AGENT_MODELS[strategist]"),
    "pipeline-default": (
        PIPELINE_DEFAULT,
        "pipeline-default",
        "PIPELINE_MODELS",
        "PIPELINE_MODELS[support]",
    ),
    "admin-default": (ADMIN_DEFAULT, "default", "tg:4", "default"),
    "DEFAULT_MODEL": (DEFAULT, "default", "DEFAULT_MODEL", "DEFAULT_MODEL"),
}

ALIASES = {
    "override": "ov",
    "user": "m-user",
    "agent": "m-agent",
    "pipeline-default": "m-pdefault",
    "DEFAULT_MODEL": "m-default",
}


def settings(*, agent: bool = False, pipeline_default: bool = False, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "default_model": DEFAULT,
        "user_models": [USER, DEFAULT],
        "agent_models": {"strategist": AGENT} if agent else {},
        "pipeline_models": {"support": PIPELINE_DEFAULT} if pipeline_default else {},
        "openrouter_api_key": "sk-or-shared",
        "openai_api_key": "sk-openai-shared",
        "anthropic_api_key": "sk-anthropic-shared",
        "groq_api_key": "sk-groq-shared",
        "xai_api_key": "sk-xai-shared",
    }
    values.update(extra)
    return Settings(**values)


@dataclass
class World:
    settings: Settings
    repo: FakeConfigRepo
    catalog: FakeCatalogRepo
    history: FakeHistoryRepo
    providers: FakeProviders
    config: ModelConfigService
    resolver: ModelResolver


def world(cfg: Settings, providers: Any = None) -> World:
    repo, catalog, history = FakeConfigRepo(), FakeCatalogRepo(), FakeHistoryRepo()
    catalog.rows["ov"] = ModelCatalogRow(alias="ov", spec="openai:m-override", display_name="Ov")
    providers = providers if providers is not None else FakeProviders()
    config = ModelConfigService.from_settings(cfg, repo, history, providers, catalog=catalog)
    return World(
        cfg, repo, catalog, history, providers, config, ModelResolver(cfg, providers, config)
    )


async def assign(w: World, target: str, model: str, by: str) -> None:
    await w.config.set_override(target, model, by)


CASES = list(itertools.product([False, True], repeat=len(LEVELS)))


@pytest.mark.parametrize(
    "enabled",
    CASES,
    ids=["|".join(n if on else "-" for n, on in zip(LEVELS, case, strict=True)) for case in CASES],
)
async def test_the_most_specific_level_that_is_set_wins(enabled: tuple[bool, ...]) -> None:
    on = dict(zip(LEVELS, enabled, strict=True))
    w = world(settings(agent=on["agent"], pipeline_default=on["pipeline-default"]))
    if on["override"]:
        await assign(w, "strategist", OVERRIDE, "tg:1")
    if on["pipeline"]:
        await assign(w, "pipeline:support", PIPELINE, "tg:2")
    if on["role"]:
        await assign(w, "role:plan", ROLE, "tg:3")
    if on["admin-default"]:
        await assign(w, "default", ADMIN_DEFAULT, "tg:4")
    user = UserModelChoice(parse_spec(USER)) if on["user"] else None

    found = await w.resolver.resolve("strategist", pipeline="support", user=user)

    winner = next((name for name in LEVELS if on[name]), "DEFAULT_MODEL")
    spec, level, set_by, target = EXPECTED[winner]
    assert (found.model, found.level, found.set_by, found.target) == (spec, level, set_by, target)
    assert found.provider.spec == spec
    assert found.config_version == w.config.version == len(w.history.changes)
    # A catalog alias when the model is an entry (the environment's specs are entries too); a
    # spec or OpenRouter id that no entry has runs without one.
    assert found.alias == ALIASES.get(winner)
    assert (found.display_name == "Ov") is (winner == "override")
    # /models says the same as the message path.
    explained = await w.resolver.explain("strategist", pipeline="support", user=user)
    assert (explained.resolution.model, explained.resolution.level) == (spec, level)
    # The coach (role chat) is reached by neither the strategist's override nor role:plan, nor
    # by AGENT_MODELS[strategist]; the pipeline, the user and the defaults reach it too.
    coach_on = {**on, "override": False, "role": False, "agent": False}
    coach_winner = next((name for name in LEVELS if coach_on[name]), "DEFAULT_MODEL")
    coach = await w.resolver.resolve("coach", pipeline="support", user=user)
    assert (coach.model, coach.level) == EXPECTED[coach_winner][:2]
    # The tutor, in another pipeline, is reached by none of the support pipeline's levels.
    tutor_on = {**coach_on, "pipeline": False, "pipeline-default": False}
    tutor_winner = next((name for name in LEVELS if tutor_on[name]), "DEFAULT_MODEL")
    tutor = await w.resolver.resolve("tutor", pipeline="learn", user=user)
    assert (tutor.model, tutor.level) == EXPECTED[tutor_winner][:2]
    await w.config.close()


USER_CASES: dict[str, tuple[UserModelChoice | None, str | None, str]] = {
    # name: (choice, the key its calls carry, the level)
    "no user choice": (None, None, "default"),
    "user model, no key": (UserModelChoice(parse_spec(USER)), None, "user"),
    "user alias, no key": (UserModelChoice(choice="m-user"), None, "user"),
    "user model + own key for it": (
        UserModelChoice(parse_spec(USER), "openai", SecretStr(USER_KEY)),
        USER_KEY,
        "user",
    ),
    "user alias + own key for it": (
        UserModelChoice(None, "openai", SecretStr(USER_KEY), choice="m-user"),
        USER_KEY,
        "user",
    ),
    "user model + own key for another provider": (
        UserModelChoice(parse_spec(USER), "anthropic", SecretStr(USER_KEY)),
        None,
        "user",
    ),
    "own key only, no model": (
        UserModelChoice(None, "openai", SecretStr(USER_KEY)),
        None,
        "default",
    ),
    "a model no longer offered": (UserModelChoice(parse_spec("openai:m-gone")), None, "default"),
}


@pytest.mark.parametrize("case", list(USER_CASES))
async def test_the_users_choice_and_their_own_key(case: str) -> None:
    w = world(settings())
    user, key, level = USER_CASES[case]
    found = await w.resolver.resolve("coach", pipeline="support", user=user)
    assert found.level == level
    assert found.model == (USER if level == "user" else DEFAULT)
    assert found.provider.api_key == key  # type: ignore[attr-defined]
    # An admin's role assignment is above the user's choice.
    await assign(w, "role:chat", PIPELINE, "tg:9")
    assert (await w.resolver.resolve("coach", pipeline="support", user=user)).level == "role"
    await w.config.close()


async def test_a_users_own_key_is_used_for_that_user_only() -> None:
    w = world(settings())
    alice = UserModelChoice(parse_spec(USER), "openai", SecretStr(USER_KEY))
    bob = UserModelChoice(parse_spec(USER))
    a = await w.resolver.resolve("coach", pipeline="support", user=alice)
    b = await w.resolver.resolve("coach", pipeline="support", user=bob)
    anyone = await w.resolver.resolve("coach", pipeline="support")
    assert a.provider.api_key == USER_KEY  # type: ignore[attr-defined]
    assert b.provider.api_key is None  # type: ignore[attr-defined]
    assert anyone.provider.api_key is None  # type: ignore[attr-defined]
    assert a.provider is not b.provider
    assert USER_KEY not in repr(alice)
    await w.config.close()


async def test_a_change_applies_on_the_next_message_without_waiting_for_the_ttl() -> None:
    w = world(settings())
    assert (await w.resolver.resolve("coach", pipeline="learn")).level == "default"
    await assign(w, "role:chat", "ov", "tg:1")
    found = await w.resolver.resolve("tutor", pipeline="learn")
    assert (found.level, found.alias, found.target) == ("role", "ov", "role:chat")
    await w.config.reset_override("role:chat", "tg:1")
    assert (await w.resolver.resolve("tutor", pipeline="learn")).level == "default"
    await w.config.close()


async def test_messages_read_the_configuration_from_memory() -> None:
    w = world(settings(agent=True))
    await assign(w, "pipeline:support", PIPELINE, "tg:1")
    reads = w.repo.reads
    for _ in range(200):
        for agent in ("extraction", "strategist", "coach", "summarizer"):
            await w.resolver.resolve(agent, pipeline="support")
    assert w.repo.reads - reads <= 1  # the one refresh after the write, then none
    await w.config.close()


async def test_static_levels_are_worked_out_once_per_snapshot_not_per_message() -> None:
    calls: list[str] = []

    @dataclass(frozen=True)
    class Counting:
        inner: Any

        @property
        def name(self) -> str:
            return str(self.inner.name)

        @property
        def per_user(self) -> bool:
            return bool(self.inner.per_user)

        def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
            calls.append(self.inner.name)
            return self.inner.pick(query, snapshot)  # type: ignore[no-any-return]

    cfg = settings()
    w = world(cfg)
    resolver = ModelResolver(
        cfg, w.providers, w.config, levels=[Counting(level) for level in standard_levels(cfg)]
    )
    user = UserModelChoice(parse_spec(USER))
    for _ in range(50):
        await resolver.resolve("coach", pipeline="support", user=user)
        await resolver.resolve("coach", pipeline="support")
    # The admin levels and the defaults were asked once; only the user's choice per message,
    # and only for the messages of a user who has settings.
    assert calls.count("override") == 1
    assert calls.count("default") == 2  # the admin's default, then DEFAULT_MODEL
    assert calls.count("user") == 50
    await w.config.close()


async def test_a_new_level_plugs_in_as_data_before_the_others() -> None:
    @dataclass(frozen=True)
    class TrialArm:
        """A stand-in for a trial: users with an even id get the trial model for the coach."""

        name: str = "trial"
        per_user: bool = True

        def pick(self, query: LevelQuery, snapshot: ConfigSnapshot) -> Pick | None:
            user = query.user
            if query.agent != "coach" or user is None or user.choice != "even":
                return None
            return Pick(self.name, PIPELINE, "trial 7", "trial:7")

    cfg = settings()
    w = world(cfg)
    await assign(w, "coach", "ov", "tg:1")
    resolver = ModelResolver(cfg, w.providers, w.config, levels=(TrialArm(), *standard_levels(cfg)))
    arm = await resolver.resolve("coach", pipeline="support", user=UserModelChoice(choice="even"))
    assert (arm.level, arm.model, arm.set_by) == ("trial", PIPELINE, "trial 7")
    other = await resolver.resolve("coach", pipeline="support", user=UserModelChoice(choice="odd"))
    assert (other.level, other.alias) == ("override", "ov")
    await w.config.close()


async def test_the_console_pin_wins_over_every_level() -> None:
    w = world(settings(agent=True))
    await assign(w, "strategist", "ov", "tg:1")
    pinned = w.resolver.pinned(PIPELINE, "console --model")
    for agent in ("strategist", "coach", "summarizer"):
        found = await pinned.resolve(agent, pipeline="support")
        assert (found.level, found.model, found.set_by) == ("session", PIPELINE, "console --model")
    # The resolver it came from is unchanged.
    assert (await w.resolver.resolve("strategist", pipeline="support")).level == "override"
    await w.config.close()


async def test_catalog_parameters_reach_the_chain_and_an_edit_makes_a_new_one() -> None:
    w = world(settings())
    w.catalog.rows["ov"] = ModelCatalogRow(
        alias="ov", spec="openai:m-override", max_tokens=321, temperature=0.4
    )
    w.config.invalidate()
    await assign(w, "coach", "ov", "tg:1")
    found = await w.resolver.resolve("coach", pipeline="support")
    assert found.params == ModelParams(max_tokens=321, temperature=0.4)
    assert w.providers.parameters["openai:m-override"] == ModelParams(
        max_tokens=321, temperature=0.4
    )
    again = await w.resolver.resolve("coach", pipeline="support")
    assert again.provider is found.provider  # one chain per (spec, parameters)
    entry = w.config.peek().catalog.get("ov")
    assert entry is not None
    from dataclasses import replace

    await w.config.save_entry(
        replace(entry, params=ModelParams(max_tokens=99)), "tg:1", previous=entry
    )
    edited = await w.resolver.resolve("coach", pipeline="support")
    assert edited.params == ModelParams(max_tokens=99)
    assert edited.provider is not found.provider
    assert edited.config_version > found.config_version
    await w.config.close()


async def test_a_level_that_cannot_be_served_is_passed_over_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The real registry: no Groq key, so `groq:` assignments cannot run.
    cfg = settings(agent=True, groq_api_key=None)
    registry = ProviderRegistry(cfg)
    w = world(cfg, registry)
    try:
        await assign(w, "strategist", "groq:m-x", "tg:1")
        await assign(w, "role:plan", "no-such-alias", "tg:1")
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                found = await w.resolver.resolve("strategist", pipeline="support")
        assert (found.model, found.level) == (AGENT, "agent")
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("GROQ_API_KEY" in m for m in warnings) == 1  # once, not per message
        assert sum("no-such-alias" in m for m in warnings) == 1
        explained = await w.resolver.explain("strategist", pipeline="support")
        assert explained.resolution.level == "agent"
        assert explained.note is not None
        assert "override strategist groq:m-x cannot be used: GROQ_API_KEY is not set" in (
            explained.note
        )
        assert "unknown alias 'no-such-alias'" in explained.note
    finally:
        await w.config.close()
        await registry.close()


async def test_explain_agrees_with_resolve_when_the_users_choice_cannot_be_served() -> None:
    cfg = settings(agent=True, xai_api_key=None, user_models=[USER, "xai:grok-4"])
    registry = ProviderRegistry(cfg)
    resolver = ModelResolver(cfg, registry)
    user = UserModelChoice(parse_spec("xai:grok-4"))
    try:
        resolved = await resolver.resolve("strategist", pipeline="support", user=user)
        explained = await resolver.explain("strategist", pipeline="support", user=user)
        assert (resolved.model, resolved.level) == (AGENT, "agent")
        assert explained.resolution.model == resolved.model
        assert explained.note is not None
        assert "your model xai:grok-4 cannot be used: XAI_API_KEY is not set" in explained.note
        # With their own xAI key it runs on their key.
        own = UserModelChoice(ModelSpec("xai", "grok-4"), "xai", SecretStr("xai-user-key"))
        mine = await resolver.resolve("coach", pipeline="support", user=own)
        assert (mine.model, mine.level, mine.provider.spec) == ("xai:grok-4", "user", "xai:grok-4")
    finally:
        await registry.close()


async def test_configured_chains_are_built_once() -> None:
    providers = FakeProviders()
    resolver = ModelResolver(settings(), providers)
    first: Any = await resolver.resolve("coach", pipeline="support")
    second: Any = await resolver.resolve("tutor", pipeline="learn")
    assert first.provider is second.provider
    assert providers.built == [(DEFAULT, None)]


async def test_users_with_the_same_choice_share_its_resolution_until_the_next_change() -> None:
    w = world(settings())
    ann = await w.resolver.resolve(
        "coach", pipeline="support", user=UserModelChoice(choice="m-user")
    )
    bob = await w.resolver.resolve(
        "coach", pipeline="support", user=UserModelChoice(choice="m-user")
    )
    assert ann is bob  # worked out once, not per message
    own = UserModelChoice(None, "openai", SecretStr(USER_KEY), choice="m-user")
    mine = await w.resolver.resolve("coach", pipeline="support", user=own)
    assert mine.provider.api_key == USER_KEY  # type: ignore[attr-defined]
    assert (
        await w.resolver.resolve("coach", pipeline="support", user=bob_choice())
    ).provider.api_key is None  # type: ignore[attr-defined]
    # Taken off the users' menu: the next message of either is back on the defaults.
    entry = w.config.peek().catalog.get("m-user")
    assert entry is not None
    from dataclasses import replace

    await w.config.save_entry(replace(entry, offered=False), "tg:1", previous=entry)
    after = await w.resolver.resolve("coach", pipeline="support", user=bob_choice())
    assert (after.level, after.model) == ("default", DEFAULT)
    await w.config.close()


def bob_choice() -> UserModelChoice:
    return UserModelChoice(choice="m-user")
