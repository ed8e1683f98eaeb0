"""What a user may change for themselves: their default model, their own API key, their memory.

    users = UserSettingsService.from_services(services)
    await users.offered()                          # the catalog entries `/model` offers
    await users.choose_model(42, "fast")           # an offered alias; None: the bot's defaults
    await users.set_preference(42, "local")        # refused (PreferenceRefused) without one
    outcome = await users.set_key(42, "openai", "sk-...")
    forgotten = await users.forget_chat(42, user_id=42)   # history, summary, and their facts
    erased = await users.erase_user(42)                    # everything (`/deleteme`)

`set_key` makes one tiny call with the key before keeping it (a key that does not work would
only fail every later message), stores it encrypted with BOT_SECRET_KEY, and says which agents
it will pay for: those whose model resolves to the user's own choice on that provider. The key
is taught to the log and trace scrubbers before it is ever sent; no outcome carries it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import SecretStr

from bot.config import AGENT_NAMES, Settings
from bot.llm.errors import LLMError, RequestRejected
from bot.llm.protocol import LLMProvider
from bot.llm.specs import PROVIDERS, ModelSpec, ModelSpecError, parse_spec
from bot.llm.types import user
from bot.observability.logs import register_secret
from bot.pipeline.pipelines import AGENT_HOME_PIPELINE
from bot.services.model_catalog import CatalogEntry, Picked
from bot.services.model_levels import allows, local_model_of
from bot.services.model_resolution import ModelResolver, UserModelChoice
from bot.storage.models import ModelPreference, UserSettings
from bot.storage.repositories import Storage

if TYPE_CHECKING:
    from bot.app import Services

log = logging.getLogger(__name__)

# A cheap model per provider, to test a key when the bot has no model of that provider configured.
TEST_MODELS: dict[str, str] = {
    "openrouter": "openai/gpt-4o-mini",
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "groq": "llama-3.1-8b-instant",
    "xai": "grok-3-mini",
}
KEY_TEST_TIMEOUT = 20.0

KeyStatus = Literal["saved", "bad_provider", "disabled", "refused", "untested"]

PREFERENCES: tuple[ModelPreference, ...] = ("any", "local", "online")
PREFER_USAGE = (
    "Usage: /prefer local|online|any\n"
    "local: only models on this bot's own machines serve you (nothing of yours goes to a cloud "
    "model); online: never a local model; any: whatever the admins set."
)
NO_LOCAL_MODEL = (
    "This bot has no local model set up (its operator would set LOCAL_MODEL), so I can't keep "
    "your messages on its own machines. Your preference is unchanged."
)


class PreferenceRefused(ValueError):
    """A preference or a model the user cannot have; `str()` says why, for the user."""


class ChainSource(Protocol):
    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
    ) -> LLMProvider: ...


class PendingInputs(Protocol):
    async def forget_chat(self, chat_id: int) -> None: ...

    async def forget_user(self, user_id: int) -> None: ...


@dataclass(frozen=True, slots=True)
class KeyOutcome:
    status: KeyStatus
    provider: str
    tested_model: str | None = None
    # Agents whose calls this key pays for now (their model is the user's, on this provider).
    agents: list[str] = field(default_factory=list)
    # The user's current model, if any (to explain why the key pays for nothing yet).
    user_model: str | None = None


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What `/forget` cleared: the chat's messages (and its summary), the user's facts."""

    messages: int
    facts: int
    private: bool


@dataclass(frozen=True, slots=True)
class Erased:
    """What `/deleteme` erased: rows by kind (`ERASED_KINDS`) and the archives."""

    counts: dict[str, int]
    archives: int


def key_providers() -> list[str]:
    return [name for name, info in PROVIDERS.items() if info.needs_key]


class UserSettingsService:
    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        providers: ChainSource,
        resolver: ModelResolver,
        *,
        learn_secret: Callable[[str], None] | None = None,
        replay_inputs: PendingInputs | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.providers = providers
        self.resolver = resolver
        self._learn_secret = learn_secret
        # Replay inputs not written yet (`bot.replay.ReplayKeeper`): forgotten with the rest.
        self.replay_inputs = replay_inputs

    @classmethod
    def from_services(cls, services: Services) -> UserSettingsService:
        add_secret = getattr(services.observer, "add_secret", None)
        return cls(
            services.settings,
            services.storage,
            services.providers,
            services.resolver,
            learn_secret=add_secret if callable(add_secret) else None,
            replay_inputs=services.replay_keeper,
        )

    # --- model ---

    def allowed_models(self) -> list[str]:
        """The specs `/model` offers (the catalog's entries for users, as held in memory)."""
        seen: list[str] = []
        for entry in self.resolver.catalog().offered():
            if str(entry.spec) not in seen:
                seen.append(str(entry.spec))
        return seen

    async def offered(self) -> list[CatalogEntry]:
        """The catalog entries users may pick with `/model` (USER_MODELS, or DEFAULT_MODEL and
        FALLBACK_MODELS when it is empty, as an admin changed them with `/catalog edit`)."""
        return (await self.resolver.current_catalog()).offered()

    async def bot_default(self) -> str:
        """What writes a user's chat replies when they choose nothing (e.g. `gpt-4o-mini
        (openai:gpt-4o-mini)`): the levels without a user's choice, for the coach."""
        explained = await self.resolver.explain("coach", pipeline=AGENT_HOME_PIPELINE["coach"])
        return explained.resolution.label

    def picked(self, choice: str | None) -> Picked | None:
        """What a stored choice (an alias, or a spec from an older bot) names; None when it
        names nothing the catalog knows."""
        if not choice:
            return None
        try:
            return self.resolver.interpret(choice)
        except ValueError:
            return None

    def entry_of(self, choice: str | None) -> CatalogEntry | None:
        picked = self.picked(choice)
        return picked.entry if picked is not None else None

    def spec_of(self, choice: str | None) -> ModelSpec | None:
        picked = self.picked(choice)
        return picked.spec if picked is not None else None

    # --- local / online ---

    def local_model(self) -> str | None:
        """What serves `local` users where the levels name cloud models (its label), or None
        when no local model is configured (then `local` is refused)."""
        catalog = self.resolver.catalog()
        found = local_model_of(self.settings.local_model, catalog)
        if found is None:
            return None
        picked = catalog.interpret(found[0])
        return picked.entry.label if picked.entry is not None else str(picked.spec)

    async def set_preference(self, user_id: int, preference: str) -> UserSettings:
        """Save `/prefer local|online|any`. Raises `PreferenceRefused` for another word or for
        `local` without a local model, `StorageError`."""
        wanted = preference.strip().lower()
        if wanted not in PREFERENCES:
            raise PreferenceRefused(PREFER_USAGE)
        if wanted == "local" and self.local_model() is None:
            raise PreferenceRefused(NO_LOCAL_MODEL)
        chosen: ModelPreference = (
            "local" if wanted == "local" else ("online" if wanted == "online" else "any")
        )
        return await self.storage.settings.set_model_preference(user_id, chosen)

    async def load(self, user_id: int) -> UserSettings:
        return await self.storage.settings.get(user_id) or UserSettings(user_id=user_id)

    async def choose_model(self, user_id: int, choice: str | None) -> UserSettings:
        """Save the user's model: an offered entry's alias (or its spec), None for the bot's
        defaults. Raises `ModelSpecError` for anything not offered, `PreferenceRefused` for a
        model the user's `/prefer` rules out (a local one for `online`), `StorageError`."""
        if choice is not None:
            offered = await self.offered()
            wanted = choice.strip().lower()
            entry = next((e for e in offered if wanted in (e.alias, str(e.spec).lower())), None)
            if entry is None:
                raise ModelSpecError(f"{choice} is not one of the models offered to users")
            choice = entry.alias if wanted == entry.alias else str(entry.spec)
            preference = (await self.load(user_id)).model_preference
            if not allows(preference, entry.spec):
                kind = "a cloud model" if preference == "local" else "a local model"
                raise PreferenceRefused(
                    f"{entry.name} is {kind}, and your preference is {preference}: change it "
                    "with /prefer first."
                )
        # Only the model column: a key being set at the same time is kept.
        return await self.storage.settings.set_default_model(user_id, choice)

    # --- own key ---

    def test_spec(self, provider: str, row: UserSettings) -> ModelSpec:
        """The model a key is tested on: the user's own on that provider, else one of the bot's."""
        own = self.spec_of(row.default_model)
        candidates = [str(own)] if own is not None else []
        candidates += self.allowed_models()
        candidates += [self.settings.default_model, *self.settings.fallback_models]
        candidates += list(self.settings.agent_models.values())
        candidates += list(self.settings.pipeline_models.values())
        for raw in candidates:
            try:
                spec = parse_spec(raw)
            except ModelSpecError:
                continue
            if spec.provider == provider:
                return spec
        return ModelSpec(provider, TEST_MODELS.get(provider, "test"))

    async def set_key(self, user_id: int, provider: str, key: str) -> KeyOutcome:
        """Test the key with one tiny call, store it encrypted, say which agents it pays for.

        Raises `StorageError` when it cannot be stored (it was tested by then).
        """
        provider = provider.strip().lower()
        if provider not in key_providers():
            return KeyOutcome("bad_provider", provider)
        if self.settings.bot_secret_key is None:
            return KeyOutcome("disabled", provider)
        from bot.storage.crypto import KeyCipher

        cipher = KeyCipher.from_settings(self.settings)
        # Scrub it from logs and traces before it is sent anywhere.
        register_secret(key)
        if self._learn_secret is not None:
            self._learn_secret(key)

        row = await self.load(user_id)
        spec = self.test_spec(provider, row)
        try:
            llm = self.providers.chain(spec, api_key=key, fallbacks=[])
            async with asyncio.timeout(KEY_TEST_TIMEOUT):
                await llm.complete([user("Reply with the word OK.")], max_tokens=5)
        except RequestRejected as exc:
            log.info(
                "user %s's %s key refused by %s (status %s)", user_id, provider, spec, exc.status
            )
            if exc.status in (401, 403):
                return KeyOutcome("refused", provider, str(spec))
            return KeyOutcome("untested", provider, str(spec))
        except (LLMError, ModelSpecError, TimeoutError) as exc:
            log.info(
                "user %s's %s key could not be tested (%s)", user_id, provider, type(exc).__name__
            )
            return KeyOutcome("untested", provider, str(spec))

        # Only the key columns: `row` was read before the test call, which can take seconds, and
        # a model the user chose meanwhile must survive. The stored row (with that model) comes
        # back, and the outcome is worked out from it.
        row = await self.storage.settings.set_api_key(user_id, provider, cipher.encrypt(key))
        return KeyOutcome(
            "saved",
            provider,
            str(spec),
            agents=await self.agents_paid_by(row, key),
            user_model=row.default_model,
        )

    async def agents_paid_by(self, row: UserSettings, key: str) -> list[str]:
        """Agents whose model resolves to the user's choice, on the key's provider."""
        spec = self.spec_of(row.default_model)
        if spec is None or spec.provider != row.api_key_provider:
            return []
        choice = UserModelChoice(None, row.api_key_provider, SecretStr(key), row.default_model)
        paid = []
        for agent in AGENT_NAMES:
            explained = await self.resolver.explain(
                agent, pipeline=AGENT_HOME_PIPELINE.get(agent), user=choice
            )
            if explained.resolution.level == "user":
                paid.append(agent)
        return paid

    async def forget_key(self, user_id: int) -> bool:
        row = await self.load(user_id)
        if row.api_key_encrypted is None:
            return False
        await self.storage.settings.set_api_key(user_id, None, None)
        return True

    # --- memory ---

    async def forget_chat(self, chat_id: int, *, user_id: int | None = None) -> Forgotten:
        """Clear the chat's history and summary; in the user's private chat (Telegram gives it
        their id) the facts noted about them too, since those come from there."""
        removed = await self.storage.messages.clear(chat_id)
        await self.storage.summaries.clear(chat_id)
        # What the agents sent their models from this chat, kept for /replay.
        if self.replay_inputs is not None:
            await self.replay_inputs.forget_chat(chat_id)
        await self.storage.replay.clear_chat(chat_id)
        await self.storage.tasks.clear_chat(chat_id)
        facts = 0
        if user_id is not None and user_id == chat_id:
            facts = await self.storage.facts.clear(user_id)
        return Forgotten(removed, facts, private=user_id == chat_id)

    async def erase_user(self, user_id: int) -> Erased:
        """Erase everything stored about the user: their archives, then every row
        (`UserRepo.erase`). Raises `StorageError`; repeating it finishes what was left."""
        archives = await self.storage.archives.list(user_id)
        for archive in archives:
            await self.storage.archives.delete(user_id, archive.id)
        if self.replay_inputs is not None:
            await self.replay_inputs.forget_user(user_id)
        counts = await self.storage.users.erase(user_id)
        return Erased(counts, len(archives))
