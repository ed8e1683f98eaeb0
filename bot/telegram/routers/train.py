"""`/train [topic]`: sets an exercise; the chat's next message is graded and the next one set.

The "waiting for an answer" state is per chat (FSMStrategy.CHAT), so in a group anyone may
answer (by replying to the bot or mentioning it); `/stop` ends the drill.
"""

from __future__ import annotations

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import Message

from bot.agents.trainer import DEFAULT_TOPIC
from bot.app import Services
from bot.telegram.filters import Magic
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.routers.common import (
    AddressedToBot,
    answer_with_pipeline,
    input_too_long,
    too_long_text,
)


class TrainFlow(StatesGroup):
    answering = State()


async def on_train(
    message: Message,
    command: CommandObject,
    bot: Bot,
    services: Services,
    state: FSMContext,
    max_input_chars: int,
    live_budget: LiveUpdateBudget | None = None,
) -> None:
    topic = " ".join((command.args or "").split())
    if input_too_long(topic, max_input_chars):
        await message.answer(too_long_text(max_input_chars))
        return
    if not topic:
        data = await state.get_data()
        topic = str(data.get("topic") or DEFAULT_TOPIC)
    result = await answer_with_pipeline(
        message,
        bot,
        services,
        "train",
        text=f"/train {topic}",
        topic=topic,
        live_budget=live_budget,
    )
    if result is not None and result.success:
        await state.set_state(TrainFlow.answering)
        await state.update_data(topic=topic)


async def on_answer(
    message: Message,
    prompt: str,
    bot: Bot,
    services: Services,
    max_input_chars: int,
    live_budget: LiveUpdateBudget | None = None,
) -> None:
    if input_too_long(prompt, max_input_chars):
        await message.answer(too_long_text(max_input_chars))
        return
    # The state stays: a failed grading leaves the exercise open, a good one sets the next.
    await answer_with_pipeline(
        message, bot, services, "train", text=prompt, live_budget=live_budget
    )


async def on_stop(message: Message, state: FSMContext) -> None:
    if await state.get_state() == TrainFlow.answering.state:
        await state.clear()
        await message.answer("Training stopped. Send /train to start again.")
    else:
        await message.answer("There is no training running. Send /train to start one.")


def create_command_router() -> Router:
    """/train and /stop (the dispatcher puts this behind its commands gate)."""
    router = Router(name=f"{__name__}.commands")
    router.message.register(on_train, Command("train"))
    router.message.register(on_stop, Command("stop"))
    return router


def create_router() -> Router:
    """The answer to a running exercise."""
    router = Router(name=__name__)
    router.message.register(
        on_answer,
        # StateFilter, not the bare State: aiogram runs a State (a synchronous callable) in a
        # worker thread, for every text message of every chat (see bot/telegram/filters.py).
        StateFilter(TrainFlow.answering),
        Magic(F.text),
        Magic(~F.text.startswith("/")),
        AddressedToBot(),
    )
    return router
