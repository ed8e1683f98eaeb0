"""The last guard on answers' length: a plain text over Telegram's limit is shortened, not refused.

    bot.session.middleware(LongTextGuard())

Telegram refuses a message over 4096 characters (UTF-16 units) with a 400, and the user then
gets the generic apology instead of the answer meant for them. Replies are split by the streamer
(`splitting`), and answers that repeat the user's words quote at most a short piece
(`bot.quoting`); this catches whatever else slips through (a long list, a new command's answer):
`sendMessage` and `editMessageText` calls without formatting whose text is too long have their
long words shortened first (a pasted blob is usually one), then the end cut, and a warning logged
(the method and the length, never the text). Formatted text (a parse mode or entities) is left to
its sender, who knows where its tags are.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from aiogram.client.default import Default
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.methods import EditMessageText, SendMessage
from aiogram.methods.base import Response, TelegramMethod, TelegramType

from bot.quoting import clipped
from bot.telegram.splitting import TELEGRAM_LIMIT, utf16_len

if TYPE_CHECKING:
    from aiogram import Bot

__all__ = ["LongTextGuard", "fit_plain"]

log = logging.getLogger(__name__)

_LONG_WORD = re.compile(r"\S{81,}")
ELLIPSIS = "…"


def fit_plain(text: str, limit: int = TELEGRAM_LIMIT) -> str:
    """`text` within `limit` UTF-16 units: long words shortened, then the end cut."""
    if utf16_len(text) <= limit:
        return text
    text = _LONG_WORD.sub(lambda match: clipped(match.group(0), 60), text)
    if utf16_len(text) <= limit:
        return text
    cut = text[: limit - 1]
    while utf16_len(cut) > limit - 1:  # characters outside the BMP count two
        cut = cut[:-1]
    return cut + ELLIPSIS


def _parse_mode(bot: Bot, value: object) -> object:
    """The call's parse mode, with the bot's default resolved (`Default("parse_mode")`)."""
    return bot.default[value.name] if isinstance(value, Default) else value


class LongTextGuard(BaseRequestMiddleware):
    """Shortens a too-long plain `sendMessage`/`editMessageText` (see the module docstring)."""

    def __init__(self, limit: int = TELEGRAM_LIMIT) -> None:
        self.limit = limit

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        if isinstance(method, SendMessage | EditMessageText):
            text = method.text or ""
            if (
                utf16_len(text) > self.limit
                and not _parse_mode(bot, method.parse_mode)
                and not method.entities
            ):
                log.warning(
                    "%s text of %d characters shortened to Telegram's %d",
                    type(method).__name__,
                    utf16_len(text),
                    self.limit,
                )
                method.text = fit_plain(text, self.limit)
        return await make_request(bot, method)
