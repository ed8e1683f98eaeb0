"""Admin commands, for the Telegram ids in ADMIN_IDS only.

The admin-only router is filtered as a whole (`IsAdmin`); a sibling router after it answers the
same commands from anyone else with a polite refusal, so nothing changes and nothing leaks.
The model commands (`/setmodel`, `/resetmodel`, `/rollback`, `/models`, `/agents`,
`/modelhistory`, `/catalog`) are `bot.services.admin_commands`, shared with the console: this
file only hands over the text and answers with what comes back.
"""

from __future__ import annotations

import contextlib
import logging

from aiogram import Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.app import Services
from bot.replay.commands import BUTTON_PREFIX as REPLAY_BUTTON
from bot.replay.commands import parse_button
from bot.services.admin_commands import ADMIN_COMMANDS as MODEL_COMMANDS
from bot.services.admin_commands import AdminCommands
from bot.storage.repositories import StorageError
from bot.telegram.change_reports import RollBack
from bot.telegram.routers.common import send_pre, trace_review
from bot.telegram.routers.observatory import on_stats

log = logging.getLogger(__name__)

# `/users` and `/budget` are their own routers (before this one); refused here like the rest.
ADMIN_COMMANDS = (*MODEL_COMMANDS, "trace", "users", "stats", "budget")
REFUSAL = "Sorry, that command is for the bot's admins."


class IsAdmin(Filter):
    async def __call__(self, event: Message | CallbackQuery, services: Services) -> bool:
        user = event.from_user
        return user is not None and user.id in services.settings.admin_ids


def admin_tag(message: Message | CallbackQuery) -> str:
    """Who set it, as the history shows it: `tg:<id> (@name)`."""
    user = message.from_user
    if user is None:
        return "tg:unknown"
    return f"tg:{user.id}" + (f" (@{user.username})" if user.username else "")


class ReplayButton(Filter):
    """`/replay`'s confirmation button (its data is the request: `rp:<n>:<agent>:<model>`)."""

    async def __call__(self, query: CallbackQuery) -> bool:
        return (query.data or "").startswith(REPLAY_BUTTON)


async def on_model_command(message: Message, command: CommandObject, admin: AdminCommands) -> None:
    user_id = message.from_user.id if message.from_user else None
    reply = await admin.handle(
        command.command, command.args, by=admin_tag(message), user_id=user_id
    )
    if reply.confirm is not None:
        button = InlineKeyboardButton(text="Run the replay", callback_data=reply.confirm)
        markup = InlineKeyboardMarkup(inline_keyboard=[[button]])
        await message.answer(reply.text, reply_markup=markup)
    elif reply.monospace:
        await send_pre(message, reply.text)
    else:
        await message.answer(reply.text)


async def on_replay_button(query: CallbackQuery, admin: AdminCommands, services: Services) -> None:
    """`/replay`'s "Run the replay": the button goes (one press runs it), the replay runs as a
    task of its own (a chat's next messages do not wait for it) and its report follows."""
    request = parse_button(query.data or "")
    chat = query.message if isinstance(query.message, Message) else None
    if request is None or chat is None or services.replayer is None:
        await query.answer("That button is not valid any more.", show_alert=True)
        return
    await query.answer("Replaying…")
    with contextlib.suppress(TelegramAPIError):
        await chat.edit_reply_markup(reply_markup=None)
    await chat.answer(f"Replaying up to {request.n} inputs of {request.agent} on {request.model}…")
    by = admin_tag(query)

    async def work() -> None:
        try:
            for text in await admin.replay(request, by=by):
                await chat.answer(text)
        except Exception:
            log.exception("replay of %s on %s failed", request.agent, request.model)
            with contextlib.suppress(TelegramAPIError):
                await chat.answer("The replay failed; the log says why.")

    services.replayer.spawn(work())


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


async def on_rollback_button(
    query: CallbackQuery, callback_data: RollBack, admin: AdminCommands, services: Services
) -> None:
    """A change report's "Roll back": undo exactly that change, as `/rollback <target>` would;
    when the target changed again since, say so (the newest change is /rollback's to undo)."""
    target = callback_data.target
    try:
        newest = await services.model_config.rollback_candidate(target)
    except (StorageError, ValueError) as exc:
        log.warning("roll back button for %s: %s", target, exc)
        await query.answer("That could not be checked just now. Please try /rollback.")
        return
    if newest is None or newest.id != callback_data.change:
        await query.answer(
            f"{target} changed again since this report: use /modelhistory and /rollback {target}.",
            show_alert=True,
        )
        return
    reply = await admin.rollback(target, by=admin_tag(query))
    await query.answer("Done.")
    if isinstance(query.message, Message):
        await query.message.answer(reply)
        with contextlib.suppress(TelegramAPIError):
            await query.message.edit_reply_markup(reply_markup=None)


async def on_refused_button(query: CallbackQuery) -> None:
    await query.answer(REFUSAL, show_alert=True)


def create_router() -> Router:
    router = Router(name=__name__)
    admins = Router(name=f"{__name__}.admins")
    admins.message.filter(IsAdmin())
    admins.message.register(on_model_command, Command(*MODEL_COMMANDS))
    admins.message.register(on_trace, Command("trace"))
    admins.message.register(on_stats, Command("stats"))
    admins.callback_query.filter(IsAdmin())
    admins.callback_query.register(on_rollback_button, RollBack.filter())
    admins.callback_query.register(on_replay_button, ReplayButton())
    others = Router(name=f"{__name__}.refusal")
    others.message.register(on_refused, Command(*ADMIN_COMMANDS))
    others.callback_query.register(on_refused_button, RollBack.filter())
    others.callback_query.register(on_refused_button, ReplayButton())
    router.include_routers(admins, others)
    return router
