"""`/learn <topic>`: a short lesson, streamed, through the `learn` pipeline."""

from __future__ import annotations

from aiogram import Bot, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.app import Services
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.routers.common import answer_with_pipeline, input_too_long, too_long_text

USAGE = "Usage: /learn <topic>, e.g. /learn spaced repetition"


async def on_learn(
    message: Message,
    command: CommandObject,
    bot: Bot,
    services: Services,
    max_input_chars: int,
    live_budget: LiveUpdateBudget | None = None,
) -> None:
    topic = " ".join((command.args or "").split())
    if not topic:
        await message.answer(USAGE)
        return
    if input_too_long(topic, max_input_chars):
        await message.answer(too_long_text(max_input_chars))
        return
    await answer_with_pipeline(
        message, bot, services, "learn", text=topic, topic=topic, live_budget=live_budget
    )


def create_router() -> Router:
    router = Router(name=__name__)
    router.message.register(on_learn, Command("learn"))
    return router
