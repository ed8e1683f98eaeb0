"""Admin commands, for the Telegram ids in ADMIN_IDS only.

The admin-only router is filtered as a whole (`IsAdmin`); a sibling router after it answers the
same commands from anyone else with a polite refusal, so nothing changes and nothing leaks.
The logic is `bot.services.admin_commands`, shared with the console.
"""

from __future__ import annotations

import html
import logging

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.services.admin_commands import (
    HISTORY_USAGE,
    RESETMODEL_USAGE,
    SETMODEL_USAGE,
    AdminCommands,
)
from bot.storage.repositories import StorageError
from bot.telegram.routers.common import trace_review

log = logging.getLogger(__name__)

ADMIN_COMMANDS = ("setmodel", "resetmodel", "models", "agents", "modelhistory", "trace")
REFUSAL = "Sorry, that command is for the bot's admins."


class IsAdmin(Filter):
    async def __call__(self, event: Message | CallbackQuery, services: Services) -> bool:
        user = event.from_user
        return user is not None and user.id in services.settings.admin_ids


def admin_tag(message: Message) -> str:
    """Who set it, as the history shows it: `tg:<id> (@name)`."""
    user = message.from_user
    if user is None:
        return "tg:unknown"
    return f"tg:{user.id}" + (f" (@{user.username})" if user.username else "")


async def _pre(message: Message, text: str) -> None:
    """Tables read best in monospace."""
    await message.answer(f"<pre>{html.escape(text, quote=False)}</pre>", parse_mode="HTML")


async def on_setmodel(message: Message, command: CommandObject, admin: AdminCommands) -> None:
    args = (command.args or "").split()
    if len(args) != 2:
        await message.answer(SETMODEL_USAGE)
        return
    await message.answer(await admin.set_model(args[0], args[1], by=admin_tag(message)))


async def on_resetmodel(message: Message, command: CommandObject, admin: AdminCommands) -> None:
    args = (command.args or "").split()
    if len(args) != 1:
        await message.answer(RESETMODEL_USAGE)
        return
    await message.answer(await admin.reset_model(args[0], by=admin_tag(message)))


async def on_models(message: Message, admin: AdminCommands) -> None:
    user_id = message.from_user.id if message.from_user else None
    await _pre(message, await admin.models(user_id))


async def on_agents(message: Message, admin: AdminCommands) -> None:
    await _pre(message, admin.agents())


async def on_modelhistory(message: Message, command: CommandObject, admin: AdminCommands) -> None:
    args = (command.args or "").split()
    if len(args) > 1:
        await message.answer(HISTORY_USAGE)
        return
    await _pre(message, await admin.model_history(args[0] if args else None))


async def on_trace(message: Message, services: Services) -> None:
    tracing = trace_review(services)
    if tracing is None:
        await message.answer("Tracing is off (set LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY).")
        return
    try:
        recent = await services.storage.messages.recent(message.chat.id, 20)
    except StorageError as exc:
        log.error("/trace: storage failed: %s", exc)
        await message.answer("The database did not answer. Please try again in a minute.")
        return
    trace_id = next((m.trace_id for m in reversed(recent) if m.trace_id), None)
    if trace_id is None:
        await message.answer("No traced message in this chat yet.")
        return
    url = await tracing.trace_url(trace_id)
    if url is None:
        await message.answer(f"Latest trace: {trace_id} (Langfuse did not give a link just now).")
        return
    await message.answer(f"Latest trace of this chat: {url}")


async def on_refused(message: Message) -> None:
    await message.answer(REFUSAL)


def create_router() -> Router:
    router = Router(name=__name__)
    admins = Router(name=f"{__name__}.admins")
    admins.message.filter(IsAdmin())
    admins.message.register(on_setmodel, Command("setmodel"))
    admins.message.register(on_resetmodel, Command("resetmodel"))
    admins.message.register(on_models, Command("models"))
    admins.message.register(on_agents, Command("agents"))
    admins.message.register(on_modelhistory, Command("modelhistory"))
    admins.message.register(on_trace, Command("trace"))
    others = Router(name=f"{__name__}.refusal")
    others.message.register(on_refused, Command(*ADMIN_COMMANDS))
    router.include_routers(admins, others)
    return router
