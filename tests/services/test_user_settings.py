"""UserSettingsService over the real SQLite storage: what `/model` and `/key` change, and that one
never overwrites the other, even while a key is being tested over the network."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bot.config import Settings
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.specs import ModelSpec
from bot.llm.types import ChatMessage
from bot.services.model_resolution import ModelResolver
from bot.services.user_settings import UserSettingsService
from bot.storage.crypto import KeyCipher
from bot.storage.sqlite import SQLiteStorage

SECRET = "a-long-random-bot-secret-for-tests"
USER = 4242
OWN_KEY = "sk-users-own-openai-key-0123456789"


class KeyTestingProviders:
    """A ChainSource whose providers answer "OK"; `during_test` runs inside the key's test call."""

    def __init__(self) -> None:
        self.during_test: list[object] = []
        self.built: list[tuple[str, str | None]] = []
        self.service: UserSettingsService | None = None

    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
    ) -> FunctionProvider:
        self.built.append((str(primary), api_key))

        async def reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
            if api_key == OWN_KEY and self.service is not None:
                # Meanwhile, in another update, the same user picks a model on /model.
                self.during_test.append(await self.service.choose_model(USER, "openai:gpt-4.1"))
            return "OK"

        return FunctionProvider(reply, provider=primary.provider, model=primary.model)


@pytest.fixture
def storage(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    return sqlite_storage


def _service(storage: SQLiteStorage, providers: KeyTestingProviders) -> UserSettingsService:
    settings = Settings(
        _env_file=None,
        default_model="openai:gpt-4o-mini",
        user_models=["openai:gpt-4o-mini", "openai:gpt-4.1"],
        openai_api_key="sk-shared",
        bot_secret_key=SECRET,
    )
    service = UserSettingsService(settings, storage, providers, ModelResolver(settings, providers))
    providers.service = service
    return service


async def test_a_model_chosen_while_the_key_is_tested_is_kept(storage: SQLiteStorage) -> None:
    providers = KeyTestingProviders()
    users = _service(storage, providers)
    await users.choose_model(USER, "openai:gpt-4o-mini")

    outcome = await users.set_key(USER, "openai", OWN_KEY)

    assert outcome.status == "saved"
    assert len(providers.during_test) == 1  # the /model change did happen mid-test
    row = await storage.settings.get(USER)
    assert row is not None
    assert row.default_model == "openai:gpt-4.1"
    assert row.api_key_provider == "openai"
    assert row.api_key_encrypted is not None
    assert KeyCipher(SECRET).decrypt(row.api_key_encrypted) == OWN_KEY
    # The outcome describes the settings as stored, with the newer model.
    assert outcome.user_model == "openai:gpt-4.1"
    assert outcome.agents  # the key pays for the agents that now run on the user's model


async def test_choosing_a_model_or_forgetting_the_key_touches_only_that(
    storage: SQLiteStorage,
) -> None:
    users = _service(storage, KeyTestingProviders())
    await storage.settings.set_api_key(USER, "openai", KeyCipher(SECRET).encrypt(OWN_KEY))
    row = await users.choose_model(USER, "openai:gpt-4o-mini")
    assert (row.default_model, row.api_key_provider) == ("openai:gpt-4o-mini", "openai")
    assert await users.forget_key(USER) is True
    row = await users.load(USER)
    assert (row.default_model, row.api_key_provider, row.api_key_encrypted) == (
        "openai:gpt-4o-mini",
        None,
        None,
    )
    assert await users.forget_key(USER) is False
