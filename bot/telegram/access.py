"""The gate in front of every handler: who may use the bot (ACCESS_MODE) and how fast
(USER_MESSAGES_PER_MINUTE).

    dp.update.outer_middleware(AccessMiddleware(services))   # before the user loader

It runs before the user loader, so a stranger who is refused leaves nothing behind but the row
that says they were told. In a group only messages for the bot (a command, a mention, a reply to
it) get an answer or count towards a rate limit; the rest of a group's chatter that is not allowed
is dropped silently. A refused callback is answered (no spinner left turning) and dropped.
Admins pass untouched.

The admins' side (the Approve / Deny buttons, `/users`) is `bot.telegram.routers.users`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.filters.callback_data import CallbackData
from aiogram.types import (
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    TelegramObject,
    Update,
)
from aiogram.types import User as TelegramUser

from bot.app import Services
from bot.services.access import AccessDecision, AccessService, Verdict
from bot.services.rate_limit import RateLimiter
from bot.telegram.routers.common import AddressedToBot

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class AccessCallback(CallbackData, prefix="acc"):
    """An admin's Approve (`a`) or Deny (`d`) of a waiting user or group."""

    action: str
    subject: int


def user_label(user: TelegramUser) -> str:
    name = " ".join(part for part in (user.first_name, user.last_name) if part)
    return f"{name} (@{user.username})" if user.username else name or f"user {user.id}"


def subject_label(user: TelegramUser, chat: Chat, private: bool) -> str:
    if private:
        return user_label(user)
    return f"group {chat.title or chat.id} (added by {user_label(user)})"


def refusal_text(decision: AccessDecision, private: bool) -> str:
    if private:
        return (
            "Sorry, this bot is private. Your Telegram user id is "
            f"{decision.subject_id}: send it to the bot's owner if you'd like to use it."
        )
    return (
        "Sorry, I'm not enabled in this group. Its chat id is "
        f"{decision.subject_id}: the bot's owner can allow it."
    )


def waiting_text(private: bool) -> str:
    if private:
        return (
            "Thanks for your message! New users are approved by the bot's admins: I've asked "
            "them, and I'll answer you here as soon as one lets you in."
        )
    return "I've asked the bot's admins to enable me in this group; I'll answer once they do."


BLOCKED_TEXT = "Sorry, you can't use this bot."
UNAVAILABLE_TEXT = (
    "Sorry, I can't check just now whether you may use this bot. Please try again in a few minutes."
)


def rate_limited_text(limit: int) -> str:
    return (
        f"You're writing faster than I can keep up (at most {limit} messages a minute). "
        "I'll answer again in a moment; messages sent meanwhile are not answered."
    )


def approval_keyboard(subject_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="Approve",
                    callback_data=AccessCallback(action="a", subject=subject_id).pack(),
                ),
                InlineKeyboardButton(
                    text="Deny", callback_data=AccessCallback(action="d", subject=subject_id).pack()
                ),
            ]
        ]
    )


async def ask_admins(bot: Bot, access: AccessService, subject_id: int, label: str) -> None:
    """One message to every admin with Approve and Deny; where they went is recorded, so the
    first decision can update them all."""
    text = f"{label}, id {subject_id}, wants to use the bot and is waiting for an answer."
    sent: list[str] = []
    for admin_id in sorted(access.admin_ids):
        try:
            message = await bot.send_message(
                admin_id, text, reply_markup=approval_keyboard(subject_id)
            )
        except TelegramAPIError as exc:
            # An admin who never opened a chat with the bot cannot be written to.
            log.warning("could not ask admin %s about %s: %s", admin_id, subject_id, exc)
            continue
        sent.append(f"{message.chat.id}:{message.message_id}")
    if not sent:
        log.error(
            "no admin could be asked about %s (ADMIN_IDS must have started a chat with the bot); "
            "`/users allow %s` lets them in",
            subject_id,
            subject_id,
        )
        return
    try:
        await access.repo.update(subject_id, admin_messages=",".join(sent))
    except Exception as exc:  # the question went out; only later edits of it are lost
        log.warning("could not record the approval messages of %s: %s", subject_id, exc)


class AccessMiddleware(BaseMiddleware):
    def __init__(self, access: AccessService, limiter: RateLimiter | None) -> None:
        self.access = access
        self.limiter = limiter
        self._addressed = AddressedToBot()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: TelegramUser | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        if user is None or user.is_bot or chat is None or self.access.is_admin(user.id):
            return await handler(event, data)
        if not isinstance(event, Update):
            return await handler(event, data)
        message = event.message or event.edited_message
        query = event.callback_query
        if message is None and query is None:
            return await handler(event, data)  # membership changes and the like: no model call
        bot: Bot = data["bot"]
        private = chat.type == "private"
        decision = await self.access.check(
            user.id,
            chat.id,
            private=private,
            label=lambda: subject_label(user, chat, private),
            update=lambda: event.model_dump_json(exclude_none=True),
        )
        if query is not None:
            if decision.verdict is Verdict.ALLOW:
                return await handler(event, data)
            await _answer_query(query)
            return None
        assert message is not None
        for_bot = private or await self._for_bot(message, bot)
        if decision.verdict is not Verdict.ALLOW:
            if for_bot:
                await self._tell(bot, message, decision, private, user, chat)
            return None
        if for_bot and self.limiter is not None:
            verdict = await self.limiter.hit(user.id)
            if not verdict.allowed:
                log.info("user %s is over USER_MESSAGES_PER_MINUTE; message dropped", user.id)
                if verdict.notify:
                    await _send(bot, chat.id, rate_limited_text(self.limiter.limit))
                return None
        return await handler(event, data)

    async def _for_bot(self, message: Message, bot: Bot) -> bool:
        text = message.text or message.caption or ""
        if text.startswith("/"):
            return True
        return bool(await self._addressed(message, bot))

    async def _tell(
        self,
        bot: Bot,
        message: Message,
        decision: AccessDecision,
        private: bool,
        user: TelegramUser,
        chat: Chat,
    ) -> None:
        verdict = decision.verdict
        if verdict is Verdict.REFUSE:
            log.info("refused %s under ACCESS_MODE=allowlist", decision.subject_id)
            await _send(bot, message.chat.id, refusal_text(decision, private))
        elif verdict is Verdict.ASK_ADMINS:
            log.info("%s is waiting for an admin's approval", decision.subject_id)
            await _send(bot, message.chat.id, waiting_text(private))
            await ask_admins(
                bot, self.access, decision.subject_id, subject_label(user, chat, private)
            )
        elif verdict is Verdict.BLOCKED_NOTICE:
            await _send(bot, message.chat.id, BLOCKED_TEXT)
        elif verdict is Verdict.UNAVAILABLE:
            await _send(bot, message.chat.id, UNAVAILABLE_TEXT)


async def _send(bot: Bot, chat_id: int, text: str) -> None:
    try:
        await bot.send_message(chat_id, text)
    except TelegramAPIError as exc:
        log.info("could not send an access notice to %s: %s", chat_id, exc)


async def _answer_query(query: CallbackQuery) -> None:
    try:
        await query.answer()
    except TelegramAPIError as exc:
        log.debug("could not answer a refused callback: %s", exc)


def install(dp: Any, services: Services) -> None:
    """Put the gate on `dp.update` (call before the user loader is installed)."""
    if services.access is None:
        return
    dp.update.outer_middleware(AccessMiddleware(services.access, services.rate_limiter))
