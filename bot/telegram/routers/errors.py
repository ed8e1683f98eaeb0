"""The error route: an update whose handler raised gets a short, kind answer; the log the rest."""

from __future__ import annotations

import logging

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError, TelegramForbiddenError
from aiogram.types import ErrorEvent

from bot.telegram.routers.common import SORRY_GENERIC

log = logging.getLogger(__name__)


async def on_error(event: ErrorEvent, bot: Bot) -> bool:
    update = event.update
    exc = event.exception
    if isinstance(exc, TelegramForbiddenError):
        # The user blocked the bot (or it was removed from the group): nothing can be told to
        # them, and it is not the bot's fault; one line, no traceback, no apology attempt.
        log.info("update %s not answered: %s", update.update_id, exc.message)
        return True
    log.error(
        "update %s failed: %s",
        update.update_id,
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(SORRY_GENERIC, show_alert=True)
        elif update.message is not None:
            await bot.send_message(
                chat_id=update.message.chat.id,
                text=SORRY_GENERIC,
                message_thread_id=update.message.message_thread_id
                if update.message.is_topic_message
                else None,
            )
    except TelegramAPIError as send_error:
        log.warning("could not tell chat about the error: %s", send_error)
    return True


def create_router() -> Router:
    router = Router(name=__name__)
    router.errors.register(on_error)
    return router
