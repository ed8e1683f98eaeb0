"""`/budget` (admins) and `/usage` (everyone; admins may name a user or `bot`).

The text is `bot.services.budget_commands`; this file hands it over and answers. The budgets'
80 % alerts reach every admin through `admin_notifier` (installed by the runtime).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiogram import Bot, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import Message

from bot.app import Services
from bot.services.budget_commands import handle_budget, handle_usage
from bot.telegram.routers.admin import IsAdmin, admin_tag

log = logging.getLogger(__name__)


def admin_notifier(bot: Bot, admin_ids: list[int]) -> Callable[[str], Awaitable[None]]:
    """Send a text to every admin; an admin who never opened the bot is logged and skipped."""

    async def notify(text: str) -> None:
        for admin_id in admin_ids:
            try:
                await bot.send_message(admin_id, text)
            except TelegramAPIError as exc:
                log.warning("could not tell admin %s: %s", admin_id, exc)

    return notify


async def on_budget(message: Message, command: CommandObject, services: Services) -> None:
    if services.budgets is None:
        await message.answer("Budgets are not available.")
        return
    await message.answer(await handle_budget(services.budgets, command.args, by=admin_tag(message)))


async def on_usage(message: Message, command: CommandObject, services: Services) -> None:
    user = message.from_user
    if services.budgets is None or user is None:
        await message.answer("Usage is not available.")
        return
    ledger = services.storage.ledger if services.ledger is not None else None
    reply = await handle_usage(
        services.budgets,
        ledger,
        command.args,
        user_id=user.id,
        is_admin=user.id in services.settings.admin_ids,
    )
    await message.answer(reply)


def create_router() -> Router:
    router = Router(name=__name__)
    admins = Router(name=f"{__name__}.admins")
    admins.message.filter(IsAdmin())
    admins.message.register(on_budget, Command("budget"))
    router.include_router(admins)
    router.message.register(on_usage, Command("usage"))
    return router
