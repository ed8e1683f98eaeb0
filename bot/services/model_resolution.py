"""Which model an agent runs on, and why.

Most specific first:

    1. override   the admin's `/setmodel` -> openrouter:<id> with the shared OPENROUTER_API_KEY
    2. user       the user's own default model (their own key when it is for that provider)
    3. agent      AGENT_MODELS[agent]
    4. pipeline   PIPELINE_MODELS[pipeline]
    5. default    DEFAULT_MODEL

Every answer is a `Resolution`: the provider to call (a fallback chain ending in
FALLBACK_MODELS), the chosen spec and its source, so `/models` and the trace can say *why*.

A user's own key never leaves that user's resolution: chains built with it are not shared with
anyone (they are not cached here under any key another user could hit).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import SecretStr

from bot.config import Settings
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec

if TYPE_CHECKING:
    from bot.services.model_config import ModelConfigService

log = logging.getLogger(__name__)

Source = Literal["override", "user", "agent", "pipeline", "default"]


class ProviderSource(Protocol):
    """What resolution needs from the provider registry (`bot.llm.registry.ProviderRegistry`)."""

    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
    ) -> LLMProvider: ...


@dataclass(frozen=True, slots=True)
class Resolution:
    """The provider an agent gets, the model chosen for it, and where that choice came from."""

    provider: LLMProvider
    spec: ModelSpec
    source: Source

    @property
    def model(self) -> str:
        return str(self.spec)


@dataclass(frozen=True, slots=True)
class UserModelChoice:
    """A user's own model and key, loaded once per message (not per step).

    `api_key` is the decrypted key; `SecretStr` keeps it out of reprs and logs.
    """

    spec: ModelSpec | None = None
    key_provider: str | None = None
    api_key: SecretStr | None = field(default=None, repr=False)

    def key_for(self, spec: ModelSpec) -> str | None:
        if self.api_key is not None and self.key_provider == spec.provider:
            return self.api_key.get_secret_value()
        return None


class ModelResolver:
    """Resolves agents to providers; the configured levels (3-5) are computed once."""

    def __init__(
        self,
        settings: Settings,
        providers: ProviderSource,
        model_config: ModelConfigService | None = None,
    ) -> None:
        self._providers = providers
        self._model_config = model_config
        self._agent_specs = {a: parse_spec(s) for a, s in settings.agent_models.items()}
        self._pipeline_specs = {p: parse_spec(s) for p, s in settings.pipeline_models.items()}
        self._default = settings.default_spec
        # Chains over the shared keys only; users' own keys never go in here.
        self._shared_chains: dict[ModelSpec, LLMProvider] = {}
        self._warned_user_specs: set[str] = set()

    def configured(self, agent: str, pipeline: str | None) -> tuple[ModelSpec, Source]:
        """Levels 3-5: what configuration says, without overrides or user choices."""
        spec = self._agent_specs.get(agent)
        if spec is not None:
            return spec, "agent"
        if pipeline is not None:
            spec = self._pipeline_specs.get(pipeline)
            if spec is not None:
                return spec, "pipeline"
        return self._default, "default"

    def shared_chain(self, spec: ModelSpec) -> LLMProvider:
        chain = self._shared_chains.get(spec)
        if chain is None:
            chain = self._providers.chain(spec)
            self._shared_chains[spec] = chain
        return chain

    async def resolve(
        self,
        agent: str,
        *,
        pipeline: str | None = None,
        user: UserModelChoice | None = None,
    ) -> Resolution:
        if self._model_config is not None:
            override = await self._model_config.resolve_override(agent)
            if override is not None:
                spec, provider = override
                return Resolution(provider, spec, "override")
        if user is not None and user.spec is not None:
            resolution, _problem = self._user_resolution(user, user.spec)
            if resolution is not None:
                return resolution
        spec, source = self.configured(agent, pipeline)
        return Resolution(self.shared_chain(spec), spec, source)

    async def explain(
        self, agent: str, *, pipeline: str | None = None, user: UserModelChoice | None = None
    ) -> tuple[str, Source, str | None]:
        """(model, source, note) for `/models`: what `resolve` would pick, and why. A stored
        override or a user's choice that cannot apply is noted next to what applies instead."""
        notes: list[str] = []
        if self._model_config is not None:
            model_id = await self._model_config.get_override(agent)
            if model_id is not None:
                if self._model_config.overrides_enabled:
                    return str(ModelSpec("openrouter", model_id)), "override", None
                notes.append(f"override {model_id} ignored: OPENROUTER_API_KEY is not set")
        if user is not None and user.spec is not None:
            # The same decision as `resolve` (the chain it builds is the one a message would use).
            resolution, problem = self._user_resolution(user, user.spec)
            if resolution is not None:
                return resolution.model, "user", "; ".join(notes) or None
            notes.append(f"your model {user.spec} cannot be used: {problem}")
        spec, source = self.configured(agent, pipeline)
        return str(spec), source, "; ".join(notes) or None

    def _user_resolution(
        self, user: UserModelChoice, spec: ModelSpec
    ) -> tuple[Resolution | None, str | None]:
        """The user's choice as a Resolution, or (None, why it cannot be served)."""
        key = user.key_for(spec)
        try:
            provider = (
                self._providers.chain(spec, api_key=key)
                if key is not None
                else self.shared_chain(spec)
            )
        except ModelSpecError as exc:
            # The user's choice cannot be served (e.g. no key for that provider): fall back to
            # the bot's configuration rather than failing their message.
            if str(spec) not in self._warned_user_specs:
                self._warned_user_specs.add(str(spec))
                log.warning("user model %s cannot be used, using the defaults: %s", spec, exc)
            return None, str(exc)
        return Resolution(provider, spec, "user"), None
