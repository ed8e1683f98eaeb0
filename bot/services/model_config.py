"""Admins' per-agent model overrides, cached in memory.

The `agent_model_config` table is read with one query at most once per `ttl` seconds (default
`MODEL_CONFIG_TTL` = 60 s), whatever the load:

- fresh copy: lookups answer from memory with no await on the database;
- stale copy: the first lookup starts one refresh; every other lookup waits for that same
  refresh (single flight);
- failed refresh: the stale copy is kept and the next try waits `retry_backoff` seconds, so a
  database outage costs one failed query per backoff instead of one per message;
- a write or `invalidate()` during a refresh makes that refresh's rows worthless (they may have
  been read before the change): they are dropped, never applied over the newer local state, and
  no later lookup waits on that refresh; it starts one that began after the change;
- `set_override` / `reset_override` write through the repository, apply the change in memory at
  once (the replica that took the command sees it on the very next message), append the history
  and tell the change listeners. Other replicas see it within the TTL, or at once when Redis
  pub/sub calls `invalidate()` (wire it with `add_change_listener` on the publishing side). Once
  the override row is written the change has happened: a failing history write or listener is
  logged and reported in the returned `OverrideChange`, never raised as if nothing changed.

Overrides run on OpenRouter with the shared OPENROUTER_API_KEY; without it they are ignored and a
warning is logged once. One provider object is cached per override model id.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.config import AGENT_NAMES, Settings
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec
from bot.storage.models import AgentModelConfig, ModelConfigChange
from bot.storage.repositories import AgentModelConfigRepo, ModelConfigHistoryRepo, StorageError

if TYPE_CHECKING:
    from bot.services.model_resolution import ProviderSource

log = logging.getLogger(__name__)

Clock = Callable[[], float]
# Called with the agent after a local set/reset; may be async (e.g. OverrideEvents.publish).
# Returning False (or raising) means the change was not passed on.
ChangeListener = Callable[[str], object]


class UnknownAgentError(ValueError):
    """`/setmodel` named an agent that does not exist; the message lists the agents."""

    def __init__(self, agent: str) -> None:
        super().__init__(f"unknown agent {agent!r}; agents: {', '.join(AGENT_NAMES)}")
        self.agent = agent


@dataclass(frozen=True, slots=True)
class OverrideChange:
    """What `set_override` / `reset_override` did, for an answer that tells the truth."""

    agent: str
    # False only for a reset of an agent that had no active override.
    changed: bool
    # The active override after the change (None after a reset) and the one before it.
    row: AgentModelConfig | None
    previous_model_id: str | None
    # False: the change is live, but its line in the history table could not be written.
    history_written: bool
    # True: every change listener (the Redis publish) passed it on; False: at least one failed,
    # so other replicas see it within the TTL; None: no listener (nothing to tell).
    replicas_notified: bool | None


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
        # Bumped by every local write and invalidate(); a refresh applies its rows only if the
        # generation it started at is still the current one.
        self._generation = 0
        self._refresh_task: asyncio.Task[None] | None = None  # the refresh lookups may join
        self._refresh_generation = -1
        self._refreshes: set[asyncio.Task[None]] = set()  # every refresh in flight, for close()
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

    async def set_override(self, agent: str, model_id: str, set_by: str | None) -> OverrideChange:
        """Write through, make it visible on this process at once, append history, notify.

        A storage error before the row is written propagates (nothing changed); after it, the
        change stands and a failing history write is reported in the result.
        """
        self._check_agent(agent)
        model_id = normalize_model_id(model_id)
        old = await self._repo.get(agent)
        previous = old.model_id if old is not None and old.is_active else None
        row = await self._repo.upsert(agent, model_id, set_by)
        self._apply_local(agent, row)
        history_written = False
        notified: bool | None = None
        try:
            history_written = await self._append_history(
                ModelConfigChange(
                    agent_name=agent,
                    action="set",
                    old_model_id=previous,
                    new_model_id=model_id,
                    changed_by=set_by,
                )
            )
        finally:
            # The change happened: other replicas hear of it whatever became of the history
            # (even when this coroutine is being cancelled).
            notified = await self._notify(agent)
        return OverrideChange(agent, True, row, previous, history_written, notified)

    async def reset_override(self, agent: str, by: str | None) -> OverrideChange:
        """Back to the configured model; `changed` is False when there was no active override."""
        self._check_agent(agent)
        old = await self._repo.get(agent)
        was_active = old is not None and old.is_active
        deactivated = await self._repo.deactivate(agent)
        # Changed if there was an override to reset: the row read before says so even when
        # `deactivate` answers False because a concurrent reset turned it off first (that call
        # writes the history line: the repository gives True to one call only).
        changed = was_active or deactivated
        previous = old.model_id if old is not None and was_active else None
        self._apply_local(agent, None)
        if not changed:
            return OverrideChange(agent, False, None, None, True, None)
        history_written = True
        notified: bool | None = None
        try:
            if deactivated:
                history_written = await self._append_history(
                    ModelConfigChange(
                        agent_name=agent,
                        action="reset",
                        old_model_id=previous,
                        new_model_id=None,
                        changed_by=by,
                    )
                )
        finally:
            notified = await self._notify(agent)
        return OverrideChange(agent, True, None, previous, history_written, notified)

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
        self._refresh_task = None
        tasks = list(self._refreshes)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Providers belong to the registry, which closes them; only our references go.
        self._provider_cache.clear()

    # --- internals ---

    async def _ensure_fresh(self) -> None:
        expires = self._expires_at
        now = self._clock()
        if expires is not None and now < expires:
            return
        task = self._refresh_task
        if task is None or self._refresh_generation != self._generation:
            # None running, or only one that started before the latest write/invalidate():
            # its rows cannot show that change, so start one that can.
            if now < self._retry_at or self._closed:
                return  # keep the stale copy until the backoff is over
            task = asyncio.create_task(self._refresh(self._generation), name="model-config-refresh")
            self._refresh_task, self._refresh_generation = task, self._generation
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)
        # wait, not await: one impatient caller being cancelled must not cancel everyone's
        # refresh, and a refresh cancelled by close() leaves its waiters the copy in memory.
        await asyncio.wait([task])

    async def _refresh(self, generation: int) -> None:
        try:
            self.reads += 1
            async with asyncio.timeout(self._refresh_timeout):
                rows = await self._repo.get_all_active()
        except Exception as exc:
            self.failed_reads += 1
            current = generation == self._generation
            if current:
                self._retry_at = self._clock() + self._retry_backoff
            log.warning(
                "could not read agent_model_config, keeping the %s cached override(s)%s: %s",
                len(self._overrides),
                f"; retrying in {self._retry_backoff:.0f}s" if current else "",
                exc,
            )
            return
        finally:
            if self._refresh_task is asyncio.current_task():
                self._refresh_task = None
        if generation != self._generation:
            # A write or invalidate() happened during the read: these rows may predate it, and
            # the local state (with the write applied) is newer. The next lookup reads again.
            return
        self._overrides = {row.agent_name: row for row in rows if row.is_active}
        self._expires_at = self._clock() + self.ttl

    def _apply_local(self, agent: str, row: AgentModelConfig | None) -> None:
        if row is not None and row.is_active:
            self._overrides[agent] = row
        else:
            self._overrides.pop(agent, None)
        self.invalidate()

    async def _append_history(self, change: ModelConfigChange) -> bool:
        """Append a history line; False (logged for the operator) when it could not be written."""
        if self._history is None:
            return True
        try:
            await self._history.append(change)
        except Exception as exc:
            # The override itself is stored and live; only the audit line is missing.
            log.error(
                "model override %s of %s to %s by %s is live, but its history line could not "
                "be written: %s",
                change.action,
                change.agent_name,
                change.new_model_id or "the configured model",
                change.changed_by or "unknown",
                exc,
                exc_info=not isinstance(exc, StorageError),
            )
            return False
        return True

    async def _notify(self, agent: str) -> bool | None:
        """Tell every listener; True if all passed it on, False if one failed, None if none."""
        if not self._listeners:
            return None
        delivered = True
        for listener in self._listeners:
            try:
                result = listener(agent)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                # The change is stored and visible here; other replicas catch up within the TTL.
                log.exception("model config change listener failed for %s", agent)
                result = False
            if result is False:
                delivered = False
        return delivered

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
