"""The one place where a model spec becomes a provider with the right key, base URL and client.

    registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
    llm = registry.chain("openrouter:openai/gpt-4o-mini")          # + FALLBACK_MODELS
    mine = registry.chain(user_spec, api_key=user_key)             # the user's key, primary only
    ...
    await registry.close()                                         # closes every SDK client

- Leaf providers are cached per (spec, key) and wrapped once by `wrap` (tracing), so every attempt
  inside a fallback chain is its own traced generation.
- One SDK client per (provider, key, base URL), shared by every model of that provider: its
  connection pool is reused, and closing the registry closes each client once.
- A spec whose key is missing raises `ModelSpecError` naming the variable to set; a typo in the
  provider gets parse_spec's "did you mean".
- The key is a `SecretStr` until the moment the SDK client is built; cache keys hold a hash of
  it, never the key itself, so no repr or log line shows it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.config import Settings
from bot.llm.fallback import FallbackProvider
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec

__all__ = ["ProviderRegistry", "validate_settings"]

log = logging.getLogger(__name__)

Wrap = Callable[[LLMProvider], LLMProvider]


def validate_settings(settings: Settings) -> list[str]:
    """Start-up problems with the model configuration, each naming the variable to set.

    Empty when every configured spec (default, fallbacks, per-agent and per-pipeline models) has
    its key and, for `mlx:`, a model folder. Spec syntax and typos are already rejected when the
    settings load (`bot.config`).
    """
    return settings.missing_key_problems()


def _fingerprint(key: str | None) -> str:
    # Identifies a key in cache keys without holding it.
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "-"


class ProviderRegistry:
    def __init__(self, settings: Settings, *, wrap: Wrap | None = None) -> None:
        self._settings = settings
        self._wrap = wrap
        self._providers: dict[tuple[str, str], LLMProvider] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._leaves: list[LLMProvider] = []
        self._warned: set[str] = set()

    # --- public surface ---

    def get(self, spec: str | ModelSpec, *, api_key: str | SecretStr | None = None) -> LLMProvider:
        """The (wrapped) leaf provider for `spec`; `api_key` is a user's own key, else settings'."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        key = self._key_for(parsed, api_key)
        cache_key = (str(parsed), _fingerprint(key))
        cached = self._providers.get(cache_key)
        if cached is not None:
            return cached
        leaf = self._build(parsed, key)
        self._leaves.append(leaf)
        provider = self._wrap(leaf) if self._wrap is not None else leaf
        self._providers[cache_key] = provider
        return provider

    def chain(
        self,
        primary: str | ModelSpec,
        *,
        api_key: str | SecretStr | None = None,
        fallbacks: Sequence[str | ModelSpec] | None = None,
    ) -> LLMProvider:
        """`primary` followed by `fallbacks` (default FALLBACK_MODELS) as one provider.

        Fallbacks equal to the primary are skipped, and so are those whose key is not set (with a
        warning logged once per spec). A user's own key applies to the primary only: fallbacks are
        paid for by the shared keys. With nothing to fall back to, the primary leaf is returned.
        """
        first = parse_spec(primary) if isinstance(primary, str) else primary
        providers = [self.get(first, api_key=api_key)]
        seen = {str(first)}
        candidates = self._settings.fallback_models if fallbacks is None else fallbacks
        for raw in candidates:
            spec = parse_spec(raw, variable="FALLBACK_MODELS") if isinstance(raw, str) else raw
            if str(spec) in seen:
                continue
            seen.add(str(spec))
            try:
                providers.append(self.get(spec))
            except ModelSpecError as exc:
                if str(spec) not in self._warned:
                    self._warned.add(str(spec))
                    log.warning("fallback model %s skipped: %s", spec, exc)
        if len(providers) == 1:
            return providers[0]
        return FallbackProvider(providers)

    async def close(self) -> None:
        """Close every SDK client (once) and every local provider; the registry is then empty."""
        leaves, clients = self._leaves, list(self._clients.values())
        self._leaves, self._clients, self._providers = [], {}, {}
        for leaf in leaves:
            await leaf.close()
        for client in clients:
            await client.close()

    # --- internals ---

    def _key_for(self, spec: ModelSpec, api_key: str | SecretStr | None) -> str | None:
        if isinstance(api_key, SecretStr):
            api_key = api_key.get_secret_value()
        if api_key:
            return api_key
        configured = self._settings.api_key_for(spec.provider)
        if configured is not None and configured.get_secret_value():
            return configured.get_secret_value()
        info = spec.info
        if info.needs_key and info.key_var:
            raise ModelSpecError(f"{info.key_var} is not set (needed by {spec})")
        return None

    def _base_url(self, spec: ModelSpec) -> str:
        url = self._settings.base_url_for(spec.provider) or spec.info.default_base_url
        if not url:  # pragma: no cover - every remote provider has a default
            raise ModelSpecError(f"{spec.info.base_url_var} is not set (needed by {spec})")
        return url

    def _client(self, spec: ModelSpec, key: str | None, base_url: str) -> Any:
        cache_key = (spec.provider, _fingerprint(key), base_url)
        client = self._clients.get(cache_key)
        if client is not None:
            return client
        settings = self._settings
        if spec.info.wire == "anthropic":
            from bot.llm.anthropic_provider import make_anthropic_client

            client = make_anthropic_client(
                base_url=base_url,
                api_key=key or "",
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
            )
        else:
            from bot.llm.openai_compat import make_openai_client

            client = make_openai_client(
                provider=spec.provider,
                base_url=base_url,
                api_key=key,
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
                app_url=settings.openrouter_app_url,
                app_title=settings.openrouter_app_title,
            )
        self._clients[cache_key] = client
        return client

    def _build(self, spec: ModelSpec, key: str | None) -> LLMProvider:
        settings = self._settings
        wire = spec.info.wire
        if wire == "local":
            return self._build_local(spec)
        base_url = self._base_url(spec)
        client = self._client(spec, key, base_url)
        if wire == "anthropic":
            from bot.llm.anthropic_provider import AnthropicProvider

            return AnthropicProvider(
                model=spec.model,
                client=client,
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
            )
        from bot.llm.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            provider=spec.provider,
            model=spec.model,
            client=client,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )

    def _build_local(self, spec: ModelSpec) -> LLMProvider:
        # Imported lazily: mlx is an optional extra, and loading it costs time at start-up.
        local = importlib.import_module("bot.llm.local")
        candidate = Path(spec.model).expanduser()
        if candidate.is_absolute() or candidate.is_dir():
            model_path: str | None = str(candidate)
        else:
            model_path = self._settings.mlx_model_path
        if not model_path:
            raise ModelSpecError(f"MLX_MODEL_PATH is not set (needed by {spec})")
        provider: LLMProvider = local.LocalProvider(
            model=spec.model, model_path=model_path, timeout=self._settings.llm_timeout
        )
        return provider
