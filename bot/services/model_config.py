"""Admins' per-agent model overrides, cached in memory.

The `agent_model_config` table is read with one query at most once per `ttl` seconds (default
`MODEL_CONFIG_TTL` = 60 s), whatever the load:

- fresh copy: lookups answer from memory with no await on the database;
- stale copy: the first lookup starts one refresh; every other lookup waits for that same
  refresh (single flight);
- failed refresh: the stale copy is kept and the next try waits `retry_backoff` seconds, so a
  database outage costs one failed query per backoff instead of one per message;
- `set_override` / `reset_override` write through the repository, append the history and
  invalidate at once, so the replica that took the command sees it on the very next message.
  Other replicas see it within the TTL, or at once when Redis pub/sub calls `invalidate()`
  (wire it with `add_change_listener` on the publishing side).

Overrides run on OpenRouter with the shared OPENROUTER_API_KEY; without it they are ignored and a
warning is logged once. One provider object is cached per override model id.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.config import AGENT_NAMES, Settings
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec
from bot.storage.models import AgentModelConfig, ModelConfigChange
from bot.storage.repositories import AgentModelConfigRepo, ModelConfigHistoryRepo

if TYPE_CHECKING:
    from bot.services.model_resolution import ProviderSource

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Called with the agent after a local set/reset; may be async (e.g. OverrideEvents.publish).
ChangeListener = Callable[[str], object]


class UnknownAgentError(ValueError):
    """`/setmodel` named an agent that does not exist; the message lists the agents."""

    def __init__(self, agent: str) -> None:
        super().__init__(f"unknown agent {agent!r}; agents: {', '.join(AGENT_NAMES)}")
        self.agent = agent


def normalize_model_id(model_id: str) -> str:
    """OpenRouter ids as admins type them; an `openrouter:` prefix is accepted and dropped."""
    text = model_id.strip()
    if text.lower().startswith("openrouter:"):
        text = text.split(":", 1)[1].strip()
    if not text:
        raise ValueError("model id is empty; write e.g. anthropic/claude-sonnet-4.5")
    return text


class ModelConfigService:
    CACHE_TTL: float = 60.0
    # How long to wait before retrying after a failed refresh, and how long one refresh may take.
    RETRY_BACKOFF: float = 5.0
    REFRESH_TIMEOUT: float = 10.0

    def __init__(
        self,
        repo: AgentModelConfigRepo,
        history: ModelConfigHistoryRepo | None = None,
        *,
        providers: ProviderSource | None = None,
        overrides_enabled: bool = True,
        ttl: float | None = None,
        clock: Clock = time.monotonic,
        retry_backoff: float | None = None,
        refresh_timeout: float | None = None,
    ) -> None:
        self._repo = repo
        self._history = history
        self._providers = providers
        self.overrides_enabled = overrides_enabled
        self.ttl = self.CACHE_TTL if ttl is None else ttl
        self._clock = clock
        self._retry_backoff = self.RETRY_BACKOFF if retry_backoff is None else retry_backoff
        self._refresh_timeout = self.REFRESH_TIMEOUT if refresh_timeout is None else refresh_timeout
        self._overrides: dict[str, AgentModelConfig] = {}
        self._expires_at: float | None = None  # None: never loaded or invalidated
        self._retry_at = 0.0
        self._generation = 0
        self._refresh_task: asyncio.Task[None] | None = None
        self._provider_cache: dict[str, LLMProvider] = {}
        self._listeners: list[ChangeListener] = []
        self._warned_disabled = False
        self._closed = False
        # Database reads of the override table, for benchmarks and tests.
        self.reads = 0
        self.failed_reads = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        repo: AgentModelConfigRepo,
        history: ModelConfigHistoryRepo | None,
        providers: ProviderSource | None,
        **kwargs: object,
    ) -> ModelConfigService:
        return cls(
            repo,
            history,
            providers=providers,
            overrides_enabled=settings.openrouter_api_key is not None,
            ttl=settings.model_config_ttl,
            **kwargs,  # type: ignore[arg-type]
        )

    # --- reads ---

    async def get_all(self) -> dict[str, AgentModelConfig]:
        """Every active override by agent (a copy), fresh within the TTL or the stale copy."""
        await self._ensure_fresh()
        return dict(self._overrides)

    async def get_override(self, agent: str) -> str | None:
        """The agent's override model id (OpenRouter id), whether or not it can apply."""
        await self._ensure_fresh()
        row = self._overrides.get(agent)
        return row.model_id if row is not None else None

    async def resolve_override(self, agent: str) -> tuple[ModelSpec, LLMProvider] | None:
        """The override's spec and provider, or None when there is none or it cannot apply."""
        model_id = await self.get_override(agent)
        if model_id is None:
            return None
        if not self.overrides_enabled or self._providers is None:
            self._warn_disabled()
            return None
        provider = self._provider_cache.get(model_id)
        if provider is None:
            provider = self._providers.chain(ModelSpec("openrouter", model_id))
            self._provider_cache[model_id] = provider
        return ModelSpec("openrouter", model_id), provider

    async def get_provider_for_agent(self, agent: str) -> LLMProvider | None:
        found = await self.resolve_override(agent)
        return found[1] if found is not None else None

    # --- writes ---

    async def set_override(self, agent: str, model_id: str, set_by: str | None) -> AgentModelConfig:
        """Write through, append history, and make it visible on this process at once."""
        self._check_agent(agent)
        model_id = normalize_model_id(model_id)
        old = await self._repo.get(agent)
        row = await self._repo.upsert(agent, model_id, set_by)
        self._apply_local(agent, row)
        if self._history is not None:
            await self._history.append(
                ModelConfigChange(
                    agent_name=agent,
                    action="set",
                    old_model_id=old.model_id if old is not None and old.is_active else None,
                    new_model_id=model_id,
                    changed_by=set_by,
                )
            )
        await self._notify(agent)
        return row

    async def reset_override(self, agent: str, by: str | None) -> bool:
        """Back to the configured model; False when the agent had no active override."""
        self._check_agent(agent)
        old = await self._repo.get(agent)
        changed = await self._repo.deactivate(agent)
        self._apply_local(agent, None)
        if changed and self._history is not None:
            await self._history.append(
                ModelConfigChange(
                    agent_name=agent,
                    action="reset",
                    old_model_id=old.model_id if old is not None else None,
                    new_model_id=None,
                    changed_by=by,
                )
            )
        await self._notify(agent)
        return changed

    # --- cache control ---

    def invalidate(self) -> None:
        """Forget freshness: the next lookup reads the table (safe from any coroutine)."""
        self._generation += 1
        self._expires_at = None
        self._retry_at = 0.0

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Called with the agent name after every local set/reset (e.g. to publish to Redis)."""
        self._listeners.append(listener)

    async def close(self) -> None:
        self._closed = True
        task, self._refresh_task = self._refresh_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # Providers belong to the registry, which closes them; only our references go.
        self._provider_cache.clear()

    # --- internals ---

    async def _ensure_fresh(self) -> None:
        expires = self._expires_at
        now = self._clock()
        if expires is not None and now < expires:
            return
        if self._refresh_task is None:
            if now < self._retry_at or self._closed:
                return  # keep the stale copy until the backoff is over
            self._refresh_task = asyncio.create_task(self._refresh(), name="model-config-refresh")
        # shield: one impatient caller being cancelled must not cancel everyone's refresh.
        await asyncio.shield(self._refresh_task)

    async def _refresh(self) -> None:
        generation = self._generation
        try:
            self.reads += 1
            async with asyncio.timeout(self._refresh_timeout):
                rows = await self._repo.get_all_active()
        except asyncio.CancelledError:
            self._refresh_task = None
            raise
        except Exception as exc:
            self.failed_reads += 1
            self._retry_at = self._clock() + self._retry_backoff
            log.warning(
                "could not read agent_model_config, keeping the %s cached override(s); "
                "retrying in %.0fs: %s",
                len(self._overrides),
                self._retry_backoff,
                exc,
            )
            self._refresh_task = None
            return
        self._overrides = {row.agent_name: row for row in rows if row.is_active}
        # A write or invalidate() during the read may have made these rows old already.
        self._expires_at = self._clock() + self.ttl if generation == self._generation else None
        self._refresh_task = None

    def _apply_local(self, agent: str, row: AgentModelConfig | None) -> None:
        if row is not None and row.is_active:
            self._overrides[agent] = row
        else:
            self._overrides.pop(agent, None)
        self.invalidate()

    async def _notify(self, agent: str) -> None:
        for listener in self._listeners:
            try:
                result = listener(agent)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # The change is stored and visible here; other replicas catch up within the TTL.
                log.exception("model config change listener failed for %s", agent)

    def _warn_disabled(self) -> None:
        if not self._warned_disabled:
            self._warned_disabled = True
            log.warning(
                "admin model overrides are ignored: set OPENROUTER_API_KEY to use them "
                "(overrides run on OpenRouter with the shared key)"
            )

    @staticmethod
    def _check_agent(agent: str) -> None:
        if agent not in AGENT_NAMES:
            raise UnknownAgentError(agent)
