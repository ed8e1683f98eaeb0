"""Updates from the intake into the dispatcher: decoded one by one, marked done once answered.

    feeder = UpdateFeeder(dispatcher, bot, intake, stale_after=600)
    await feeder.recover()                       # what an earlier process left: in update order
    feeder.feed(raw_update, key)                 # a stored update (polling or webhook)
    await feeder.wait(timeout)                   # shutdown: updates in flight

An update is marked done in the intake when its handling ends, however it ended, except when it
was cancelled (the shutdown deadline): then it stays, and the next start answers it. One that
cannot be decoded (a Bot API newer or older than aiogram) is logged by its id and kinds, never its
text, and skipped: it never stops the others (issue 19, item 6).

After a restart, `recover()` starts the open entries in update order before any new update, so
the per-chat isolation's FIFO locks keep each chat's order (a stored reply first, then the updates
after it). An update older than `stale_after` seconds (STALE_UPDATE_SECONDS) when its turn comes
is not answered any more: its chat gets a short apology instead (`StaleUpdateMiddleware`, inside
the chat's lock, so the apology too comes in order). One that an earlier process took up
`MAX_ATTEMPTS` times without answering (it may be what crashed it) gets the apology too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.fsm.storage.base import BaseEventIsolation, StorageKey
from aiogram.methods import TelegramMethod
from aiogram.types import ReplyParameters, TelegramObject, Update
from pydantic import ValidationError

from bot.intake import REPLY, Intake, IntakeError, QueueEntry, Stored
from bot.telegram.chat_queue import RedisChatQueue
from bot.telegram.delivery import IntakeTicket, PendingReply, current_ticket, patiently
from bot.telegram.flood import patient
from bot.telegram.ordering import ChatEventIsolation
from bot.telegram.streaming import ReplyStreamer

log = logging.getLogger(__name__)

STALE_UPDATE_SECONDS = 600.0
MAX_ATTEMPTS = 3

STALE_APOLOGY = (
    "Sorry, I was away when you sent this and it is too late for a good answer now. "
    "Please send it again if you still need one."
)
GAVE_UP_APOLOGY = "Sorry, I couldn't answer this message: something on my side kept failing."

RECEIVED_AT = "intake_received_at"
GIVE_UP = "intake_give_up"


def update_kinds(raw: dict[str, Any]) -> str:
    """What an update carries, by field name only (what may be logged of it)."""
    return ",".join(sorted(k for k in raw if k != "update_id")) or "nothing"


class StaleUpdateMiddleware(BaseMiddleware):
    """Apologize instead of answering an update that waited too long (see the module docstring).

    Register as an outer middleware on `dp.update` after the dispatcher's own (inside the lock).
    """

    def __init__(self, stale_after: float, delivery_retry: float) -> None:
        self.stale_after = stale_after
        self.delivery_retry = delivery_retry

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        received_at = data.get(RECEIVED_AT)
        give_up = bool(data.get(GIVE_UP))
        if not give_up and (received_at is None or time.time() - received_at <= self.stale_after):
            return await handler(event, data)
        if isinstance(event, Update) and event.message is not None:
            message = event.message
            log.warning(
                "update %s %s: apologized instead of answering",
                event.update_id,
                "given up" if give_up else f"stale ({time.time() - (received_at or 0):.0f} s old)",
            )
            await self._apologize(
                data["bot"],
                message.chat.id,
                message.message_id,
                message.message_thread_id if message.is_topic_message else None,
                GAVE_UP_APOLOGY if give_up else STALE_APOLOGY,
            )
        return None

    async def _apologize(
        self, bot: Bot, chat_id: int, message_id: int, thread: int | None, text: str
    ) -> None:
        reply = ReplyParameters(message_id=message_id, allow_sending_without_reply=True)

        async def send() -> object:
            return await bot.send_message(
                chat_id=chat_id, text=text, message_thread_id=thread, reply_parameters=reply
            )

        with patient():
            await patiently(
                send,
                window=self.delivery_retry,
                pending=lambda until: PendingReply(chat_id, [text], thread, message_id, (), until),
            )


class UpdateFeeder:
    """Runs stored updates through the dispatcher; see the module docstring."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        intake: Intake,
        *,
        isolation: BaseEventIsolation,
        chat_queue: RedisChatQueue | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.bot = bot
        self.intake = intake
        self.isolation = isolation
        self.chat_queue = chat_queue
        self.tasks: set[asyncio.Task[None]] = set()
        self.undecodable = 0
        # A queued chat's updates in this process wait here, in the order they were fed, before
        # they wait for the chat's head in Redis: only the first of them asks Redis (once, when
        # the one before it has left), the others wait at no cost. Each polling Redis every
        # 20 ms made a burst's backlog most of the bot's CPU (2026-12-03).
        self._local_order = ChatEventIsolation()

    def feed(
        self,
        raw: dict[str, Any],
        key: str | None,
        *,
        received_at: float | None = None,
        queued: tuple[int, int] | None = None,
        at_head: bool = False,
        give_up: bool = False,
    ) -> asyncio.Task[None]:
        """Handle one update in a task of its own. `queued`: (chat, update id) registered in
        the Redis chat queue, whose turn it waits for; `at_head`: it joined at the head."""
        update_id = raw.get("update_id")
        ticket = IntakeTicket(self.intake, key, update_id if isinstance(update_id, int) else 0)
        task = asyncio.create_task(
            self._run(raw, ticket, received_at or time.time(), queued, at_head, give_up),
            name=f"update-{update_id}",
        )
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(
        self,
        raw: dict[str, Any],
        ticket: IntakeTicket,
        received_at: float,
        queued: tuple[int, int] | None,
        at_head: bool,
        give_up: bool,
    ) -> None:
        current_ticket.set(ticket)  # this task's own context: the delivery finds its entry
        async with self._in_chat_order(queued):
            leave: QueueEntry | None = None  # the chat queue entry to leave with the done
            try:
                update = self.decode(raw)
                if update is not None:
                    if queued is not None and self.chat_queue is not None:
                        async with self.chat_queue.turn(*queued, at_head=at_head) as place:
                            await self._handle(update, received_at, give_up)
                            leave = place.hand_over()
                    else:
                        await self._handle(update, received_at, give_up)
            except Exception:
                log.exception("update %s failed outside its handlers", ticket.update_id)
            # Not on cancellation (above, CancelledError is no Exception): a restart answers it.
            left = False
            try:
                left = ticket.key is not None and await self._done(ticket.key, leave)
            finally:
                # Cancelled at the deadline meanwhile, a reply deferred, or the file's entry: the
                # queue is left on its own, or the chat would wait `stale_after` on every replica.
                if leave is not None and not left and self.chat_queue is not None:
                    await self.chat_queue.leave(leave)

    @asynccontextmanager
    async def _in_chat_order(self, queued: tuple[int, int] | None) -> AsyncIterator[None]:
        """A queued update's wait behind its chat's earlier updates in this process, held
        until it is done (and out of the Redis queue), so the next one finds itself at the head
        at its first look."""
        if queued is None or self.chat_queue is None:
            yield
            return
        entered = False
        try:
            async with self._local_order.chat_lock((0, queued[0])):
                entered = True
                yield
        except asyncio.CancelledError:
            if not entered:
                # Cancelled before its turn (a shutdown deadline): out of the queue, or the
                # chat's next updates on every replica would wait `stale_after` behind it.
                await self.chat_queue.leave(self.chat_queue.entry(*queued))
            raise

    def decode(self, raw: dict[str, Any]) -> Update | None:
        try:
            return Update.model_validate(raw, context={"bot": self.bot})
        except ValidationError as exc:
            self.undecodable += 1
            # The update's fields would carry the user's text: only the id, kinds and error kinds.
            problems = sorted({str(e.get("type")) for e in exc.errors()})
            log.error(
                "update %s (%s) cannot be read (%s); skipped",
                raw.get("update_id"),
                update_kinds(raw),
                ", ".join(problems),
            )
            return None

    async def _handle(self, update: Update, received_at: float, give_up: bool) -> None:
        extra: dict[str, Any] = {RECEIVED_AT: received_at}
        if give_up:
            extra[GIVE_UP] = True
        response = await self.dispatcher.feed_update(self.bot, update, **extra)
        if isinstance(response, TelegramMethod):
            await self.dispatcher.silent_call_request(bot=self.bot, result=response)

    async def _done(self, key: str, leave: QueueEntry | None = None) -> bool:
        """Mark the entry done (and leave `leave` with it); True when the queue was left."""
        try:
            return await self.intake.done(key, leave=leave)
        except IntakeError as exc:
            log.warning(
                "could not mark an update answered (a restart may answer it twice): %s", exc
            )
            return False

    async def recover(self, *, everything: bool = False) -> int:
        """Start every open entry an earlier process left (see the module docstring)."""
        try:
            entries = await self.intake.reclaim(everything=everything)
        except IntakeError as exc:
            log.error("could not read the intake: %s", exc)
            return 0
        if entries:
            log.info("taking up %d update(s)/reply(ies) left by an earlier run", len(entries))
        for entry in entries:
            if entry.kind == REPLY:
                self._resume(entry)
                continue
            try:
                raw = json.loads(entry.body)
            except ValueError:
                log.error("intake entry %s is not JSON; dropped", entry.key)
                await self._done(entry.key)
                continue
            queued = None
            if (
                self.chat_queue is not None
                and entry.chat_id is not None
                and await self.chat_queue.register(entry.chat_id, entry.update_id)
            ):
                queued = (entry.chat_id, entry.update_id)
            self.feed(
                raw,
                entry.key,
                received_at=entry.received_at,
                queued=queued,
                give_up=entry.attempts > MAX_ATTEMPTS,
            )
        return len(entries)

    def _resume(self, entry: Stored) -> None:
        task = asyncio.create_task(self._deliver(entry), name=f"resume-{entry.key}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, entry: Stored) -> None:
        try:
            reply = PendingReply.loads(entry.body)
        except (ValueError, KeyError, TypeError):
            log.error("stored reply %s cannot be read; dropped", entry.key)
            await self._done(entry.key)
            return
        # In the chat's turn, like its updates: a stored reply goes out before later answers.
        key = StorageKey(bot_id=self.bot.id, chat_id=reply.chat_id, user_id=reply.chat_id)
        try:
            async with self.isolation.lock(key):
                streamer = ReplyStreamer(
                    self.bot,
                    reply.chat_id,
                    use_drafts=False,
                    message_thread_id=reply.thread,
                    reply_to_message_id=reply.reply_to,
                    render=str,
                )
                sent = await streamer.resend(reply)
                log.info("delivered a reply stored by an earlier run (%d message(s))", len(sent))
        except Exception as exc:
            log.error("could not deliver a stored reply to chat %s: %s", reply.chat_id, exc)
        await self._done(entry.key)

    async def wait(self, timeout: float) -> set[asyncio.Task[None]]:
        """Wait up to `timeout` s for the updates in flight; the ones still running."""
        tasks = set(self.tasks)
        if not tasks:
            return set()
        log.info("waiting for %d update(s) in flight", len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=max(0.1, timeout))
        return pending
