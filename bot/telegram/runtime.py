"""Run the Telegram bot: long polling (default) or webhook, until SIGTERM/SIGINT; then stop cleanly.

Every update is stored in the intake (`bot.intake`: the SQLite file beside the database, or a
Redis stream with `REDIS_URL`) before Telegram is told it was received, and marked done once
answered; at start-up, what an earlier run left open (a SIGTERM past the deadline, a crash, a
SIGKILL) is answered first, in order (`UpdateFeeder.recover`), before new updates are taken.

Shutdown, in this order, so nothing is half-written, within ONE deadline (`SHUTDOWN_TIMEOUT`
after the signal) that every waiting step below shares:
1. `/healthz` answers 503 and no new update is taken (polling stops; the webhook answers 503, so
   Telegram re-delivers to another replica or to this one after its restart);
2. updates in flight finish their pipelines; those still running at the deadline are cancelled
   (and logged), so none of them meets a closed database; they stay in the intake;
3. in polling mode, the stored offset is confirmed to Telegram (one `getUpdates`);
4. background steps (summaries, facts) drain with what is left of the deadline, the rest is
   cancelled; then the Telegram side closes (HTTP server, FSM storage, chat queue, bot session);
5. traces flush, clients and the database close (`build_services` does this on exit, in reverse
   start order, on the same deadline (`Services.shutdown`): its own drain of background steps
   finds nothing left, and the flush gets what remains, at least a second).

So a process manager that waits a little longer than SHUTDOWN_TIMEOUT (`docker run
--stop-timeout`, Compose's `stop_grace_period`) never has to kill the bot.

With `REDIS_URL`, chat state (FSM) lives in Redis and each chat's updates are serialized across
replicas; without it both are in process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.fsm.storage.base import BaseEventIsolation, BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage

from bot.app import Services, build_services
from bot.config import ConfigError, Settings
from bot.intake import Intake, open_intake
from bot.services.redis_client import redis_client
from bot.telegram.chat_queue import RedisChatQueue
from bot.telegram.dispatcher import (
    BOT_COMMANDS,
    build_dispatcher,
    create_bot,
    install_notifiers,
)
from bot.telegram.fsm_storage import ResilientStorage
from bot.telegram.intake_feed import UpdateFeeder
from bot.telegram.ordering import RedisChatEventIsolation, build_event_isolation
from bot.telegram.polling import GetRawUpdates, Poller
from bot.telegram.warmup import freeze_startup_heap, pin_response_types
from bot.telegram.webhook import WebServer, cancel_updates, webhook_path

log = logging.getLogger(__name__)

# How long start-up keeps trying to reach the Bot API (network down, Telegram 5xx) before the
# process exits with a message; a supervisor (Docker's restart policy) takes it from there.
STARTUP_WAIT = 60.0


class TelegramUnreachable(RuntimeError):
    """The Bot API did not answer at start-up within STARTUP_WAIT."""


def build_fsm(
    settings: Settings, *, queued: bool = False
) -> tuple[BaseStorage, BaseEventIsolation]:
    """Chat state and per-chat ordering: in Redis with several replicas, else in process.

    `queued`: the webhook's Redis chat queue already serializes each chat across replicas, so
    the isolation only needs to keep order inside this process.
    """
    isolation = build_event_isolation(None if queued else settings.redis_url)
    if settings.redis_url:
        from aiogram.fsm.storage.redis import RedisStorage

        redis_storage = RedisStorage(redis_client(settings.redis_url))
        return ResilientStorage(redis_storage), isolation
    return MemoryStorage(), isolation


class BotRuntime:
    """One running bot process: the dispatcher, its update source and its shutdown."""

    def __init__(
        self,
        services: Services,
        bot: Bot | None = None,
        *,
        startup_wait: float = STARTUP_WAIT,
        intake: Intake | None = None,
    ) -> None:
        self.services = services
        self.startup_wait = startup_wait
        self.settings = services.settings
        self.bot = bot or create_bot(self.settings)
        # Across replicas (webhook + Redis), a chat's updates wait for each other in update order.
        self.chat_queue: RedisChatQueue | None = None
        if self.webhook_mode and self.settings.redis_url:
            self.chat_queue = RedisChatQueue.from_url(self.settings.redis_url)
        self.fsm_storage, isolation = build_fsm(self.settings, queued=self.chat_queue is not None)
        self.dispatcher: Dispatcher = build_dispatcher(
            services, fsm_storage=self.fsm_storage, events_isolation=isolation
        )
        self.isolation = isolation
        self.intake: Intake = intake or open_intake(self.settings, bot_id=self.bot.id)
        self.feeder = UpdateFeeder(
            self.dispatcher,
            self.bot,
            self.intake,
            isolation=isolation,
            chat_queue=self.chat_queue,
        )
        self.poller = Poller(
            self.bot,
            self.intake,
            self.feeder,
            allowed_updates=self.dispatcher.resolve_used_update_types(),
        )
        install_notifiers(services, self.bot)
        self.server = WebServer(
            self.settings.webhook_host, self.settings.webhook_port, metrics=self.metrics
        )
        self.stopping = asyncio.Event()
        self._polling: asyncio.Task[None] | None = None
        self._reclaiming: asyncio.Task[None] | None = None

    @property
    def webhook_mode(self) -> bool:
        return bool(self.settings.webhook_url)

    def metrics(self) -> dict[str, float]:
        """Counters for `/metrics` (the load benchmark reads the override table's reads)."""
        model_config = self.services.model_config
        return {
            "model_config_reads": model_config.reads,
            "model_config_failed_reads": model_config.failed_reads,
            # Summaries and facts still being written after their replies went out.
            "background_steps": len(self.services.runner.background_jobs()),
            # Background steps that waited for the replies (decision 0028), that a later turn
            # of their chat replaced, and that waited the longest allowed and started anyway.
            "background_deferred": self.services.runner.lane.deferred,
            "background_superseded": self.services.runner.lane.superseded,
            "background_overdue": self.services.runner.lane.overdue,
            "updates_in_flight": len(self.feeder.tasks),
            "undecodable_updates": self.feeder.undecodable,
            # Spans the bot's tracing made (0 when off): the benchmark checks they all arrive.
            "spans_made": getattr(self.services.observer, "spans_made", 0),
        }

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing what is in flight")
            self.stopping.set()

    async def start(self) -> None:
        await self.intake.start()
        await self._reach_telegram()
        allowed = self.dispatcher.resolve_used_update_types()
        if self.webhook_mode:
            assert self.settings.webhook_url is not None
            secret = self.settings.webhook_secret
            self.server.add_webhook(
                self.dispatcher,
                self.bot,
                webhook_path(self.settings.webhook_url),
                secret.get_secret_value() if secret else None,
                feeder=self.feeder,
                chat_queue=self.chat_queue,
            )
        try:
            await self.server.start()
        except OSError as exc:
            if self.webhook_mode:
                raise
            # In polling mode the HTTP server only serves /healthz: not worth refusing to run.
            log.warning("health endpoint not started on port %d: %s", self.server.port, exc)
        await self._announce_commands()
        await self.dispatcher.emit_startup(bot=self.bot, **self.dispatcher.workflow_data)
        if self.webhook_mode:
            assert self.settings.webhook_url is not None
            secret = self.settings.webhook_secret
            # What an earlier run left, before Telegram sends anything new.
            await self.feeder.recover()
            await self.bot.set_webhook(
                self.settings.webhook_url,
                secret_token=secret.get_secret_value() if secret else None,
                allowed_updates=allowed,
            )
            log.info("webhook registered; serving updates on port %d", self.server.port)
        else:
            # A webhook left from an earlier deployment would make getUpdates fail.
            await self.bot.delete_webhook(drop_pending_updates=False)
            # One process polls a bot: every open entry and chat lock is an earlier run's.
            if isinstance(self.isolation, RedisChatEventIsolation):
                dropped = await self.isolation.clear(self.bot.id)
                if dropped:
                    log.info("dropped %d chat lock(s) left by an earlier run", dropped)
            await self.feeder.recover(everything=True)
            self._polling = asyncio.create_task(self.poller.run(), name="polling")
            self._polling.add_done_callback(self._polling_ended)
        if self.settings.redis_url:
            # Webhook replicas share the stream: what one that died left is taken up by another.
            # Polling: what the first look missed (Redis slow or away at start-up).
            self._reclaiming = asyncio.create_task(
                self._reclaim_orphans(everything=not self.webhook_mode), name="reclaim"
            )

    async def _reclaim_orphans(self, *, everything: bool, every: float = 5.0) -> None:
        while True:
            await asyncio.sleep(every)
            await self.feeder.recover(everything=everything)

    async def _reach_telegram(self) -> None:
        """`getMe` before anything else (see STARTUP_WAIT): a rejected token is a configuration
        error, an unreachable Bot API is retried with backoff, then `TelegramUnreachable`."""
        base = self.settings.telegram_api_base or "https://api.telegram.org"
        deadline = time.monotonic() + self.startup_wait
        delay = 0.5
        while True:
            try:
                me = await self.bot.get_me()
            except TelegramUnauthorizedError as exc:
                raise ConfigError(
                    "TELEGRAM_BOT_TOKEN was rejected by Telegram (401 Unauthorized): copy the "
                    "token from @BotFather again"
                ) from exc
            except (TelegramNetworkError, TelegramServerError, TelegramRetryAfter) as exc:
                if self.stopping.is_set() or time.monotonic() + delay > deadline:
                    raise TelegramUnreachable(
                        f"cannot reach the Telegram Bot API at {base} ({exc}); check the network "
                        "or TELEGRAM_API_BASE"
                    ) from exc
                log.warning("cannot reach Telegram at %s (%s); retrying in %.1fs", base, exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, 10.0)
            else:
                log.info("connected to Telegram as @%s", me.username)
                return

    def _polling_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("polling stopped with an error: %r", task.exception())
            self.request_stop()

    async def _announce_commands(self) -> None:
        try:
            await self.bot.set_my_commands(BOT_COMMANDS)
        except Exception as exc:  # a cosmetic call; never a reason not to start
            log.warning("could not set the command menu: %s", type(exc).__name__)

    async def stop(self) -> None:
        """Stop within SHUTDOWN_TIMEOUT in all, updates and background steps together (see the
        module docstring); cancelled updates get a few more seconds to unwind."""
        # The services' own deadline, started here: the drain and the trace flush that follow
        # when `build_services` exits get what is left of it, not a SHUTDOWN_TIMEOUT of their own.
        shutdown = self.services.shutdown
        deadline = (
            shutdown.at()
            if shutdown is not None
            else time.monotonic() + self.settings.shutdown_timeout
        )
        self.server.healthy = False
        if self._reclaiming is not None:
            self._reclaiming.cancel()
            await asyncio.wait([self._reclaiming])
        if self.webhook_mode:
            await self.server.stop_accepting(_left(deadline))
        else:
            self.poller.stop()
            if self._polling is not None and not self._polling.done():
                # A getUpdates in flight has confirmed nothing yet: cancelling it loses nothing.
                self._polling.cancel()
                await asyncio.wait([self._polling])
            await cancel_updates(await self.feeder.wait(_left(deadline)))
            await self._confirm_offset()
        await self.dispatcher.emit_shutdown(bot=self.bot, **self.dispatcher.workflow_data)
        # The same deadline, not a new one: `build_services` would otherwise give the background
        # steps another full SHUTDOWN_TIMEOUT after the updates had used theirs.
        cancelled = await self.services.runner.drain(_left(deadline))
        if cancelled:
            log.warning("%d background step(s) cancelled at the shutdown deadline", cancelled)
        await self.server.close()
        await self.fsm_storage.close()
        if self.chat_queue is not None:
            await self.chat_queue.close()
        await self.bot.session.close()
        await self.intake.close()

    async def _confirm_offset(self) -> None:
        # What was stored is confirmed, so a deployment switching to the webhook starts clean.
        if self.poller.offset is None:
            return
        try:
            await self.bot(
                GetRawUpdates(offset=self.poller.offset, limit=1, timeout=0), request_timeout=5
            )
        except Exception as exc:
            log.warning("could not confirm handled updates to Telegram: %s", type(exc).__name__)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _install_signal_handlers(runtime: BotRuntime) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, runtime.request_stop)


async def run_bot(settings: Settings) -> int:
    async with build_services(settings) as services:
        runtime = BotRuntime(services)
        _install_signal_handlers(runtime)
        try:
            try:
                await runtime.start()
            except TelegramUnreachable as exc:
                log.error("%s", exc)
                return 1
            # Start-up is done: stop paying per message for what it left behind (see warmup).
            pin_response_types()
            freeze_startup_heap()
            await runtime.stopping.wait()
        finally:
            await runtime.stop()
    log.info("stopped cleanly")
    return 0
