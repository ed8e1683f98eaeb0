"""The one place where a model spec becomes a provider with the right key, base URL and client.

    registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
    llm = registry.chain("openrouter:openai/gpt-4o-mini")          # + FALLBACK_MODELS
    mine = registry.chain(user_spec, api_key=user_key)             # the user's key, primary only
    ...
    await registry.close()                                         # closes every SDK client

- Leaf providers are cached per (spec, key) and wrapped once: by their output bounds
  (`bot.llm.bounds`), then by `wrap` (tracing), so every attempt inside a fallback chain is its
  own traced generation, and none outgrows its `max_tokens`.
- On the shared keys: one SDK client per (provider, key, base URL), shared by every model of that
  provider: its connection pool is reused, and closing the registry closes each client once.
  These are bounded by configuration (a handful of providers), so they live as long as the
  registry.
- On users' own keys: one provider and its own SDK client per (spec, key), in a least recently
  used cache of `user_key_limit` entries (default `USER_KEY_LIMIT`), since every user who brings
  a key would otherwise hold a client and its connections for the life of the process. The
  entry pushed out closes its client, but never under a running call: each call leases the
  entry (a counter, no lock: everything runs on the event loop), and an evicted entry closes its
  client when the last lease ends, or at once when there is none. A caller still holding an
  evicted provider (a pipeline that resolved it a while ago) is not broken: its next call opens
  a fresh client, which closes again when that call ends.
- A spec whose key is missing raises `ModelSpecError` naming the variable to set; a typo in the
  provider gets parse_spec's "did you mean".
- The key is a `SecretStr` until the moment the SDK client is built; cache keys hold a hash of
  it, never the key itself, so no repr or log line shows it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from bot.config import Settings
from bot.llm.bounds import bounded
from bot.llm.fallback import FallbackProvider
from bot.llm.health import ModelHealth
from bot.llm.parameters import ModelParams, ParameterizedProvider, ParamsFor
from bot.llm.protocol import LLMProvider
from bot.llm.specs import PROVIDERS, ModelSpec, ModelSpecError, parse_spec
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk

__all__ = ["USER_KEY_LIMIT", "ProviderRegistry", "validate_settings"]

# Providers (each with its own SDK client) kept for users' own keys; see the module docstring.
USER_KEY_LIMIT = 256

log = logging.getLogger(__name__)

Wrap = Callable[[LLMProvider], LLMProvider]


def validate_settings(settings: Settings) -> list[str]:
    """Start-up problems with the model configuration, each naming the variable to set.

    Empty when every configured spec (default, fallbacks, per-agent and per-pipeline models) has
    its key and, for `mlx:`, a model folder. Spec syntax and typos are already rejected when the
    settings load (`bot.config`).
    """
    return settings.missing_key_problems()


def _given(api_key: str | SecretStr | None) -> bool:
    if isinstance(api_key, SecretStr):
        return bool(api_key.get_secret_value())
    return bool(api_key)


def _fingerprint(key: str | None) -> str:
    # Identifies a key in cache keys without holding it.
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else "-"


class _UserKeyEntry:
    """One provider on a user's own key, with the SDK client it alone owns, and its leases.

    `build()` makes the leaf (it holds the key in its closure, so no repr shows it). Built at once,
    so a bad spec fails in `get`; built again only if a call arrives after an eviction closed it.
    """

    def __init__(self, spec: str, build: Callable[[], LLMProvider]) -> None:
        self.spec = spec
        self._build = build
        self.leaf: LLMProvider | None = build()
        self.in_flight = 0
        self.evicted = False

    def __repr__(self) -> str:
        state = "evicted" if self.evicted else "cached"
        return f"_UserKeyEntry({self.spec!r}, {state}, in_flight={self.in_flight})"

    def acquire(self) -> LLMProvider:
        if self.leaf is None:
            self.leaf = self._build()
        self.in_flight += 1
        return self.leaf

    async def release(self) -> None:
        self.in_flight -= 1
        await self.close_if_idle()

    async def close_if_idle(self) -> None:
        """Close the client of an evicted entry, unless a call is using it (that call's release
        closes it). Checked when it runs, not when scheduled: a call may start in between."""
        if self.evicted and self.in_flight == 0:
            await self.close()

    async def close(self) -> None:
        leaf, self.leaf = self.leaf, None
        if leaf is None:
            return
        try:
            await leaf.close()
        except Exception:  # a failed close must not fail the call that triggered it
            log.warning("closing the client of %s failed", self.spec, exc_info=True)


class _LeasedProvider:
    """The provider handed out for a user's key: each call leases its `_UserKeyEntry`."""

    def __init__(self, entry: _UserKeyEntry, leaf: LLMProvider) -> None:
        self._entry = entry
        self.provider = leaf.provider
        self.model = leaf.model
        self._spec = leaf.spec

    @property
    def spec(self) -> str:
        return self._spec

    def __repr__(self) -> str:
        return f"_LeasedProvider({self._spec!r})"

    def __getattr__(self, name: str) -> Any:
        # Whatever else a caller looks at is the current leaf's (as long as it has one).
        leaf = self.__dict__["_entry"].leaf
        if leaf is None:
            raise AttributeError(name)
        return getattr(leaf, name)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        leaf = self._entry.acquire()
        try:
            return await leaf.complete(
                messages,
                schema=schema,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout=timeout,
            )
        finally:
            await self._entry.release()

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        leaf = self._entry.acquire()
        try:
            inner = leaf.stream(
                messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
            )
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                aclose = getattr(inner, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await self._entry.release()

    async def close(self) -> None:
        """Nothing: the registry owns the client (as with shared providers)."""


class ProviderRegistry:
    def __init__(
        self,
        settings: Settings,
        *,
        wrap: Wrap | None = None,
        user_key_limit: int = USER_KEY_LIMIT,
        health: ModelHealth | None = None,
    ) -> None:
        if user_key_limit < 1:
            raise ValueError("user_key_limit must be at least 1")
        self._settings = settings
        # One circuit breaker per model and key, shared by every chain built here.
        self.health = health if health is not None else ModelHealth()
        self._wrap = wrap
        self._providers: dict[tuple[str, str], LLMProvider] = {}
        self._parameterized: dict[tuple[int, ModelParams], ParameterizedProvider] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._leaves: list[LLMProvider] = []
        self._warned: set[str] = set()
        # Users' own keys: (spec, key fingerprint) -> (entry, provider handed out), oldest first.
        self._user_key_limit = user_key_limit
        self._user_providers: OrderedDict[tuple[str, str], tuple[_UserKeyEntry, LLMProvider]] = (
            OrderedDict()
        )
        # Evicted entries waiting to close: tasks on a running loop, else (no loop) a list that
        # `close()` empties.
        self._closing: set[asyncio.Task[None]] = set()
        self._retired: list[_UserKeyEntry] = []

    # --- public surface ---

    def get(self, spec: str | ModelSpec, *, api_key: str | SecretStr | None = None) -> LLMProvider:
        """The (wrapped) leaf provider for `spec`; `api_key` is a user's own key, else settings'."""
        parsed = parse_spec(spec) if isinstance(spec, str) else spec
        key = self._key_for(parsed, api_key)
        cache_key = (str(parsed), _fingerprint(key))
        if _given(api_key) and parsed.info.wire != "local":
            return self._user_provider(parsed, key, cache_key)
        cached = self._providers.get(cache_key)
        if cached is not None:
            return cached
        leaf = self._build(parsed, key)
        self._leaves.append(leaf)
        provider = self._wrapped(leaf)
        self._providers[cache_key] = provider
        return provider

    def chain(
        self,
        primary: str | ModelSpec,
        *,
        api_key: str | SecretStr | None = None,
        fallbacks: Sequence[str | ModelSpec] | None = None,
        parameters: ParamsFor | None = None,
    ) -> LLMProvider:
        """`primary` followed by `fallbacks` (default FALLBACK_MODELS) as one provider.

        Fallbacks equal to the primary are skipped, and so are those whose key is not set (with a
        warning logged once per spec). A user's own key applies to the primary only: fallbacks are
        paid for by the shared keys. With nothing to fall back to, the primary leaf is returned.
        `parameters(spec)` gives each model's own parameters (`bot.llm.parameters`), applied
        around its leaf, so a fallback runs with its own and not the primary's.
        """
        first = parse_spec(primary) if isinstance(primary, str) else primary
        own_key = _given(api_key) and first.info.wire != "local"
        leaf = self.get(first, api_key=api_key)
        providers = [self._with_parameters(first, leaf, parameters, keep=not own_key)]
        seen = {str(first)}
        candidates = self._settings.fallback_models if fallbacks is None else fallbacks
        for raw in candidates:
            spec = parse_spec(raw, variable="FALLBACK_MODELS") if isinstance(raw, str) else raw
            if str(spec) in seen:
                continue
            seen.add(str(spec))
            try:
                providers.append(self._with_parameters(spec, self.get(spec), parameters, keep=True))
            except ModelSpecError as exc:
                if str(spec) not in self._warned:
                    self._warned.add(str(spec))
                    log.warning("fallback model %s skipped: %s", spec, exc)
        if len(providers) == 1:
            return providers[0]
        return FallbackProvider(providers, health=self.health)

    async def close(self) -> None:
        """Close every SDK client (once) and every local provider; the registry is then empty.

        Users' clients are closed even under a running call: this is shutdown.
        """
        leaves, clients = self._leaves, list(self._clients.values())
        self._leaves, self._clients, self._providers = [], {}, {}
        self._parameterized = {}
        users = [entry for entry, _ in self._user_providers.values()] + self._retired
        self._user_providers, self._retired = OrderedDict(), []
        closing, self._closing = list(self._closing), set()
        for leaf in leaves:
            await leaf.close()
        for client in clients:
            await client.close()
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        for entry in users:
            entry.evicted = True
            await entry.close()

    # --- internals ---

    def _wrapped(self, leaf: LLMProvider) -> LLMProvider:
        """The leaf as callers get it: output bounds kept (a local model keeps them itself, in
        its generation loop), then traced, so the trace shows what the bot actually kept."""
        info = PROVIDERS.get(leaf.provider)
        inner = leaf if info is not None and info.wire == "local" else bounded(leaf)
        return self._wrap(inner) if self._wrap is not None else inner

    def _with_parameters(
        self, spec: ModelSpec, leaf: LLMProvider, parameters: ParamsFor | None, *, keep: bool
    ) -> LLMProvider:
        params = parameters(spec) if parameters is not None else None
        if not params:
            return leaf
        if not keep:
            # A user's own-key leaf: its chains are built per message and never shared.
            return ParameterizedProvider(leaf, params)
        # One wrapper per shared leaf and parameters, as long-lived as the leaf.
        key = (id(leaf), params)
        wrapped = self._parameterized.get(key)
        if wrapped is None or wrapped.inner is not leaf:
            wrapped = self._parameterized[key] = ParameterizedProvider(leaf, params)
        return wrapped

    def _user_provider(
        self, spec: ModelSpec, key: str | None, cache_key: tuple[str, str]
    ) -> LLMProvider:
        cached = self._user_providers.get(cache_key)
        if cached is not None:
            self._user_providers.move_to_end(cache_key)
            return cached[1]
        entry = _UserKeyEntry(str(spec), lambda: self._build(spec, key, own_client=True))
        assert entry.leaf is not None
        provider = self._wrapped(_LeasedProvider(entry, entry.leaf))
        self._user_providers[cache_key] = (entry, provider)
        while len(self._user_providers) > self._user_key_limit:
            _, (evicted, _) = self._user_providers.popitem(last=False)
            self._evict(evicted)
        return provider

    def _evict(self, entry: _UserKeyEntry) -> None:
        entry.evicted = True
        if entry.in_flight:
            return  # the last running call closes it (`_UserKeyEntry.release`)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._retired.append(entry)  # no loop to close it on now; `close()` will
            return
        task = loop.create_task(entry.close_if_idle())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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
        if client is None:
            client = self._clients[cache_key] = self._new_client(spec, key, base_url)
        return client

    def _new_client(self, spec: ModelSpec, key: str | None, base_url: str) -> Any:
        settings = self._settings
        if spec.info.wire == "anthropic":
            from bot.llm.anthropic_provider import make_anthropic_client

            return make_anthropic_client(
                base_url=base_url,
                api_key=key or "",
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
            )
        from bot.llm.openai_compat import make_openai_client

        return make_openai_client(
            provider=spec.provider,
            base_url=base_url,
            api_key=key,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            app_url=settings.openrouter_app_url,
            app_title=settings.openrouter_app_title,
        )

    def _build(self, spec: ModelSpec, key: str | None, *, own_client: bool = False) -> LLMProvider:
        """A leaf provider; with `own_client`, on a client of its own that it closes."""
        settings = self._settings
        wire = spec.info.wire
        if wire == "local":
            return self._build_local(spec)
        base_url = self._base_url(spec)
        if own_client:
            client = self._new_client(spec, key, base_url)
        else:
            client = self._client(spec, key, base_url)
        if wire == "anthropic":
            from bot.llm.anthropic_provider import AnthropicProvider

            return AnthropicProvider(
                model=spec.model,
                client=client,
                timeout=settings.llm_timeout,
                max_retries=settings.llm_max_retries,
                owns_client=own_client,
            )
        from bot.llm.openai_compat import OpenAICompatibleProvider

        return OpenAICompatibleProvider(
            provider=spec.provider,
            model=spec.model,
            client=client,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            owns_client=own_client,
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
