"""Admin commands, for the Telegram ids in ADMIN_IDS only.

The admin-only router is filtered as a whole (`IsAdmin`); a sibling router after it answers the
same commands from anyone else with a polite refusal, so nothing changes and nothing leaks.
The model commands (`/setmodel`, `/resetmodel`, `/rollback`, `/models`, `/agents`,
`/modelhistory`, `/catalog`) are `bot.services.admin_commands`, shared with the console: this
file only hands over the text and answers with what comes back.
"""

from __future__ import annotations

import html
import logging

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, Message

from bot.app import Services
from bot.services.admin_commands import ADMIN_COMMANDS as MODEL_COMMANDS
from bot.services.admin_commands import AdminCommands
from bot.storage.repositories import StorageError
from bot.telegram.routers.common import trace_review

log = logging.getLogger(__name__)

# `/users` is `bot.telegram.routers.users` (before this router); refused here like the rest.
ADMIN_COMMANDS = (*MODEL_COMMANDS, "trace", "users")
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


# Under Telegram's 4096 characters per message, with room for the <pre> tags and escaping.
PRE_CHUNK = 3500


async def _pre(message: Message, text: str) -> None:
    """Tables read best in monospace; a long one goes as several messages, split at lines."""
    chunk: list[str] = []
    size = 0
    for line in text.splitlines():
        if chunk and size + len(line) + 1 > PRE_CHUNK:
            await _send_pre(message, "\n".join(chunk))
            chunk, size = [], 0
        chunk.append(line[:PRE_CHUNK])
        size += len(line) + 1
    await _send_pre(message, "\n".join(chunk))


async def _send_pre(message: Message, text: str) -> None:
    await message.answer(f"<pre>{html.escape(text, quote=False)}</pre>", parse_mode="HTML")


async def on_model_command(message: Message, command: CommandObject, admin: AdminCommands) -> None:
    user_id = message.from_user.id if message.from_user else None
    reply = await admin.handle(
        command.command, command.args, by=admin_tag(message), user_id=user_id
    )
    if reply.monospace:
        await _pre(message, reply.text)
    else:
        await message.answer(reply.text)


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
    admins.message.register(on_model_command, Command(*MODEL_COMMANDS))
    admins.message.register(on_trace, Command("trace"))
    others = Router(name=f"{__name__}.refusal")
    others.message.register(on_refused, Command(*ADMIN_COMMANDS))
    router.include_routers(admins, others)
    return router
