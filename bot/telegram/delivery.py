"""Patient delivery: a final reply goes out through Telegram's 5xx and network errors.

    message_ids = await patiently(lambda: send_the_reply(), window=120, pending=describe)

retries `send_the_reply` with backoff (1, 2, 4, 5, 5 ... s) for up to `window` seconds
(`DELIVERY_RETRY_SECONDS`) while Telegram answers 5xx or cannot be reached; a 4xx goes to the
caller at once (the request itself is wrong). Before the first wait, the reply still to deliver
(`pending()`, JSON) is stored in the intake with its update marked answered, in one write: a
restart within the window delivers it (`resume_reply`) instead of answering the update again.

Why: the final `sendMessage` used to be retried twice (0.5 s, 1 s), then given up: a 2 s outage
of `sendMessage` lost the paid-for answer, and from 5 s on the apology too (issue 19).

A network error may hide a message that did arrive: a retry can then show it twice. Twice is
better than never for the one message that carries the answer.

The intake entry being handled reaches this module through a context variable set by the
update feeder (`bot.telegram.intake_feed`), so the routers need not pass it along.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from aiogram.exceptions import TelegramNetworkError, TelegramServerError

from bot.intake import Intake, IntakeError

log = logging.getLogger(__name__)

T = TypeVar("T")

DELIVERY_RETRY_SECONDS = 120.0
FIRST_WAIT = 1.0
LONGEST_WAIT = 5.0

RETRYABLE = (TelegramServerError, TelegramNetworkError)


@dataclass(slots=True)
class IntakeTicket:
    """The intake entry of the update being handled (None key: not stored, e.g. the console)."""

    intake: Intake
    key: str | None
    update_id: int


current_ticket: ContextVar[IntakeTicket | None] = ContextVar("intake_ticket", default=None)


@dataclass(frozen=True, slots=True)
class PendingReply:
    """What a restart needs to deliver a reply: its chunks (Telegram HTML) and where they go."""

    chat_id: int
    chunks: list[str]
    thread: int | None = None
    reply_to: int | None = None
    # Messages the chunks replace (a placeholder), deleted once the chunks are out.
    replace: tuple[int, ...] = ()
    until: float = 0.0  # unix time the window closes

    def dumps(self) -> str:
        return json.dumps(
            {
                "chat": self.chat_id,
                "chunks": self.chunks,
                "thread": self.thread,
                "reply_to": self.reply_to,
                "replace": list(self.replace),
                "until": self.until,
            }
        )

    @classmethod
    def loads(cls, body: str) -> PendingReply:
        data: dict[str, Any] = json.loads(body)
        return cls(
            chat_id=int(data["chat"]),
            chunks=[str(c) for c in data.get("chunks", [])],
            thread=data.get("thread"),
            reply_to=data.get("reply_to"),
            replace=tuple(int(m) for m in data.get("replace", [])),
            until=float(data.get("until", 0.0)),
        )


async def patiently(
    send: Callable[[], Awaitable[T]],
    *,
    window: float,
    pending: Callable[[float], PendingReply | None] | None = None,
    ticket: IntakeTicket | None = None,
) -> T:
    """`send()`, again and again through 5xx and network errors for `window` seconds.

    `pending(until)`: the reply as it stands (what is left to send), stored before the first
    wait so a restart finds it. `ticket`: the intake entry (default: the current update's).
    """
    ticket = ticket if ticket is not None else current_ticket.get()
    deadline = time.monotonic() + window
    until = time.time() + window
    delay = FIRST_WAIT
    stored: str | None = None
    try:
        while True:
            try:
                return await send()
            except RETRYABLE as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error(
                        "gave up delivering a reply after %.0f s of Telegram failures: %s",
                        window,
                        type(exc).__name__,
                    )
                    raise
                if stored is None and ticket is not None and pending is not None:
                    stored = await _defer(ticket, pending(until))
                log.warning(
                    "Telegram failed a reply (%s); retrying in %.0f s (%.0f s left)",
                    type(exc).__name__,
                    min(delay, left),
                    left,
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, LONGEST_WAIT)
    except asyncio.CancelledError:
        # Shutdown during the wait: the stored reply is the restart's to deliver.
        stored = None
        raise
    finally:
        if stored is not None and ticket is not None:
            await _close(ticket.intake, stored)


async def _defer(ticket: IntakeTicket, reply: PendingReply | None) -> str | None:
    if reply is None:
        return None
    try:
        key = await ticket.intake.defer_reply(
            ticket.key, ticket.update_id, reply.chat_id, reply.dumps()
        )
    except IntakeError as exc:
        log.warning("could not store a pending reply (a restart now would lose it): %s", exc)
        return None
    # The update is answered as far as a restart is concerned: the stored reply stands for it.
    ticket.key = None
    return key


async def _close(intake: Intake, key: str) -> None:
    try:
        await intake.done(key)
    except IntakeError as exc:
        log.warning("could not mark a delivered reply done (may go out again): %s", exc)
