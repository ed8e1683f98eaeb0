"""Two start-up steps that keep the bot's per-message cost flat under load (measured, see below).

1. `pin_response_types()`: aiogram parses every Bot API answer as `Response[<result type>]`, a
   pydantic generic built on first use and cached in a *weak* dictionary. The built class sits in
   reference cycles, so the cycle collector frees it and the next call builds it again: about 7 ms
   of CPU each time, on the hot path of every `sendMessage` (10 % of the bot's CPU in the load
   benchmark's profile). Holding one strong reference per result type the bot uses ends that.
2. `freeze_startup_heap()`: after start-up the process holds ~290,000 GC-tracked objects (aiogram's
   and openai's pydantic models and schemas) that live as long as the process. A full collection
   walks them all: a ~200 ms pause of the event loop each time. `gc.freeze()` moves them to the
   permanent generation, so collections only walk what messages allocate.
   It also raises the youngest generation's threshold from 700 to `YOUNG_GENERATION_THRESHOLD`.
   A message allocates thousands of container objects that reference counting frees a moment
   later; at 700 the collector ran every ~9 messages at 100 msg/s and took ~1.7 ms each time
   (227 young and 20 middle collections in 2000 messages: 0.5 s, ~9 % of the bot's CPU). At
   20,000 the same load needs two young collections in all. Only garbage in reference cycles
   waits longer to be freed: at most 20,000 objects' worth, a few MB.

    pin_response_types()      # once, after the dispatcher is built
    freeze_startup_heap()     # once, when start-up is done
"""

from __future__ import annotations

import gc
from typing import Any

from aiogram.methods import (
    AnswerCallbackQuery,
    DeleteMessage,
    DeleteWebhook,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    GetUpdates,
    SendChatAction,
    SendMessage,
    SendMessageDraft,
    SetMyCommands,
    SetWebhook,
)
from aiogram.methods.base import Response

from bot.telegram.polling import GetRawUpdates

# The Bot API methods the bot calls on its hot paths and at start.
_METHODS = (
    AnswerCallbackQuery,
    DeleteMessage,
    DeleteWebhook,
    EditMessageReplyMarkup,
    EditMessageText,
    GetMe,
    GetUpdates,
    # Our polling loop's getUpdates: unpinned, each poll rebuilt its Response type (~7 ms);
    # the load benchmark's CPU per message went 6.6 -> 7.8 ms before it was pinned.
    GetRawUpdates,
    SendChatAction,
    SendMessage,
    SendMessageDraft,
    SetMyCommands,
    SetWebhook,
)

_pinned: dict[Any, Any] = {}


def pin_response_types() -> int:
    """Build and keep `Response[T]` for each result type the bot's methods return; how many."""
    for method in _METHODS:
        returning = method.__returning__
        if returning not in _pinned:
            _pinned[returning] = Response[returning]  # type: ignore[valid-type]
    return len(_pinned)


# Young-generation threshold once start-up is done (CPython's default is 700); see point 2 above.
YOUNG_GENERATION_THRESHOLD = 20_000


def freeze_startup_heap() -> None:
    """Collect, exempt what is alive from later collections, collect young garbage less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)
