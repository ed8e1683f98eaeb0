"""The composition root: builds the services once and owns their start and stop.

    async with build_services(settings) as services:
        result = await services.conversation.handle("support", user_id=1, chat_id=1, text="hi")

Start order: tracing -> storage -> call ledger writer -> providers -> model config (+ Redis
invalidation) -> runner. Stop order is the reverse, and it starts by draining the runner's
background steps so summaries and facts in flight are not lost, while the database and the model
clients they need are still open; the ledger writer's last write comes after the drain (so the
background steps' calls are in it) and before the database closes. SHUTDOWN_TIMEOUT bounds the
drain and the last flush of traces together: tracing gets what the drain left of it (at least a
second, so a slow drain still lets the last traces out).

The console (`bot.console`) and the Telegram bot (`bot.telegram.runtime.run_bot`) both use
`build_services`, so they share storage, model resolution and admin overrides exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bot.archives import ArchiveLimits, ArchiveService
from bot.config import ConfigError, Settings
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpec
from bot.observability.logs import register_secret
from bot.observatory.capture import LedgerProvider
from bot.observatory.pricing import Prices
from bot.observatory.reports import ChangeReports, pipeline_agents
from bot.observatory.stats import LedgerStats
from bot.observatory.writer import LedgerWriter
from bot.pipeline.observer import PipelineObserver
from bot.pipeline.pipelines import build_pipelines
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Pipeline
from bot.replay.keeper import ReplayKeeper
from bot.replay.run import Replayer
from bot.services.access import ACCESS_TARGET, AccessService, open_access_warning
from bot.services.budget_counters import create_counters
from bot.services.budget_ledger import LedgerSeeder
from bot.services.budgets import BUDGET_TARGET, Budgets, env_limits
from bot.services.conversation import ConversationService, KeyDecrypter
from bot.services.model_config import ModelConfigService, ProviderSource
from bot.services.model_resolution import ModelResolver
from bot.services.openrouter_models import OpenRouterModels
from bot.services.rate_limit import RateLimiter, create_rate_limiter
from bot.services.trials import TRIAL_TARGET, Trials
from bot.storage.repositories import Storage
from bot.tasks.service import TASK_TARGET, Tasks
from bot.trials.guard import TrialGuard

if TYPE_CHECKING:
    from bot.observability.tracing import Tracing

log = logging.getLogger(__name__)


class Providers(ProviderSource, Protocol):
    """The provider registry as the app uses it (`bot.llm.registry.ProviderRegistry`)."""

    async def close(self) -> None: ...


@dataclass(slots=True)
class Services:
    settings: Settings
    storage: Storage
    providers: Providers
    model_config: ModelConfigService
    resolver: ModelResolver
    observer: PipelineObserver
    runner: PipelineRunner
    pipelines: dict[str, Pipeline]
    conversation: ConversationService
    # OpenRouter's list of model ids, checked by `/setmodel` and `/catalog add` (Telegram and
    # console). The bot's own catalog of named models is in `model_config`'s snapshot.
    openrouter_models: OpenRouterModels | None = None
    # The one SHUTDOWN_TIMEOUT of a stop, shared by the Telegram side and the services' own close.
    shutdown: ShutdownDeadline | None = None
    # Users' archives (ingest, list, search) within ARCHIVE_MAX_FILES / ARCHIVE_MAX_MB.
    archives: ArchiveService | None = None
    # Who may use the bot (ACCESS_MODE, /users) and how fast (USER_MESSAGES_PER_MINUTE).
    access: AccessService | None = None
    rate_limiter: RateLimiter | None = None
    # The call ledger (LEDGER_ENABLED): its writer and the figures read from it.
    ledger: LedgerWriter | None = None
    stats: LedgerStats | None = None
    # CHANGE_REPORT_AFTER_CALLS / _HOURS: the before/after reports for the admins.
    reports: ChangeReports | None = None
    # Spending limits (BUDGET_*, /budget), checked before every model call.
    budgets: Budgets | None = None
    # Running trials (`/trial`): a share of an agent's users on a candidate model.
    trials: Trials | None = None
    # The trials' guardrails (with the ledger): a worse candidate stops itself.
    trial_guard: TrialGuard | None = None
    # `/replay`: each agent's newest real inputs (STORE_PROMPTS, REPLAY_KEEP) and their runner.
    replay_keeper: ReplayKeeper | None = None
    replayer: Replayer | None = None
    # `/task`: post-completion tasks, a background step after the turns they apply to.
    tasks: Tasks | None = None


def _key_decrypter(settings: Settings, scrub: list[object]) -> KeyDecrypter | None:
    """Users' own keys: decrypted with BOT_SECRET_KEY, and taught to the trace scrubber."""
    if settings.bot_secret_key is None:
        return None
    from bot.storage.crypto import KeyCipher

    cipher = KeyCipher.from_settings(settings)

    def decrypt(stored: str) -> str:
        plain = cipher.decrypt(stored)
        register_secret(plain)
        for tracing in scrub:
            add_secret = getattr(tracing, "add_secret", None)
            if add_secret is not None:
                add_secret(plain)
        return plain

    return decrypt


class ShutdownDeadline:
    """One SHUTDOWN_TIMEOUT for the whole stop: started by the first step of the shutdown."""

    # What the last step (the flush of traces) gets even when the ones before used it all up.
    FLOOR = 1.0

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._deadline: float | None = None

    def start(self) -> None:
        if self._deadline is None:
            self._deadline = self._clock() + self.timeout

    def at(self) -> float:
        """The deadline itself (on `clock`), starting the countdown if nothing has yet."""
        self.start()
        assert self._deadline is not None
        return self._deadline

    def remaining(self) -> float:
        return max(self.at() - self._clock(), min(self.FLOOR, self.timeout))


@asynccontextmanager
async def build_services(
    settings: Settings,
    *,
    storage: Storage | None = None,
    providers: Providers | None = None,
    observer: PipelineObserver | None = None,
) -> AsyncIterator[Services]:
    """Build, start, yield, and stop every service. Tests may inject storage/providers/observer."""
    async with AsyncExitStack() as stack:
        shutdown = ShutdownDeadline(settings.shutdown_timeout)
        tracing = None
        if observer is None:
            from bot.observability.tracing import create_tracing

            tracing = create_tracing(settings)
            stack.push_async_callback(_close_tracing, tracing, shutdown)
            observer = tracing.observer

        if storage is None:
            from bot.storage.factory import create_storage

            storage = create_storage(settings)
        await storage.connect()
        stack.push_async_callback(storage.close)

        ledger: LedgerWriter | None = None
        if settings.ledger_enabled:
            ledger = LedgerWriter(storage.ledger, retention_days=settings.ledger_retention_days)
            await ledger.start()
            stack.push_async_callback(_close_ledger, ledger, shutdown)
        keeper = await _replay_keeper(settings, storage, ledger is not None)
        if keeper is not None:
            stack.push_async_callback(_close_keeper, keeper, shutdown)

        if providers is None:
            from bot.llm.registry import ProviderRegistry, validate_settings

            problems = validate_settings(settings)
            if problems:
                raise ConfigError("The model configuration cannot work:\n" + "\n".join(problems))
            traced = tracing.wrap_provider if tracing is not None and tracing.enabled else None
            providers = ProviderRegistry(settings, wrap=_wrapper(ledger, traced, keeper))
        stack.push_async_callback(providers.close)

        model_config = ModelConfigService.from_settings(
            settings,
            storage.model_config,
            storage.model_history,
            providers,
            catalog=storage.model_catalog,
        )
        stack.push_async_callback(model_config.close)
        access = AccessService.from_settings(settings, storage.access)
        warning = open_access_warning(settings)
        if warning is not None:
            log.warning("%s", warning)
        rate_limiter = create_rate_limiter(settings)
        stack.push_async_callback(rate_limiter.close)
        counters = create_counters(settings)
        stack.push_async_callback(counters.close)
        # The ledger's price table prices the reservations too (one copy of the data).
        prices = ledger.prices if ledger is not None else Prices()
        budgets = Budgets.from_settings(settings, storage.budgets, counters, rates=prices.rates)
        # Closed before the counters (the stack unwinds in reverse): settlements still going.
        stack.push_async_callback(budgets.drain)
        if ledger is not None:
            budgets.seeder = LedgerSeeder(storage.ledger)
        trials = Trials(storage.trials, ttl=settings.model_config_ttl)
        tasks = Tasks(storage.tasks, ttl=settings.model_config_ttl)
        # Read once now: the task names are model targets (`/setmodel <task>`) from the start.
        await tasks.current()
        if tracing is not None and tracing.enabled:
            tasks.scorer = tracing.score
        if settings.redis_url:
            from bot.services.override_events import OverrideEvents

            def on_change(target: str | None) -> None:
                # Access changes ride the same channel as "access:<id>".
                if target is not None and target.startswith(ACCESS_TARGET):
                    access.invalidate()
                elif target is not None and target.startswith(BUDGET_TARGET):
                    budgets.invalidate()
                elif target is not None and target.startswith(TRIAL_TARGET):
                    trials.invalidate()
                elif target is not None and target.startswith(TASK_TARGET):
                    tasks.invalidate()
                else:
                    model_config.invalidate()

            events = OverrideEvents(settings.redis_url, on_change)
            await events.start()
            stack.push_async_callback(events.close)
            model_config.add_change_listener(events.publish)
            access.add_change_listener(lambda subject: events.publish(f"{ACCESS_TARGET}{subject}"))
            budgets.add_change_listener(lambda scope: events.publish(f"{BUDGET_TARGET}{scope}"))
            trials.add_change_listener(events.publish)
            tasks.add_change_listener(events.publish)

        resolver = ModelResolver(settings, providers, model_config, trials=trials)
        budgets.downgrade = ResolverDowngrade(resolver)
        replayer = None
        if keeper is not None:
            replayer = Replayer(
                storage.replay,
                storage.settings,
                resolver.candidate_chain,
                budgets.rates,
                observer,
                timeout=settings.step_timeout,
                tasks=tasks.current,
                task_chain=_task_chain(resolver),
            )
            stack.push_async_callback(replayer.close)
        runner = PipelineRunner(observer, step_timeout=settings.step_timeout)
        stack.push_async_callback(_drain, runner, shutdown)
        archives = ArchiveService(
            storage.archives,
            ArchiveLimits.from_megabytes(settings.archive_max_files, settings.archive_max_mb),
        )
        pipelines = build_pipelines(
            storage, summary_every=settings.summary_every, archives=archives
        )
        conversation = ConversationService(
            storage,
            runner,
            pipelines,
            resolver=resolver,
            default_llm=resolver.shared_chain(settings.default_spec),
            decrypt_key=_key_decrypter(settings, [tracing] if tracing is not None else []),
            prompt_budget=settings.prompt_budget_tokens,
            ledger=ledger is not None,
            ledger_writer=ledger,
            archives_known=archives.note_active,
        )
        # Before the storage closes: messages queued while the database was down get a last try.
        stack.push_async_callback(_close_continuity, conversation, shutdown)
        conversation.budgets = budgets
        conversation.tasks = tasks
        openrouter_models = OpenRouterModels(settings.openrouter_base_url)
        stack.push_async_callback(openrouter_models.close)
        budgets.add_price_source("openrouter", openrouter_models.rates)
        if settings.openrouter_api_key is not None:
            # The catalog's prices make the reservations of OpenRouter calls; fetched when a
            # budget may apply (at start when the environment sets one, else on /budget).
            budgets.prefetch = openrouter_models.prefetch
            if env_limits(settings):
                prefetch = asyncio.create_task(openrouter_models.prefetch())
                stack.push_async_callback(_cancel, prefetch)
        stats = LedgerStats(storage.ledger, storage.model_history, pipeline_agents(pipelines))
        reports = (
            ChangeReports(
                storage.ledger,
                storage.model_history,
                after_calls=settings.change_report_after_calls,
                after_hours=settings.change_report_after_hours,
                pipelines=pipeline_agents(pipelines),
            )
            if ledger is not None
            else None
        )
        if ledger is not None:
            # Score tasks' results next to the 👍 (they are credited through the ledger).
            stats.scores = storage.tasks
            if reports is not None:
                reports.scores = storage.tasks
        yield Services(
            settings=settings,
            storage=storage,
            providers=providers,
            model_config=model_config,
            resolver=resolver,
            observer=observer,
            runner=runner,
            pipelines=pipelines,
            conversation=conversation,
            openrouter_models=openrouter_models,
            shutdown=shutdown,
            archives=archives,
            access=access,
            rate_limiter=rate_limiter,
            ledger=ledger,
            stats=stats,
            reports=reports,
            budgets=budgets,
            trials=trials,
            trial_guard=TrialGuard(trials, storage.ledger) if ledger is not None else None,
            replay_keeper=keeper,
            replayer=replayer,
            tasks=tasks,
        )


def _wrapper(
    ledger: LedgerWriter | None,
    traced: Callable[[LLMProvider], LLMProvider] | None,
    keeper: ReplayKeeper | None = None,
) -> Callable[[LLMProvider], LLMProvider] | None:
    """Each leaf provider: recorded in the ledger (and its inputs kept for `/replay`), inside
    its tracing (either may be off)."""
    if ledger is None:
        return traced

    def wrap(leaf: LLMProvider) -> LLMProvider:
        recorded = LedgerProvider(leaf, ledger, keeper)
        return traced(recorded) if traced is not None else recorded

    return wrap


async def _replay_keeper(settings: Settings, storage: Storage, ledger: bool) -> ReplayKeeper | None:
    """The keeper of replay inputs, or None: STORE_PROMPTS=false (inputs kept before are
    deleted, so none stay behind) or no ledger (the capture is the ledger's wrapper)."""
    if not settings.store_prompts:
        try:
            gone = await storage.replay.prune(0)
        except Exception as exc:
            log.warning("STORE_PROMPTS=false: the kept replay inputs could not be deleted: %s", exc)
        else:
            if gone:
                log.info("STORE_PROMPTS=false: deleted %d kept replay inputs", gone)
        return None
    if not ledger:
        return None
    keeper = ReplayKeeper(storage.replay, keep=settings.replay_keep)
    await keeper.start()
    return keeper


def _task_chain(resolver: ModelResolver) -> Callable[[str], Awaitable[LLMProvider]]:
    """A task's provider, resolved by its name like a turn's (its override, on shared keys)."""

    async def chain(name: str) -> LLMProvider:
        return (await resolver.resolve(name)).provider

    return chain


async def _close_keeper(keeper: ReplayKeeper, shutdown: ShutdownDeadline) -> None:
    await keeper.close(shutdown.remaining())


async def _close_ledger(ledger: LedgerWriter, shutdown: ShutdownDeadline) -> None:
    await ledger.close(shutdown.remaining())


async def _close_continuity(conversation: ConversationService, shutdown: ShutdownDeadline) -> None:
    shutdown.start()
    await conversation.continuity.close(timeout=shutdown.remaining())


class ResolverDowngrade:
    """The budgets' `downgrade:<model>`: read by the resolver, on the shared keys."""

    def __init__(self, resolver: ModelResolver) -> None:
        self._resolver = resolver

    def interpret(self, model: str) -> ModelSpec:
        return self._resolver.interpret(model).spec

    def chain(self, spec: ModelSpec, preference: str) -> LLMProvider:
        return self._resolver.shared_chain(spec, preference)  # type: ignore[arg-type]


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


async def _drain(runner: PipelineRunner, shutdown: ShutdownDeadline) -> None:
    shutdown.start()
    cancelled = await runner.drain(shutdown.remaining())
    if cancelled:
        log.warning("%d background step(s) cancelled at shutdown", cancelled)


async def _close_tracing(tracing: Tracing, shutdown: ShutdownDeadline) -> None:
    await tracing.aclose(timeout=shutdown.remaining())
