"""The user's `local`/`online` preference as a filter over every level of the resolution: a
`local` user never gets a cloud model (not even under an admin's override), falls back on local
models only, and is served by LOCAL_MODEL at level `preference`; `online` never gets a local
model; `any` is as before. `/prefer` and `/model` refuse what cannot be kept."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import Settings
from bot.llm.specs import ModelSpecError
from bot.services.model_config import ModelConfigService
from bot.services.model_resolution import ModelResolver, UserModelChoice
from bot.services.user_settings import PreferenceRefused, UserSettingsService
from bot.storage.sqlite import SQLiteStorage
from tests.services.fakes import FakeCatalogRepo, FakeConfigRepo, FakeHistoryRepo, FakeProviders

LOCAL = "vllm:m-local"
MLX = "mlx:/models/tiny"
CLOUD = "openai:m-cloud"
OTHER_CLOUD = "anthropic:m-other"
AGENTS = ("extraction", "strategist", "coach", "tutor", "trainer", "summarizer")
HOME = {"tutor": "learn", "trainer": "train"}


def settings(**extra: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "default_model": CLOUD,
        "fallback_models": [OTHER_CLOUD, MLX, LOCAL],
        "user_models": [CLOUD, LOCAL],
        "local_model": LOCAL,
        "openai_api_key": "sk-openai",
        "anthropic_api_key": "sk-anthropic",
        "openrouter_api_key": "sk-or",
    }
    values.update(extra)
    return Settings(**values)


def resolver(cfg: Settings) -> tuple[ModelResolver, ModelConfigService, FakeProviders]:
    providers = FakeProviders()
    config = ModelConfigService.from_settings(
        cfg, FakeConfigRepo(), FakeHistoryRepo(), providers, catalog=FakeCatalogRepo()
    )
    return ModelResolver(cfg, providers, config), config, providers


LOCAL_USER = UserModelChoice(preference="local")
ONLINE_USER = UserModelChoice(preference="online")


async def test_a_local_user_gets_only_local_models_even_under_an_admins_cloud_override() -> None:
    found, config, providers = resolver(settings())
    await config.set_override("coach", "anthropic/claude-sonnet-4.5", "tg:1 (@ann)")
    await config.set_override("role:plan", OTHER_CLOUD, "tg:1 (@ann)")
    for agent in AGENTS:
        got = await found.resolve(agent, pipeline=HOME.get(agent, "support"), user=LOCAL_USER)
        assert (str(got.spec), got.level, got.set_by) == (LOCAL, "preference", "LOCAL_MODEL")
        assert got.preference == "local"
    # Its fallbacks are the local ones of FALLBACK_MODELS only, in their order.
    assert providers.fallbacks[LOCAL] == [MLX, LOCAL]
    # Everyone else still gets the override.
    anyone = await found.resolve("coach", pipeline="support")
    assert (anyone.level, anyone.model) == ("override", "openrouter:anthropic/claude-sonnet-4.5")
    assert anyone.preference == "any"
    explained = await found.explain("coach", pipeline="support", user=LOCAL_USER)
    assert "it is a cloud model, and the user's preference is local" in (explained.note or "")
    await config.close()


async def test_a_local_model_any_level_names_serves_a_local_user_at_that_level() -> None:
    found, config, _ = resolver(settings(agent_models={"tutor": MLX}, mlx_model_path="/m"))
    tutor = await found.resolve("tutor", pipeline="learn", user=LOCAL_USER)
    assert (str(tutor.spec), tutor.level) == (MLX, "agent")
    # The user's own local choice comes before LOCAL_MODEL.
    chose = UserModelChoice(choice="m-local", preference="local")
    coach = await found.resolve("coach", pipeline="support", user=chose)
    assert (str(coach.spec), coach.level) == (LOCAL, "user")
    await config.close()


async def test_an_online_user_never_gets_a_local_model_nor_a_local_fallback() -> None:
    found, config, providers = resolver(settings(agent_models={"tutor": LOCAL}))
    await config.set_override("coach", "m-local", "tg:1")
    chose_local = UserModelChoice(choice="m-local", preference="online")
    for agent, pipeline in (("coach", "support"), ("tutor", "learn")):
        got = await found.resolve(agent, pipeline=pipeline, user=chose_local)
        assert (str(got.spec), got.level) == (CLOUD, "default")
    assert providers.fallbacks[CLOUD] == [OTHER_CLOUD]
    # `any` keeps every fallback (the registry's FALLBACK_MODELS), as before.
    anyone = await found.resolve("summarizer", pipeline="support")
    assert str(anyone.spec) == CLOUD
    await config.close()


async def test_a_local_user_without_any_local_model_gets_no_model_at_all() -> None:
    found, config, _ = resolver(settings(local_model="", user_models=[CLOUD], fallback_models=[]))
    with pytest.raises(ModelSpecError, match="no local model can serve coach"):
        await found.resolve("coach", pipeline="support", user=LOCAL_USER)
    assert str((await found.resolve("coach", pipeline="support")).spec) == CLOUD
    await config.close()


async def test_without_local_model_the_catalogs_first_local_entry_serves() -> None:
    found, config, _ = resolver(settings(local_model=""))
    got = await found.resolve("coach", pipeline="support", user=LOCAL_USER)
    # The first in the catalog's order: DEFAULT_MODEL, then FALLBACK_MODELS (MLX before LOCAL).
    assert (str(got.spec), got.level, got.set_by) == (MLX, "preference", "the catalog")
    await config.close()


def test_local_model_must_be_a_local_model() -> None:
    with pytest.raises(ValueError, match="LOCAL_MODEL: openai:m-cloud is not a local model"):
        settings(local_model=CLOUD)


@pytest.fixture
def storage(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    return sqlite_storage


async def test_prefer_and_model_refuse_what_the_preference_cannot_keep(
    storage: SQLiteStorage,
) -> None:
    cfg = settings()
    found, config, providers = resolver(cfg)
    await config.snapshot()
    users = UserSettingsService(cfg, storage, providers, found)
    assert users.local_model() == LOCAL
    row = await users.set_preference(7, "local")
    assert row.model_preference == "local"
    with pytest.raises(PreferenceRefused, match="m-cloud is a cloud model"):
        await users.choose_model(7, "m-cloud")
    await users.choose_model(7, "m-local")
    await users.set_preference(7, "online")
    with pytest.raises(PreferenceRefused, match="m-local is a local model"):
        await users.choose_model(7, "m-local")
    assert (await users.load(7)).default_model == "m-local"  # unchanged by the refusal
    with pytest.raises(PreferenceRefused, match="Usage: /prefer"):
        await users.set_preference(7, "offline")
    await config.close()


async def test_local_is_refused_without_a_local_model(storage: SQLiteStorage) -> None:
    cfg = settings(local_model="", user_models=[CLOUD], fallback_models=[])
    found, config, providers = resolver(cfg)
    await config.snapshot()
    users = UserSettingsService(cfg, storage, providers, found)
    assert users.local_model() is None
    with pytest.raises(PreferenceRefused, match="no local model set up"):
        await users.set_preference(8, "local")
    assert await storage.settings.get(8) is None
    assert (await users.set_preference(8, "online")).model_preference == "online"
    await config.close()
