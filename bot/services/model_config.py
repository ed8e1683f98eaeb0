"""The model configuration admins change at runtime, kept in memory: every assignment
(`/setmodel <target> <model>` for an agent, `pipeline:<name>`, `role:<role>` or `default`), the
catalog of named models, and the configuration version.

    snapshot = await model_config.snapshot()     # assignments, catalog, version: no await on
    snapshot.assignments["strategist"].model_id  # the database while fresh
    await model_config.set_override("role:chat", "fast", "tg:42")
    await model_config.save_entry(entry, "tg:42", previous=None)      # /catalog add

The tables (`agent_model_config`, `model_catalog`, the newest line of the history) are read at
most once per `ttl` seconds (default `MODEL_CONFIG_TTL` = 60 s), whatever the load:

- fresh copy: lookups answer from memory with no await on the database;
- stale copy: the first lookup starts one refresh; every other lookup waits for that same
  refresh (single flight);
- failed refresh: the stale copy is kept and the next try waits `retry_backoff` seconds, so a
  database outage costs one failed refresh per backoff instead of one per message;
- a write or `invalidate()` during a refresh makes that refresh's rows worthless (they may have
  been read before the change): they are dropped, never applied over the newer local state, and
  no later lookup waits on that refresh; it starts one that began after the change;
- every write (`set_override`, `reset_override`, `rollback`, `save_entry`, `remove_entry`) goes
  through the repository, is applied in memory at once (the replica that took the command sees
  it on the very next message), appends its history line and tells the change listeners. Other
  replicas see it within the TTL, or at once when Redis pub/sub calls `invalidate()` (wire it
  with `add_change_listener` on the publishing side). Once the row is written the change has
  happened: a failing history write or listener is logged and reported in the result, never
  raised as if nothing changed.

The configuration version is the id of the newest history line: every change writes one, ids
only grow, and every replica reads the same table, so the version is the same everywhere and
survives restarts. It lives in the snapshot, so reading it costs nothing per message. (A change
whose history line could not be written leaves the version where it was; the admin is told.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.config import Settings
from bot.llm.parameters import ParamsFor
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec
from bot.services.model_catalog import (
    Catalog,
    CatalogEntry,
    ConfiguredModel,
    UnknownAliasError,
    configured_models,
)
from bot.services.model_levels import ConfigSnapshot, UnknownTargetError, parse_target
from bot.storage.models import AgentModelConfig, ModelCatalogRow, ModelConfigChange
from bot.storage.repositories import (
    AgentModelConfigRepo,
    ModelCatalogRepo,
    ModelConfigHistoryRepo,
    StorageError,
)

log = logging.getLogger(__name__)


class ProviderSource(Protocol):
    """What resolution needs from the provider registry (`bot.llm.registry.ProviderRegistry`).

    `parameters` is passed only when some model has parameters to apply.
    """

    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
        parameters: ParamsFor | None = None,
    ) -> LLMProvider: ...


Clock = Callable[[], float]
# Called with the target after a local change; may be async (e.g. OverrideEvents.publish).
# Returning False (or raising) means the change was not passed on.
ChangeListener = Callable[[str], object]


# The old name: `/setmodel` targets were agents only.
UnknownAgentError = UnknownTargetError


@dataclass(frozen=True, slots=True)
class OverrideChange:
    """What `set_override` / `reset_override` / `rollback` did, for an answer that tells the
    truth. `agent` is the target (an agent, `pipeline:<name>`, `role:<role>`, `default`)."""

    agent: str
    # False only for a reset of a target that had no active assignment.
    changed: bool
    # The active assignment after the change (None after a reset) and the model before it.
    row: AgentModelConfig | None
    previous_model_id: str | None
    # False: the change is live, but its line in the history table could not be written.
    history_written: bool
    # True: every change listener (the Redis publish) passed it on; False: at least one failed,
    # so other replicas see it within the TTL; None: no listener (nothing to tell).
    replicas_notified: bool | None
    # The configuration version after the change.
    version: int = 0

    @property
    def target(self) -> str:
        return self.agent


CatalogAction = Literal["add", "edit", "remove"]


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What `save_entry` / `remove_entry` did."""

    alias: str
    action: CatalogAction
    # The entry as it is now (None after a removal).
    entry: CatalogEntry | None
    history_written: bool
    replicas_notified: bool | None
    version: int = 0


def normalize_model_id(model_id: str) -> str:
    """Model text as it is stored: an `openrouter:` spec as its bare id (as admins type ids),
    another spec in its canonical `provider:model` form, an alias in lower case."""
    text = model_id.strip()
    if text.lower().startswith("openrouter:"):
        text = text.split(":", 1)[1].strip()
    if not text:
        raise ValueError("model id is empty; write an alias, provider:model or an OpenRouter id")
    if ":" in text:
        return str(parse_spec(text))
    if "/" not in text:
        return text.lower()
    return text


class ModelConfigService:
    CACHE_TTL: float = 60.0
    # How long to wait before retrying after a failed refresh, and how long one refresh may take.
    RETRY_BACKOFF: float = 5.0
    REFRESH_TIMEOUT: float = 10.0
    # How far back `/rollback` looks for the change to undo.
    ROLLBACK_DEPTH = 200

    def __init__(
        self,
        repo: AgentModelConfigRepo,
        history: ModelConfigHistoryRepo | None = None,
        *,
        catalog: ModelCatalogRepo | None = None,
        configured: Sequence[ConfiguredModel] = (),
        providers: ProviderSource | None = None,
        overrides_enabled: bool = True,
        ttl: float | None = None,
        clock: Clock = time.monotonic,
        retry_backoff: float | None = None,
        refresh_timeout: float | None = None,
    ) -> None:
        self._repo = repo
        self._history = history
        self._catalog_repo = catalog
        self._configured = tuple(configured)
        self._providers = providers
        # Whether bare OpenRouter ids can run (OPENROUTER_API_KEY is set).
        self.overrides_enabled = overrides_enabled
        self.ttl = self.CACHE_TTL if ttl is None else ttl
        self._clock = clock
        self._retry_backoff = self.RETRY_BACKOFF if retry_backoff is None else retry_backoff
        self._refresh_timeout = self.REFRESH_TIMEOUT if refresh_timeout is None else refresh_timeout
        self._stored: dict[str, ModelCatalogRow] = {}
        self._snapshot = ConfigSnapshot({}, Catalog.build(self._configured), 0)
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
        self._warned: set[str] = set()
        self._closed = False
        # Refreshes of the configuration (each reads its tables), for benchmarks and tests.
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
            configured=configured_models(settings),
            providers=providers,
            overrides_enabled=settings.openrouter_api_key is not None,
            ttl=settings.model_config_ttl,
            **kwargs,  # type: ignore[arg-type]
        )

    # --- reads ---

    async def snapshot(self) -> ConfigSnapshot:
        """The configuration, fresh within the TTL (or the stale copy while the database fails)."""
        await self._ensure_fresh()
        return self._snapshot

    def peek(self) -> ConfigSnapshot:
        """The configuration in memory now, without refreshing it."""
        return self._snapshot

    @property
    def version(self) -> int:
        """The configuration version in memory (the newest history line's id)."""
        return self._snapshot.version

    async def get_all(self) -> dict[str, AgentModelConfig]:
        """Every active assignment by target (a copy), fresh within the TTL or the stale copy."""
        await self._ensure_fresh()
        return dict(self._snapshot.assignments)

    async def get_override(self, agent: str) -> str | None:
        """The target's assigned model text, whether or not it can be served."""
        await self._ensure_fresh()
        row = self._snapshot.assignments.get(agent)
        return row.model_id if row is not None else None

    async def resolve_override(self, agent: str) -> tuple[ModelSpec, LLMProvider] | None:
        """The agent's own override as a spec and provider, or None when there is none or it
        cannot be served. (The resolver serves every level itself; this stays for callers that
        ask about one agent's override.)"""
        model_id = await self.get_override(agent)
        if model_id is None or self._providers is None:
            return None
        try:
            spec = self._snapshot.catalog.interpret(model_id).spec
        except (ModelSpecError, UnknownAliasError) as exc:
            self._warn_once(
                model_id, "model override %s of %s is ignored: %s", model_id, agent, exc
            )
            return None
        if spec.provider == "openrouter" and not self.overrides_enabled:
            self._warn_once(
                "openrouter",
                "admin model overrides on OpenRouter ids are ignored: set OPENROUTER_API_KEY to "
                "use them (they run on OpenRouter with the shared key)",
            )
            return None
        provider = self._provider_cache.get(model_id)
        if provider is None:
            try:
                provider = self._providers.chain(spec)
            except ModelSpecError as exc:
                self._warn_once(
                    model_id, "model override %s of %s is ignored: %s", spec, agent, exc
                )
                return None
            self._provider_cache[model_id] = provider
        return spec, provider

    async def get_provider_for_agent(self, agent: str) -> LLMProvider | None:
        found = await self.resolve_override(agent)
        return found[1] if found is not None else None

    async def history_of(self, target: str, limit: int = 20) -> list[ModelConfigChange]:
        """The target's changes, newest first (`/modelhistory`, `/rollback`)."""
        if self._history is None:
            return []
        return await self._history.list(target, limit)

    # --- writes: assignments ---

    async def set_override(self, agent: str, model_id: str, set_by: str | None) -> OverrideChange:
        """Assign `model_id` to the target: write through, make it visible here at once, append
        the history, notify.

        A storage error before the row is written propagates (nothing changed); after it, the
        change stands and a failing history write is reported in the result.
        """
        target = parse_target(agent).name
        model_id = normalize_model_id(model_id)
        return await self._assign(target, model_id, set_by, action="set")

    async def reset_override(self, agent: str, by: str | None) -> OverrideChange:
        """Back to the configured model; `changed` is False when there was no active assignment."""
        target = parse_target(agent).name
        return await self._unassign(target, by, action="reset")

    async def rollback_candidate(self, agent: str) -> ModelConfigChange | None:
        """The change `/rollback` would undo: the target's newest change not undone yet (each
        rollback line names the line it undid, so repeated rollbacks walk further back)."""
        target = parse_target(agent).name
        undone: set[int] = set()
        for line in await self.history_of(target, self.ROLLBACK_DEPTH):
            if line.action == "rollback":
                if line.reverts_id is not None:
                    undone.add(line.reverts_id)
                continue
            if line.id not in undone:
                return line
        return None

    async def rollback(self, agent: str, line: ModelConfigChange, by: str | None) -> OverrideChange:
        """Restore what the target had before `line` (from `rollback_candidate`)."""
        target = parse_target(agent).name
        restore = line.old_model_id
        if restore is None:
            return await self._unassign(target, by, action="rollback", reverts=line.id)
        return await self._assign(target, restore, by, action="rollback", reverts=line.id)

    async def _assign(
        self,
        target: str,
        model_id: str,
        set_by: str | None,
        *,
        action: Literal["set", "rollback"],
        reverts: int | None = None,
    ) -> OverrideChange:
        old = await self._repo.get(target)
        previous = old.model_id if old is not None and old.is_active else None
        row = await self._repo.upsert(target, model_id, set_by)
        self._apply_assignment(target, row)
        written, notified = await self._record(
            target,
            ModelConfigChange(
                agent_name=target,
                action=action,
                old_model_id=previous,
                new_model_id=model_id,
                changed_by=set_by,
                reverts_id=reverts,
            ),
        )
        return OverrideChange(
            target, True, row, previous, written, notified, self._snapshot.version
        )

    async def _unassign(
        self,
        target: str,
        by: str | None,
        *,
        action: Literal["reset", "rollback"],
        reverts: int | None = None,
    ) -> OverrideChange:
        old = await self._repo.get(target)
        was_active = old is not None and old.is_active
        deactivated = await self._repo.deactivate(target)
        # Changed if there was an assignment to reset: the row read before says so even when
        # `deactivate` answers False because a concurrent reset turned it off first (that call
        # writes the history line: the repository gives True to one call only).
        changed = was_active or deactivated
        previous = old.model_id if old is not None and was_active else None
        self._apply_assignment(target, None)
        if not changed:
            return OverrideChange(target, False, None, None, True, None, self._snapshot.version)
        line = ModelConfigChange(
            agent_name=target,
            action=action,
            old_model_id=previous,
            new_model_id=None,
            changed_by=by,
            reverts_id=reverts,
        )
        written, notified = await self._record(target, line if deactivated else None)
        return OverrideChange(
            target, True, None, previous, written, notified, self._snapshot.version
        )

    # --- writes: the catalog ---

    async def save_entry(
        self, entry: CatalogEntry, by: str | None, *, previous: CatalogEntry | None
    ) -> CatalogChange:
        """Store an added entry (`previous` None) or an edited one (its state before)."""
        if self._catalog_repo is None:
            raise StorageError("this storage keeps no model catalog")
        row = await self._catalog_repo.save(entry.to_row(by))
        self._stored[row.alias] = row
        self._rebuild_catalog()
        action: CatalogAction = "add" if previous is None else "edit"
        current = self._snapshot.catalog.get(row.alias)
        return await self._catalog_changed(
            row.alias,
            action,
            current,
            by,
            old=previous.describe() if previous is not None else None,
            new=current.describe() if current is not None else None,
        )

    async def remove_entry(self, entry: CatalogEntry, by: str | None) -> CatalogChange:
        if self._catalog_repo is None:
            raise StorageError("this storage keeps no model catalog")
        await self._catalog_repo.delete(entry.alias)
        self._stored.pop(entry.alias, None)
        self._rebuild_catalog()
        return await self._catalog_changed(
            entry.alias, "remove", None, by, old=entry.describe(), new=None
        )

    async def _catalog_changed(
        self,
        alias: str,
        action: CatalogAction,
        entry: CatalogEntry | None,
        by: str | None,
        *,
        old: str | None,
        new: str | None,
    ) -> CatalogChange:
        target = f"catalog:{alias}"
        written, notified = await self._record(
            target,
            ModelConfigChange(
                agent_name=target, action=action, old_model_id=old, new_model_id=new, changed_by=by
            ),
        )
        return CatalogChange(alias, action, entry, written, notified, self._snapshot.version)

    # --- cache control ---

    def invalidate(self) -> None:
        """Forget freshness: the next lookup reads the tables (safe from any coroutine)."""
        self._generation += 1
        self._expires_at = None
        self._retry_at = 0.0

    def add_change_listener(self, listener: ChangeListener) -> None:
        """Called with the target (`catalog:<alias>` for the catalog) after every local change
        (e.g. to publish it to the other replicas on Redis)."""
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
                stored = await self._catalog_repo.list() if self._catalog_repo is not None else []
                version = await self._history.latest_id() if self._history is not None else 0
        except Exception as exc:
            self.failed_reads += 1
            current = generation == self._generation
            if current:
                self._retry_at = self._clock() + self._retry_backoff
            log.warning(
                "could not read the model configuration, keeping the %s cached assignment(s)%s: %s",
                len(self._snapshot.assignments),
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
        self._stored = {row.alias: row for row in stored}
        self._snapshot = ConfigSnapshot(
            {row.agent_name: row for row in rows if row.is_active},
            Catalog.build(self._configured, stored),
            max(version, 0),
        )
        self._expires_at = self._clock() + self.ttl

    def _apply_assignment(self, target: str, row: AgentModelConfig | None) -> None:
        assignments = dict(self._snapshot.assignments)
        if row is not None and row.is_active:
            assignments[target] = row
        else:
            assignments.pop(target, None)
        self._snapshot = ConfigSnapshot(assignments, self._snapshot.catalog, self._snapshot.version)
        self.invalidate()

    def _rebuild_catalog(self) -> None:
        catalog = Catalog.build(self._configured, list(self._stored.values()))
        old = self._snapshot
        self._snapshot = ConfigSnapshot(old.assignments, catalog, old.version)
        self.invalidate()

    async def _record(
        self, target: str, change: ModelConfigChange | None
    ) -> tuple[bool, bool | None]:
        """After a change is stored: its history line (None: another call writes it), then the
        listeners. (history written, replicas told), as `OverrideChange` reports them."""
        written = True
        try:
            if change is not None:
                written = await self._append_history(change) is not None
        finally:
            # The change happened: other replicas hear of it whatever became of the history
            # (even when this coroutine is being cancelled).
            notified = await self._notify(target)
        return written, notified

    async def _append_history(self, change: ModelConfigChange) -> ModelConfigChange | None:
        """Append a history line and move the version to it; None (logged for the operator)
        when it could not be written."""
        if self._history is None:
            return change
        try:
            line = await self._history.append(change)
        except Exception as exc:
            # The change itself is stored and live; only the audit line is missing.
            log.error(
                "model configuration change %s of %s to %s by %s is live, but its history "
                "line could not be written: %s",
                change.action,
                change.agent_name,
                change.new_model_id or "the configured model",
                change.changed_by or "unknown",
                exc,
                exc_info=not isinstance(exc, StorageError),
            )
            return None
        if line.id is not None and line.id > self._snapshot.version:
            old = self._snapshot
            self._snapshot = ConfigSnapshot(old.assignments, old.catalog, line.id)
        return line

    async def _notify(self, target: str) -> bool | None:
        """Tell every listener; True if all passed it on, False if one failed, None if none."""
        if not self._listeners:
            return None
        delivered = True
        for listener in self._listeners:
            try:
                result = listener(target)
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                # The change is stored and visible here; other replicas catch up within the TTL.
                log.exception("model config change listener failed for %s", target)
                result = False
            if result is False:
                delivered = False
        return delivered

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)
