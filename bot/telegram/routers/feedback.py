"""👍/👎 under a reply: recorded as a Langfuse score (`user_rating`) on the reply's trace, and in
the call ledger against the reply's turn (so every agent x model that served it is credited).

One vote per reply, from the person it answered. The button carries that user's id: in a private
chat nobody else sees it, and in a group another member's press (or a query forged with another
reply's data) is turned away without recording anything. A second press by the same user is
turned away too; and since the score's id is derived from the trace and the user, even a second
vote that reaches Langfuse from another replica, or after a restart, replaces the first instead
of counting twice (the ledger keeps one rating per turn and user the same way). The buttons go
once the rating is in.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.services.conversation import stored_key
from bot.storage.repositories import StorageError
from bot.telegram.routers.common import (
    LegacyRateReply,
    RateReply,
    TurnRateReply,
    telegram_message_key,
    trace_review,
)

log = logging.getLogger(__name__)

_TRACE_ID = re.compile(r"^[0-9a-f]{16,64}$")
SCORE_NAME = "user_rating"
NOT_YOURS = "Only the person this reply answered can rate it."
ALREADY = "You've already rated this reply. Thanks!"


def score_id(trace_id: str, user_id: int) -> str:
    """The one score a user may leave on a reply (the same id for the same vote, everywhere)."""
    return hashlib.sha256(f"{SCORE_NAME}:{trace_id}:{user_id}".encode()).hexdigest()[:32]


class VoteBook:
    """The (trace, user) pairs that voted in this process, the newest `limit` of them."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, int]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)


async def on_rate(
    query: CallbackQuery, callback_data: RateReply, services: Services, votes: VoteBook
) -> None:
    tracing = trace_review(services)
    traced = bool(_TRACE_ID.match(callback_data.trace))
    named = callback_data.turn > 0 or callback_data.msg > 0
    if callback_data.vote not in ("up", "down") or not (traced or named):
        await query.answer("That button is not valid any more.")
        return
    voter = query.from_user.id
    if voter != callback_data.user:
        await query.answer(NOT_YOURS)
        return
    key = (callback_data.trace or _turn_name(query, callback_data), voter)
    if key in votes:
        await query.answer(ALREADY)
        return
    recorded = await _rate_turn(query, callback_data, services)
    if tracing is not None and traced:
        scored = await tracing.score(
            callback_data.trace,
            SCORE_NAME,
            callback_data.vote == "up",
            comment=f"telegram user {voter}",
            score_id=score_id(callback_data.trace, voter),
        )
        recorded = scored or recorded
    if not recorded:
        await query.answer("Thanks! (Ratings can't be recorded just now.)")
        return
    votes.add(key)
    await query.answer("Thanks for the feedback!")
    if isinstance(query.message, Message):
        try:
            await query.message.edit_reply_markup(reply_markup=None)
        except TelegramAPIError as exc:
            log.info("could not remove the rating buttons: %s", exc)


def _turn_name(query: CallbackQuery, data: RateReply) -> str:
    if data.turn > 0:
        return f"turn:{data.turn}"
    chat = query.message.chat.id if query.message is not None else 0
    return f"msg:{chat}:{data.msg}"


async def _rate_turn(query: CallbackQuery, callback_data: RateReply, services: Services) -> bool:
    """The rating against its turn in the call ledger; False when it could not be stored."""
    if services.ledger is None:
        return False
    chat = query.message.chat.id if query.message is not None else None
    try:
        turn: int | None = callback_data.turn
        if not turn and callback_data.msg > 0 and chat is not None:
            # The reply went out beside the turn's write: its stored id is found by the key
            # the write stored the user's message under.
            key = stored_key(telegram_message_key(chat, callback_data.msg), "user")
            turn = await services.storage.messages.id_of(key)
        if not turn:
            return False
        await services.storage.ledger.rate(
            turn, query.from_user.id, chat, callback_data.vote == "up"
        )
    except StorageError as exc:
        log.warning(
            "a rating of turn %s could not be stored: %s", _turn_name(query, callback_data), exc
        )
        return False
    return True


async def on_legacy_rate(
    query: CallbackQuery,
    callback_data: LegacyRateReply | TurnRateReply,
    services: Services,
    votes: VoteBook,
) -> None:
    await on_rate(query, callback_data.current(), services, votes)


def create_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(on_rate, RateReply.filter())
    router.callback_query.register(on_legacy_rate, TurnRateReply.filter())
    router.callback_query.register(on_legacy_rate, LegacyRateReply.filter())
    return router
