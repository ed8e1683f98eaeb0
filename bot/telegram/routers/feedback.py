"""👍/👎 under a reply: recorded as a Langfuse score (`user_rating`) on the reply's trace.

The buttons go once a rating is in, so one reply gets one rating from the chat.
"""

from __future__ import annotations

import logging
import re

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.telegram.routers.common import RateReply, trace_review

log = logging.getLogger(__name__)

_TRACE_ID = re.compile(r"^[0-9a-f]{16,64}$")
SCORE_NAME = "user_rating"


async def on_rate(query: CallbackQuery, callback_data: RateReply, services: Services) -> None:
    tracing = trace_review(services)
    if callback_data.vote not in ("up", "down") or not _TRACE_ID.match(callback_data.trace):
        await query.answer("That button is not valid any more.")
        return
    recorded = False
    if tracing is not None:
        recorded = await tracing.score(
            callback_data.trace,
            SCORE_NAME,
            callback_data.vote == "up",
            comment=f"telegram user {query.from_user.id}",
        )
    if not recorded:
        await query.answer("Thanks! (Ratings can't be recorded just now.)")
        return
    await query.answer("Thanks for the feedback!")
    if isinstance(query.message, Message):
        try:
            await query.message.edit_reply_markup(reply_markup=None)
        except TelegramAPIError as exc:
            log.info("could not remove the rating buttons: %s", exc)


def create_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(on_rate, RateReply.filter())
    return router
