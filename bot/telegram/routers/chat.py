"""Everything else: text runs the `support` pipeline; unknown commands and non-text get help;
a button no other router reads is answered as stale.

This router goes last. In groups the bot answers only when mentioned or replied to.
"""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.quoting import clipped
from bot.telegram.filters import Magic
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.routers.common import (
    AddressedToBot,
    answer_with_pipeline,
    input_too_long,
    too_long_text,
)


async def on_unknown_command(message: Message, bot: Bot) -> None:
    text = message.text or ""
    command = text.split(maxsplit=1)[0]
    _, _, mention = command.partition("@")
    if message.chat.type != "private":
        me = await bot.me()
        if not mention or mention.lower() != (me.username or "").lower():
            return  # a command for another bot, or for nobody in particular
    name = clipped(command.split("@")[0])
    await message.answer(f"I don't know {name}. Send /help for the commands.")


async def on_text(
    message: Message,
    prompt: str,
    bot: Bot,
    services: Services,
    max_input_chars: int,
    live_budget: LiveUpdateBudget | None = None,
) -> None:
    if not prompt:
        await message.answer("Yes? Tell me what's on your mind.")
        return
    if input_too_long(prompt, max_input_chars):
        await message.answer(too_long_text(max_input_chars))
        return
    await answer_with_pipeline(
        message, bot, services, "support", text=prompt, live_budget=live_budget
    )


async def on_other(message: Message) -> None:
    await message.answer("I can only read text for now. Tell me in words?")


STALE_BUTTON = "That button is not valid any more."


async def on_unknown_button(query: CallbackQuery) -> None:
    """A button whose data no handler reads (an old keyboard, a forged query): answered, so the
    client's spinner stops, and nothing else happens."""
    await query.answer(STALE_BUTTON)


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(on_unknown_command, Magic(F.text.startswith("/")))
    router.message.register(on_text, Magic(F.text), AddressedToBot())
    router.message.register(on_other, Magic(F.chat.type == "private"), Magic(~F.text))
    router.callback_query.register(on_unknown_button)
    return router
