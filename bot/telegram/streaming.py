"""Show a reply while the model writes it, then deliver it whole, whatever Telegram says.

`ReplyStreamer` takes the model's Markdown as text deltas and keeps the chat up to date:

- private chats: `sendMessageDraft` (an ephemeral preview that animates as it grows), at most
  every `draft_interval` seconds, then the real `sendMessage`(s) at the end: a draft is not a
  message and expires, so the final send is what persists;
- groups (drafts work in private chats only), or when drafts fail: a placeholder message edited
  at most every `edit_interval` seconds, and extra messages once the reply outgrows one. Telegram
  allows about one message a second per chat and 20 a minute per group, edits included, so the
  default is 3 s in groups and 1.2 s in private chats; the final edit waits one second at least.

The final text is rendered to Telegram HTML (`formatting.markdown_to_html`) and split into
balanced chunks of at most 4096 visible characters (`splitting.split_html`). Nothing is lost:
a chunk Telegram refuses to parse is sent again as the plain text it would have shown; a chunk it
calls too long is split smaller and sent plain; an edit of a message that has gone is sent as a
new message that replaces it (and every later message of the reply, so the order holds; the old
ones are deleted, so no text shows twice); "message is not modified" counts as done. Live updates
are best effort (a failed draft or edit is logged and the next one tries again, and flood control
gives them only a few short waits); the final delivery waits out every 429 (`flood.patient`),
retries Telegram's 5xx and network errors for `delivery_retry` seconds (`delivery.patiently`,
the pending chunks stored so a restart delivers them), and raises only when Telegram refuses
plain text too, or that window passes.

    async with ReplyStreamer(bot, chat_id, reply_to_message_id=msg.message_id) as streamer:
        async for delta in llm.stream(...):
            await streamer.push(delta)
        message_ids = await streamer.finish()

or `message_ids = await ReplyStreamer(bot, chat_id).stream(deltas)`. The producer never waits
for Telegram: `push` only buffers; a background task sends the updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from types import TracebackType

from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
)
from aiogram.types import InlineKeyboardMarkup, ReplyParameters

from bot.telegram.delivery import DELIVERY_RETRY_SECONDS, PendingReply, patiently
from bot.telegram.flood import patient
from bot.telegram.formatting import escape, html_to_text, markdown_to_html
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.splitting import TELEGRAM_LIMIT, split_html, split_text

log = logging.getLogger(__name__)

HTML = "HTML"

# Seconds between live edits. Telegram: ~1 message/s per chat, ~20 messages/min per group.
PRIVATE_EDIT_INTERVAL = 1.2
GROUP_EDIT_INTERVAL = 3.0
# The final edit after a live one: Telegram's per-chat second (the group's minute budget is kept
# by the live pace; one final edit per reply does not break it).
FINAL_EDIT_GAP = 1.0


def is_parse_error(exc: TelegramAPIError) -> bool:
    return isinstance(exc, TelegramBadRequest) and "can't parse entities" in exc.message.lower()


def is_not_modified(exc: TelegramAPIError) -> bool:
    return isinstance(exc, TelegramBadRequest) and "message is not modified" in exc.message.lower()


def is_too_long(exc: TelegramAPIError) -> bool:
    return isinstance(exc, TelegramBadRequest) and any(
        s in exc.message.lower() for s in ("too long", "too_long")
    )


def is_message_gone(exc: TelegramAPIError) -> bool:
    text = exc.message.lower()
    return isinstance(exc, TelegramBadRequest) and (
        "message to edit not found" in text or "message can't be edited" in text
    )


@dataclass
class _Shown:
    """One chunk of the reply as shown: its message(s) and the HTML it was last set to.

    Normally one message; several when Telegram refused the chunk and it went out plain in pieces.
    """

    message_ids: list[int]
    html: str


class ReplyStreamer:
    """Stream one reply into one chat; see the module docstring.

    `private`: use drafts (default: `chat_id > 0`, Telegram's private chats); `use_drafts=False`
    forces the edit mode there too. `edit_interval` defaults to `GROUP_EDIT_INTERVAL` in groups
    and `PRIVATE_EDIT_INTERVAL` in private chats. `render` turns the accumulated text into
    Telegram HTML. After `finish`, `message_ids` are the messages that carry the reply, in order.
    """

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        private: bool | None = None,
        use_drafts: bool = True,
        message_thread_id: int | None = None,
        reply_to_message_id: int | None = None,
        render: Callable[[str], str] = markdown_to_html,
        limit: int = TELEGRAM_LIMIT,
        draft_interval: float = 0.4,
        edit_interval: float | None = None,
        placeholder: str = "…",
        budget: LiveUpdateBudget | None = None,
        delivery_retry: float = DELIVERY_RETRY_SECONDS,
    ) -> None:
        self.bot = bot
        self.delivery_retry = delivery_retry
        # Live updates of the whole bot share it; without one, every live update goes out.
        self.budget = budget
        self.chat_id = chat_id
        is_private = chat_id > 0 if private is None else private
        if edit_interval is None:
            edit_interval = PRIVATE_EDIT_INTERVAL if is_private else GROUP_EDIT_INTERVAL
        self.mode = "draft" if is_private and use_drafts else "edit"
        self.message_thread_id = message_thread_id
        self.reply_to_message_id = reply_to_message_id
        self.render = render
        self.limit = limit
        self.interval = draft_interval if self.mode == "draft" else edit_interval
        self.edit_interval = edit_interval
        self.placeholder = placeholder
        self.draft_id = random.randint(1, 2**31 - 1)
        self.text = ""
        self.message_ids: list[int] = []
        self.live_updates = 0  # drafts/edits that reached Telegram (for tests and metrics)

        self._shown: list[_Shown] = []
        # Messages replaced by new ones, deleted once their replacements are out.
        self._stale: list[int] = []
        self._wake = asyncio.Event()  # set by push() and by stopping
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._last_update = 0.0
        self._finished = False
        self._markup_attached = False
        # Telegram answered 403 (the user blocked the bot, or it left the group): nothing more
        # is sent, since every further call would be refused the same way.
        self.unreachable = False

    # ------------------------------------------------------------------ public API

    async def __aenter__(self) -> ReplyStreamer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Show at once that a reply is coming ("Thinking…" draft, or the placeholder).

        Skipped when the live-update budget is spent (the typing action still shows).
        """
        if self._budget_allows_start():
            await self._show_coming()

    def _budget_allows_start(self) -> bool:
        if self._may_update():
            return True
        # Skipped: the first live update still waits its interval from now.
        self._last_update = time.monotonic()
        return False

    async def _show_coming(self) -> None:
        if self.mode == "draft":
            try:
                await self._draft("")
                # The "Thinking…" draft counts as an update: the first text follows at the
                # usual pace, so a reply that is complete within `draft_interval` goes out as
                # its final message without a draft in between (one Bot API call fewer).
                self._last_update = time.monotonic()
                return
            except TelegramForbiddenError as exc:
                self._forbidden(exc)
                return
            except TelegramAPIError as exc:
                self._drafts_failed(exc)
        if not self._shown:
            try:
                self._shown.append(await self._send(escape(self.placeholder), first=True))
            except TelegramForbiddenError as exc:
                self._forbidden(exc)
            except TelegramAPIError as exc:
                log.warning("Could not send the placeholder in chat %s: %s", self.chat_id, exc)
        self._last_update = time.monotonic()

    def begin(self) -> None:
        """`start` in the background: the caller goes on (to its first model call) without
        waiting a Bot API round trip, 50-200 ms from Telegram's servers, for the "Thinking…"
        draft. Live updates and the final delivery wait for it, so they always come after it."""
        # The budget is asked here, not in the task: when it is spent (under load, when CPU
        # matters most) there is nothing to send and no task to make.
        if self._starting is not None or not self._budget_allows_start():
            return
        self._starting = asyncio.create_task(
            self._show_coming(), name=f"reply-start-{self.chat_id}"
        )

    async def _wait_started(self) -> None:
        starting = self._starting
        if starting is None:
            return
        # Let it complete, never cancel it: a half-sent placeholder would leave us unsure of
        # what the chat shows. `_show_coming` logs Bot API failures itself.
        if not starting.done():
            await asyncio.wait([starting])
        if self._starting is starting:  # the first waiter to see it done settles it
            self._starting = None
            error = None if starting.cancelled() else starting.exception()
            if error is not None:
                log.warning("Could not show a reply is coming in chat %s: %r", self.chat_id, error)

    async def push(self, delta: str) -> None:
        """Add text; the chat is updated in the background at the configured pace."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        if not delta:
            return
        self.text += delta
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._flusher(), name=f"reply-stream-{self.chat_id}")

    async def stream(self, deltas: AsyncIterable[str]) -> list[int]:
        """Push every delta, then `finish`; on an error, stop the live task and re-raise."""
        try:
            async for delta in deltas:
                await self.push(delta)
        except BaseException:
            await self.aclose()
            raise
        return await self.finish()

    async def finish(
        self, final_text: str | None = None, *, reply_markup: InlineKeyboardMarkup | None = None
    ) -> list[int]:
        """Deliver the whole reply (`final_text`, else what was pushed); the message ids.

        `reply_markup` (e.g. rating buttons) goes on the reply's last message, with the message
        itself when it is sent or edited then, else by one more call. Flood control delays this
        delivery but never drops it: every 429 is waited out.
        """
        if self._finished:
            return self.message_ids
        await self._stop_flusher()
        await self._wait_started()
        self._finished = True
        if final_text is not None:
            self.text = final_text
        if self.unreachable:
            return []
        chunks = [c for c in split_html(self.render(self.text), self.limit) if _has_text(c)]
        with patient():
            if self.mode == "edit" and self._shown and chunks:
                # Telegram limits messages per chat; a final edit right after a live one would 429.
                gap = min(self.edit_interval, FINAL_EDIT_GAP)
                pause = self._last_update + gap - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
            await patiently(
                lambda: self._sync(chunks, markup=reply_markup),
                window=self.delivery_retry,
                pending=lambda until: self._pending(chunks, until),
            )
            for extra in self._shown[len(chunks) :]:
                self._stale.extend(extra.message_ids)
            del self._shown[len(chunks) :]
            await self._delete_stale()
        self.message_ids = [mid for shown in self._shown for mid in shown.message_ids]
        if reply_markup is not None and self.message_ids and not self._markup_attached:
            # The last message was already right and needed no edit: attach the buttons alone.
            try:
                await self.bot.edit_message_reply_markup(
                    chat_id=self.chat_id, message_id=self.message_ids[-1], reply_markup=reply_markup
                )
            except TelegramAPIError as exc:
                log.info("Could not attach buttons in chat %s: %s", self.chat_id, exc)
        return self.message_ids

    def _pending(self, chunks: list[str], until: float) -> PendingReply:
        """The chunks not yet shown as they should be, for a restart to deliver."""
        done = 0
        while (
            done < len(chunks)
            and done < len(self._shown)
            and self._shown[done].html == chunks[done]
        ):
            done += 1
        replace = [mid for shown in self._shown[done:] for mid in shown.message_ids]
        return PendingReply(
            chat_id=self.chat_id,
            chunks=chunks[done:],
            thread=self.message_thread_id,
            reply_to=self.reply_to_message_id if done == 0 else None,
            replace=tuple(replace + self._stale),
            until=until,
        )

    async def resend(self, reply: PendingReply) -> list[int]:
        """Deliver a reply stored by an earlier process (`PendingReply`) until its window ends."""
        self._finished = True
        self._stale = list(reply.replace)
        window = reply.until - time.time()
        if window <= 0 or not reply.chunks:
            return []
        with patient():
            await patiently(lambda: self._sync(reply.chunks), window=window)
        self.message_ids = [mid for shown in self._shown for mid in shown.message_ids]
        return self.message_ids

    async def aclose(self) -> None:
        """Stop live updates without a final delivery (an error path); idempotent."""
        await self._stop_flusher()
        await self._wait_started()

    # ------------------------------------------------------------------ live updates

    async def _stop_flusher(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            # Let an in-flight draft/edit complete: cancelling it would leave us unsure of
            # what the chat shows.
            await asyncio.wait([self._task])
            self._task = None

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            await self._wait_started()
            if self._stop.is_set():
                return
            pause = self._last_update + self.interval - time.monotonic()
            if pause > 0:
                # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` wraps the wait in a
                # task of its own, one more per reply.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stop.wait()
                # Checked after the wait, whatever ended it: `finish` may have set both flags
                # while the wait was timing out, and clearing `_wake` below would then leave
                # this task waiting for a wake-up that never comes (and `finish` waiting on it).
                if self._stop.is_set():
                    return  # finishing: the final delivery supersedes this update
            self._wake.clear()
            if self.unreachable:
                continue
            if not self._may_update():
                # Over the bot's budget: skip this one, try again at the next interval.
                self._last_update = time.monotonic()
                continue
            try:
                await self._live_update()
                self.live_updates += 1
            except TelegramForbiddenError as exc:
                self._forbidden(exc)
            except TelegramAPIError as exc:
                log.info("Live update in chat %s failed (next one retries): %s", self.chat_id, exc)
            except Exception:
                log.exception("Live update in chat %s failed", self.chat_id)
            self._last_update = time.monotonic()

    def _may_update(self) -> bool:
        return self.budget is None or self.budget.try_take()

    async def _live_update(self) -> None:
        chunks = [c for c in split_html(self.render(self.text), self.limit) if _has_text(c)]
        if not chunks:
            return
        if self.mode == "draft":
            try:
                await self._draft(chunks[-1])
                return
            except TelegramAPIError as exc:
                if not self._drafts_failed(exc):
                    raise
        await self._sync(chunks)

    def _forbidden(self, exc: TelegramForbiddenError) -> None:
        if not self.unreachable:
            log.info("Chat %s does not take messages from the bot (%s)", self.chat_id, exc.message)
        self.unreachable = True

    def _drafts_failed(self, exc: TelegramAPIError) -> bool:
        """After a draft failed for good: switch to edits. False for transient failures."""
        permanent = isinstance(exc, TelegramNotFound | TelegramForbiddenError) or (
            isinstance(exc, TelegramBadRequest) and not is_parse_error(exc)
        )
        if permanent:
            log.warning(
                "Drafts unavailable in chat %s (%s); editing a message instead", self.chat_id, exc
            )
            self.mode = "edit"
            self.interval = self.edit_interval
            return True
        return False

    async def _draft(self, chunk: str) -> None:
        try:
            await self.bot.send_message_draft(
                chat_id=self.chat_id,
                draft_id=self.draft_id,
                text=chunk,
                parse_mode=HTML,
                message_thread_id=self.message_thread_id,
            )
        except TelegramBadRequest as exc:
            if not is_parse_error(exc):
                raise
            await self.bot.send_message_draft(
                chat_id=self.chat_id,
                draft_id=self.draft_id,
                text=html_to_text(chunk),
                parse_mode=None,
                message_thread_id=self.message_thread_id,
            )

    # ------------------------------------------------------------------ delivery

    async def _sync(self, chunks: list[str], *, markup: InlineKeyboardMarkup | None = None) -> None:
        """Make the shown messages read `chunks`: edit changed ones, send the missing ones;
        `markup` goes on the last chunk's message when it is sent or edited.

        A chunk that cannot be edited in place (its message is gone or can't be edited, Telegram
        calls the edit too long, or it went out in several plain pieces) is sent again, with
        every chunk after it so the order holds; the messages it replaces are deleted after.
        """
        last = len(chunks) - 1
        for index, chunk in enumerate(chunks):
            buttons = markup if index == last else None
            if index < len(self._shown):
                shown = self._shown[index]
                if shown.html == chunk:
                    continue
                if len(shown.message_ids) == 1 and await self._edit(
                    shown.message_ids[0], chunk, buttons
                ):
                    self._shown[index] = _Shown(shown.message_ids, chunk)
                    self._markup_attached = buttons is not None
                    continue
                for replaced in self._shown[index:]:
                    self._stale.extend(replaced.message_ids)
                del self._shown[index:]
            self._shown.append(await self._send(chunk, first=index == 0, markup=buttons))
            self._markup_attached = buttons is not None
        await self._delete_stale()

    async def _delete_stale(self) -> None:
        while self._stale:
            await self._delete(self._stale.pop(0))

    async def _send(
        self, chunk: str, *, first: bool, markup: InlineKeyboardMarkup | None = None
    ) -> _Shown:
        """Send one chunk (HTML, else plain, else plain in smaller pieces; `markup` on the last)."""
        reply = None
        if first and self.reply_to_message_id is not None:
            reply = ReplyParameters(
                message_id=self.reply_to_message_id, allow_sending_without_reply=True
            )
        try:
            message = await self.bot.send_message(
                chat_id=self.chat_id,
                text=chunk,
                parse_mode=HTML,
                message_thread_id=self.message_thread_id,
                reply_parameters=reply,
                reply_markup=markup,
            )
            return _Shown([message.message_id], chunk)
        except TelegramBadRequest as exc:
            if not (is_parse_error(exc) or is_too_long(exc)):
                raise
            log.warning(
                "Telegram refused a reply chunk in chat %s (%s); sending it plain",
                self.chat_id,
                exc,
            )
            limit = self.limit if is_parse_error(exc) else max(2, self.limit // 2)
        ids: list[int] = []
        pieces = [p for p in split_text(html_to_text(chunk), limit) if p.strip()]
        for number, piece in enumerate(pieces):
            message = await self.bot.send_message(
                chat_id=self.chat_id,
                text=piece,
                parse_mode=None,
                message_thread_id=self.message_thread_id,
                reply_parameters=reply if not ids else None,
                reply_markup=markup if number == len(pieces) - 1 else None,
            )
            ids.append(message.message_id)
        return _Shown(ids, chunk)

    async def _edit(
        self, message_id: int, chunk: str, markup: InlineKeyboardMarkup | None = None
    ) -> bool:
        """Set a message to `chunk` (HTML, else plain) and `markup`; False when it cannot be
        edited."""
        try:
            await self.bot.edit_message_text(
                chat_id=self.chat_id,
                message_id=message_id,
                text=chunk,
                parse_mode=HTML,
                reply_markup=markup,
            )
        except TelegramBadRequest as exc:
            if is_not_modified(exc):
                if markup is not None:  # the text was right already; the buttons still go on
                    with contextlib.suppress(TelegramAPIError):
                        await self.bot.edit_message_reply_markup(
                            chat_id=self.chat_id, message_id=message_id, reply_markup=markup
                        )
                return True
            if is_message_gone(exc) or is_too_long(exc):
                return False
            if not is_parse_error(exc):
                raise
            try:
                await self.bot.edit_message_text(
                    chat_id=self.chat_id,
                    message_id=message_id,
                    text=html_to_text(chunk),
                    parse_mode=None,
                    reply_markup=markup,
                )
            except TelegramBadRequest as again:
                if is_message_gone(again) or is_too_long(again):
                    return False
                if not is_not_modified(again):
                    raise
        return True

    async def _delete(self, message_id: int) -> None:
        try:
            await self.bot.delete_message(chat_id=self.chat_id, message_id=message_id)
        except TelegramAPIError as exc:
            log.info("Could not delete message %s in chat %s: %s", message_id, self.chat_id, exc)


def _has_text(chunk: str) -> bool:
    return bool(html_to_text(chunk).strip())
