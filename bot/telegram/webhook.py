"""The bot's HTTP side: `/healthz` always, and the webhook endpoint when `WEBHOOK_URL` is set.

Telegram posts each update to the webhook with `X-Telegram-Bot-Api-Secret-Token`; a request
without the configured secret is refused with 401 before anything is parsed. Updates are stored in
the intake, then answered 200 and handled in tracked tasks, so a slow pipeline never makes Telegram
time out and re-deliver; on shutdown `drain()` waits for the tasks in flight.

The health endpoint answers 200 while the bot runs and 503 once shutdown has begun, so a load
balancer stops sending traffic before the process stops taking it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web

from bot.intake import IntakeError
from bot.telegram.chat_queue import RedisChatQueue, update_chat_id
from bot.telegram.intake_feed import UpdateFeeder

log = logging.getLogger(__name__)


def webhook_path(webhook_url: str) -> str:
    """The path Telegram will post to, taken from WEBHOOK_URL (default `/webhook`)."""
    path = urlsplit(webhook_url).path
    return path if path and path != "/" else "/webhook"


async def cancel_updates(pending: set[asyncio.Task[Any]], *, grace: float = 5.0) -> int:
    """Cancel updates still running at the shutdown deadline and wait (briefly) until they have
    unwound, so none of them touches storage after it closed. Returns how many were cancelled."""
    if not pending:
        return 0
    log.warning(
        "%d update(s) still running at the shutdown deadline: cancelled, kept in the intake for "
        "the next start",
        len(pending),
    )
    for task in pending:
        task.cancel()
    _, stuck = await asyncio.wait(pending, timeout=grace)
    if stuck:
        log.error("%d cancelled update(s) did not unwind within %.0f s", len(stuck), grace)
    return len(pending)


class TrackedRequestHandler(SimpleRequestHandler):
    """aiogram's handler, answering Telegram only once the update is stored in the intake.

    The update is then handled by the feeder (`bot.telegram.intake_feed`), which marks it done
    once answered; an update the intake cannot store is answered 503, so Telegram sends it
    again; one it stored before (a re-delivery) is answered 200 and not handled twice. With a
    `RedisChatQueue`, each update is queued for its chat before Telegram gets its 200, and
    handled only when every earlier update of that chat (on any replica) is done.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        *,
        feeder: UpdateFeeder,
        chat_queue: RedisChatQueue | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(dispatcher, bot, handle_in_background=True, **kwargs)
        self.accepting = True
        self.feeder = feeder
        self.chat_queue = chat_queue

    async def _handle_request_background(self, bot: Bot, request: web.Request) -> web.Response:
        body = await request.text()
        try:
            update = bot.session.json_loads(body)
        except ValueError:
            update = None
        update_id = update.get("update_id") if isinstance(update, dict) else None
        if not isinstance(update, dict) or not isinstance(update_id, int):
            log.warning("webhook: a request that is not an update; ignored")
            return web.json_response({}, dumps=bot.session.json_dumps)
        chat_id = update_chat_id(update)
        queue = self.chat_queue
        # Stored and queued for its chat in one write when the intake can (the Redis one).
        entry = queue.entry(chat_id, update_id) if queue and chat_id is not None else None
        head: bool | None = None
        try:
            if entry is not None:
                key, head = await self.feeder.intake.put_queued((update_id, chat_id, body), entry)
            else:
                (key,) = await self.feeder.intake.put([(update_id, chat_id, body)], offset=None)
        except IntakeError as exc:
            log.error(
                "webhook: could not store update %s (Telegram sends it again): %s", update_id, exc
            )
            return web.Response(status=503, text="cannot store the update now")
        if key is None:
            log.info("webhook: update %s was delivered before; not handled twice", update_id)
            return web.json_response({}, dumps=bot.session.json_dumps)
        ticket: tuple[int, int] | None = None
        if (
            queue is not None
            and chat_id is not None
            and (head is not None or await queue.register(chat_id, update_id))
        ):
            ticket = (chat_id, update_id)
        self.feeder.feed(update, key, queued=ticket, at_head=bool(head))
        return web.json_response({}, dumps=bot.session.json_dumps)

    @property
    def in_flight(self) -> int:
        return len(self.feeder.tasks)

    async def handle(self, request: web.Request) -> web.Response:
        if not self.accepting:
            # Telegram re-delivers an update that was not acknowledged: another replica, or this
            # one after its restart, will take it. Nothing is lost.
            return web.Response(status=503, text="shutting down")
        return await super().handle(request)

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, wait up to `timeout` s for updates in flight, cancel the rest.

        True when every update finished; False when some had to be cancelled (they stay in
        the intake: the next start, or another replica, answers them).
        """
        self.accepting = False
        pending = await self.feeder.wait(timeout)
        return not await cancel_updates(pending)

    async def close(self) -> None:
        # The bot session is closed by the app, which owns it.
        pass


class WebServer:
    """An aiohttp server with `/healthz`, plus the webhook route in webhook mode.

    `metrics`: when given, `GET /metrics` answers its counters as JSON (no secrets: counts only),
    e.g. the override table's database reads, which the load benchmark reports.
    """

    def __init__(
        self, host: str, port: int, *, metrics: Callable[[], Mapping[str, float]] | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._health)
        self._metrics = metrics
        if metrics is not None:
            self.app.router.add_get("/metrics", self._metrics_handler)
        self.healthy = True
        self.webhook: TrackedRequestHandler | None = None
        self._runner: web.AppRunner | None = None

    def add_webhook(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        path: str,
        secret: str | None,
        *,
        feeder: UpdateFeeder,
        chat_queue: RedisChatQueue | None = None,
    ) -> None:
        self.webhook = TrackedRequestHandler(
            dispatcher, bot, secret_token=secret, feeder=feeder, chat_queue=chat_queue
        )
        self.webhook.register(self.app, path=path)

    async def _health(self, request: web.Request) -> web.Response:
        if not self.healthy:
            return web.json_response({"status": "stopping"}, status=503)
        body: dict[str, Any] = {"status": "ok"}
        if self.webhook is not None:
            body["in_flight"] = self.webhook.in_flight
        return web.json_response(body)

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        return web.json_response(dict(self._metrics()))

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("HTTP server on %s:%d", self.host, self.port)

    async def stop_accepting(self, timeout: float) -> bool:
        self.healthy = False
        if self.webhook is not None:
            return await self.webhook.drain(timeout)
        return True

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
