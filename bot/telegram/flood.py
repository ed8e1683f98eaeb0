"""Flood control: wait out Telegram's 429 and retry the call, at the HTTP session level.

Telegram answers `429 Too Many Requests` with `parameters.retry_after` (seconds) when a bot sends
too fast (about 1 message/s per chat, 20/min per group, 30/s overall). aiogram raises
`TelegramRetryAfter`; this request middleware sleeps `retry_after` (plus a little jitter so that
many waiting calls do not hit Telegram in the same instant) and makes the same call again, a bounded
number of times. A wait longer than `max_wait` is not slept: the error goes to the caller, who
knows better whether the call is still worth making.

Telegram's own 5xx answers (`TelegramServerError`, e.g. 502 while it restarts) are retried a few
times with a short backoff too: the request did not take effect. Network errors are *not* retried
here, since a `sendMessage` that timed out may have been delivered.

A "can't parse entities" 400 is not flood control: `ReplyStreamer` resends such text plain.

Calls that must not be lost (the final delivery of a reply) run under `patient()`: there every
429 is waited out, however many and however long, so flood control delays the reply but never
drops it. The limits above are for what can be skipped (live drafts and edits). A shutdown bounds
the patience: it cancels updates still running at its deadline.

    bot.session.middleware(FloodControlMiddleware(max_wait=30))

    with patient():
        await bot.send_message(chat_id, text)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter, TelegramServerError
from aiogram.methods.base import Response, TelegramMethod, TelegramType

if TYPE_CHECKING:
    from aiogram import Bot

log = logging.getLogger(__name__)

# Set by `patient()` for the calls made inside it (in this task and the tasks it starts).
_patient: ContextVar[bool] = ContextVar("telegram_flood_patient", default=False)


@contextmanager
def patient() -> Iterator[None]:
    """Inside: Bot API calls wait out every 429, with no limit on retries or on the wait."""
    token = _patient.set(True)
    try:
        yield
    finally:
        _patient.reset(token)


class FloodControlMiddleware(BaseRequestMiddleware):
    """Retry a Bot API call after `retry_after` on 429, and briefly on Telegram's 5xx.

    `max_retries`: how many 429s one call may wait out; `max_wait`: the longest single wait (s);
    `server_error_retries` / `server_error_delay`: retries of 5xx, with doubling delay.
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        max_wait: float = 60.0,
        server_error_retries: int = 2,
        server_error_delay: float = 0.5,
        jitter: float = 0.1,
    ) -> None:
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.server_error_retries = server_error_retries
        self.server_error_delay = server_error_delay
        self.jitter = jitter
        self.waits = 0  # how many 429s were waited out (for metrics and tests)

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        floods = 0
        server_errors = 0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                name = type(method).__name__
                limited = floods >= self.max_retries or exc.retry_after > self.max_wait
                if limited and not _patient.get():
                    log.warning(
                        "Telegram flood control on %s: giving up (retry_after=%ss, attempt %d)",
                        name,
                        exc.retry_after,
                        floods + 1,
                    )
                    raise
                floods += 1
                self.waits += 1
                delay = exc.retry_after + random.uniform(0, self.jitter)
                log.info("Telegram flood control on %s: waiting %.1fs", name, delay)
                await asyncio.sleep(delay)
            except TelegramServerError:
                if server_errors >= self.server_error_retries:
                    raise
                delay = self.server_error_delay * (2**server_errors)
                server_errors += 1
                log.info("Telegram 5xx on %s: retrying in %.1fs", type(method).__name__, delay)
                await asyncio.sleep(delay)
