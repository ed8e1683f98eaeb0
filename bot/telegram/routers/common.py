"""What the feature routers share: running a pipeline into the chat, filters, rating buttons.

    result = await answer_with_pipeline(message, bot, services, "support", text=prompt)

streams the reply (a draft in private chats, an edited placeholder in groups) with "typing…"
shown meanwhile, and always ends with a real message: the reply, the pipeline's short apology,
or a kind note when storage failed. When tracing or the call ledger is on, the last message of a
reply gets 👍/👎 buttons whose callback data carries the trace id and the turn.
"""

from __future__ import annotations

import html
import logging
import re
from typing import Any, Protocol, runtime_checkable

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Filter
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters

from bot.app import Services
from bot.pipeline.runner import RunResult
from bot.storage.repositories import StorageError
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.middlewares import typing_action
from bot.telegram.streaming import ReplyStreamer

log = logging.getLogger(__name__)

# Telegram caps a text message at 4096 characters; a longer input can only come from a client
# that splits badly or a configured lower limit (`dp["max_input_chars"]`).
MAX_INPUT_CHARS = 4096

SORRY_GENERIC = "Sorry, something went wrong on my side. Please try again."
SORRY_STORAGE = (
    "Sorry, I couldn't reach my memory just now, so this exchange may not be remembered. "
    "Please try again in a minute."
)
STORAGE_NOTE = "(I couldn't save this conversation just now, so I may not remember it.)"
# Once per chat while the database is down (the reply came from what the bot last read).
MEMORY_NOTE = "(My memory is out of reach for a moment, so I may not remember this part.)"


def too_long_text(limit: int) -> str:
    return (
        f"That's a lot to take in at once! Please send it in parts of up to {limit} characters, "
        "or tell me the gist."
    )


@runtime_checkable
class TraceReview(Protocol):
    """What the Telegram layer needs of tracing (`bot.observability.tracing.Tracing`)."""

    @property
    def enabled(self) -> bool: ...

    async def trace_url(self, trace_id: str | None, *, timeout: float = 3.0) -> str | None: ...

    async def score(
        self,
        trace_id: str | None,
        name: str,
        value: float | bool,
        comment: str | None = None,
        *,
        score_id: str | None = None,
    ) -> bool: ...


def trace_review(services: Services) -> TraceReview | None:
    observer = services.observer
    if isinstance(observer, TraceReview) and observer.enabled:
        return observer
    return None


class RateReply(CallbackData, prefix="rate"):
    """👍/👎 under a reply; `trace` is the id of the trace that produced it (32 hex chars; empty
    with tracing off), `user` the id of the user it answered: only they may rate it; `turn` the
    stored user message it answered (the call ledger's turn; 0 when unknown); `msg` the user's
    Telegram message in this chat, which names the turn when the reply is sent before the
    turn's write has answered its id (InsForge: the two run side by side); 0 when unknown."""

    vote: str  # "up" | "down"
    trace: str
    user: int
    turn: int = 0
    msg: int = 0


class TurnRateReply(CallbackData, prefix="rate"):
    """Buttons sent before `msg` was added (four fields)."""

    vote: str
    trace: str
    user: int
    turn: int

    def current(self) -> RateReply:
        return RateReply(vote=self.vote, trace=self.trace, user=self.user, turn=self.turn)


class LegacyRateReply(CallbackData, prefix="rate"):
    """Buttons sent before the call ledger named the turn (three fields)."""

    vote: str
    trace: str
    user: int

    def current(self) -> RateReply:
        return RateReply(vote=self.vote, trace=self.trace, user=self.user)


def telegram_message_key(chat_id: int, message_id: int) -> str:
    """What names a user's Telegram message for good (`ConversationService.handle`'s
    `message_key`): its stored row's idempotency key is this plus its role."""
    return f"tg:{chat_id}:{message_id}"


# Telegram's bound on an inline button's callback data.
CALLBACK_DATA_LIMIT = 64


def rating_keyboard(
    trace_id: str | None, user_id: int, turn_id: int | None = None, message_id: int | None = None
) -> InlineKeyboardMarkup:
    """`turn_id` when the turn's stored id is known, else `message_id` (the user's message)."""
    turn, msg = (turn_id, 0) if turn_id else (0, message_id or 0)

    def button(text: str, vote: str) -> InlineKeyboardButton:
        data = RateReply(vote=vote, trace=trace_id or "", user=user_id, turn=turn, msg=msg).pack()
        if len(data.encode()) > CALLBACK_DATA_LIMIT:
            # A very long user id and turn together: the ledger's rating is kept, the Langfuse
            # score of that one reply is left out.
            data = RateReply(vote=vote, trace="", user=user_id, turn=turn, msg=msg).pack()
        return InlineKeyboardButton(text=text, callback_data=data)

    return InlineKeyboardMarkup(inline_keyboard=[[button("👍", "up"), button("👎", "down")]])


class AddressedToBot(Filter):
    """Private chats: always. Groups: a reply to the bot, or a message mentioning @the_bot.

    Passes `prompt` (the text without the mention) to the handler.
    """

    async def __call__(self, message: Message, bot: Bot) -> bool | dict[str, Any]:
        text = message.text or ""
        if message.chat.type == "private":
            return {"prompt": text.strip()}
        me = await bot.me()
        username = (me.username or "").lower()
        replied = message.reply_to_message
        to_bot = bool(
            replied is not None and replied.from_user is not None and replied.from_user.id == me.id
        )
        mentioned = bool(username) and any(
            entity.type == "mention" and entity.extract_from(text).lower() == f"@{username}"
            for entity in message.entities or ()
        )
        if not (to_bot or mentioned):
            return False
        prompt = (
            re.sub(rf"@{re.escape(username)}\b", "", text, flags=re.IGNORECASE)
            if username
            else text
        )
        return {"prompt": " ".join(prompt.split()) or text.strip()}


def thread_of(message: Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None


async def answer_with_pipeline(
    message: Message,
    bot: Bot,
    services: Services,
    pipeline: str,
    *,
    text: str,
    topic: str | None = None,
    live_budget: LiveUpdateBudget | None = None,
) -> RunResult | None:
    """Run `pipeline` for this message and deliver its reply; None when it could not run.

    `live_budget`: the bot-wide budget of live drafts/edits (`dp["live_budget"]`).
    """
    chat = message.chat
    private = chat.type == "private"
    thread = thread_of(message)
    streamer = ReplyStreamer(
        bot,
        chat.id,
        private=private,
        message_thread_id=thread,
        reply_to_message_id=None if private else message.message_id,
        budget=live_budget,
        delivery_retry=services.settings.delivery_retry_seconds,
    )
    user_id = message.from_user.id if message.from_user else None
    delivered = False

    async def deliver(result: RunResult) -> None:
        """The reply's final message, with its rating buttons; called by the conversation
        beside the turn's write when the reply is ready, else below once the turn is over."""
        nonlocal delivered
        delivered = True
        if result.success:
            final = result.reply if result.reply.strip() else (streamer.text or "…")
        elif streamer.text.strip():
            # The reply broke off after the user had seen part of it (the model stopped
            # mid-stream): keep what they read, and say why it ends there.
            final = f"{streamer.text.rstrip()}\n\n({result.error_message or SORRY_GENERIC})"
        else:
            final = result.error_message or SORRY_GENERIC
        if result.memory_degraded and services.conversation.continuity.should_note(chat.id):
            final = f"{final.rstrip()}\n\n{MEMORY_NOTE}"
        # Rating buttons ride on the reply's last message (not a separate edit afterwards):
        # the rating goes to the trace (tracing on) and to the turn (the call ledger on), named
        # by its stored id or, while the write is still on its way, by the user's message.
        traced = bool(result.trace_id) and trace_review(services) is not None
        ledgered = services.ledger is not None
        buttons = (
            rating_keyboard(
                result.trace_id if traced else None,
                user_id,
                result.turn_id,
                message_id=message.message_id,
            )
            if result.success and user_id is not None and (traced or ledgered)
            else None
        )
        await streamer.finish(final, reply_markup=buttons)

    async with typing_action(bot, chat.id, message_thread_id=thread):
        streamer.begin()
        try:
            result = await services.conversation.handle(
                pipeline,
                user_id=user_id,
                chat_id=chat.id,
                text=text,
                topic=topic,
                on_text=streamer.push,
                message_key=telegram_message_key(chat.id, message.message_id),
                deliver=deliver,
            )
        except StorageError as exc:
            # The operator's log says what failed; the user gets what was written, and a note.
            log.error("storage failed during %s in chat %s: %s", pipeline, chat.id, exc)
            if streamer.text.strip():
                await streamer.finish()
                # A reply to the user's message, so it is clear which exchange was not saved.
                await _send_plain(bot, chat.id, STORAGE_NOTE, thread, reply_to=message.message_id)
            else:
                await streamer.finish(SORRY_STORAGE)
            return None
        except Exception:
            log.exception("%s failed in chat %s", pipeline, chat.id)
            await streamer.finish(SORRY_GENERIC)
            return None
        if not delivered:
            await deliver(result)
    return result


async def _send_plain(
    bot: Bot, chat_id: int, text: str, thread: int | None, *, reply_to: int | None = None
) -> None:
    reply = (
        ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
        if reply_to is not None
        else None
    )
    try:
        await bot.send_message(
            chat_id=chat_id, text=text, message_thread_id=thread, reply_parameters=reply
        )
    except TelegramAPIError as exc:
        log.warning("could not send a note to chat %s: %s", chat_id, exc)


def input_too_long(text: str, limit: int) -> bool:
    return len(text) > limit


# Under Telegram's 4096 characters per message, with room for the <pre> tags and escaping.
PRE_CHUNK = 3500


async def send_pre(message: Message, text: str) -> None:
    """Tables read best in monospace; a long one goes as several messages, split at lines."""
    chunk: list[str] = []
    size = 0
    for line in text.splitlines():
        if chunk and size + len(line) + 1 > PRE_CHUNK:
            await _send_pre(message, "\n".join(chunk))
            chunk, size = [], 0
        chunk.append(line[:PRE_CHUNK])
        size += len(line) + 1
    await _send_pre(message, "\n".join(chunk))


async def _send_pre(message: Message, text: str) -> None:
    await message.answer(f"<pre>{html.escape(text, quote=False)}</pre>", parse_mode="HTML")
