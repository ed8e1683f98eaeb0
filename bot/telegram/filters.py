"""Filters evaluated on the event loop.

    router.message.register(on_text, Magic(F.text), AddressedToBot())

aiogram calls a synchronous filter through `asyncio.to_thread`, and a bare magic filter
(`F.text`, `F.chat.type == "private"`) is a synchronous callable: every such filter on every
update was a hand-off to a worker thread and back (a thread switch, a self-pipe wake-up of the
loop and GIL traffic), for an attribute lookup that takes a microsecond. In the load benchmark's
profile that was a visible share of the bot's CPU. `Magic` resolves the same expression inline.
The same goes for a bare FSM `State` used as a filter: register `StateFilter(state)` instead.
"""

from __future__ import annotations

from typing import Any

from aiogram.filters import Filter
from aiogram.types import Message, TelegramObject
from magic_filter import MagicFilter

__all__ = ["LooksLikeCommand", "Magic"]


class Magic(Filter):
    """A magic filter, resolved in the event loop instead of a worker thread."""

    def __init__(self, magic: MagicFilter) -> None:
        self.magic = magic

    async def __call__(self, event: TelegramObject) -> bool | dict[str, Any]:
        result = self.magic.resolve(event)
        # `.as_(name)` resolves to a dict that aiogram passes on to the handler.
        return result if isinstance(result, dict) else bool(result)

    def __str__(self) -> str:
        return f"Magic({self.magic!r})"


class LooksLikeCommand(Filter):
    """The message's text (or caption) starts with "/": one check in front of a router whose
    message handlers are all commands.

    Every `Command` filter parses the text and raises inside aiogram when it is not a command;
    a plain message used to go through nine of them, one after another, on its way to the chat
    router. Behind this gate it skips them all.
    """

    async def __call__(self, message: Message) -> bool:
        text = message.text or message.caption
        return text is not None and text.startswith("/")
