"""The admins' side of access: Approve / Deny under a waiting stranger, and `/users`.

    /users                 who is allowed, waiting, blocked (and how many were refused)
    /users allow <id>      let a user (or a group, by its negative chat id) in
    /users block <id>      a blocked user gets one notice, then is ignored

Approving (by the button or `/users allow`) answers the message the stranger has been waiting
on: the stored update goes through the dispatcher again, as if it had just arrived, on the replica
where the admin pressed. Every replica lets them in on their next message: a stranger is looked
up in the database on every message (`bot.services.access`).
"""

from __future__ import annotations

import asyncio
import logging

from aiogram import Bot, Dispatcher, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, Message, Update

from bot.app import Services
from bot.services.access import AccessService
from bot.storage.access_models import AccessEntry
from bot.storage.repositories import StorageError
from bot.telegram.access import AccessCallback, user_label
from bot.telegram.routers.admin import IsAdmin

log = logging.getLogger(__name__)

USAGE = "Usage: /users, /users allow <id>, /users block <id> (a group by its negative chat id)."
# Waiting messages being answered after an approval (kept so the tasks are not collected).
_answering: set[asyncio.Task[None]] = set()


def _by(user: object) -> str:
    user_id = getattr(user, "id", None)
    username = getattr(user, "username", None)
    return f"tg:{user_id}" + (f" (@{username})" if username else "")


def _fmt(entry: AccessEntry) -> str:
    label = f" {entry.label}" if entry.label else ""
    when = entry.updated_at.strftime("%Y-%m-%d %H:%M UTC")
    by = f", by {entry.decided_by}" if entry.decided_by else ""
    return f"  {entry.subject_id}{label} ({when}{by})"


def render_users(services: Services, entries: list[AccessEntry]) -> str:
    settings = services.settings
    groups: dict[str, list[AccessEntry]] = {"allowed": [], "pending": [], "blocked": []}
    refused = [entry for entry in entries if entry.status == "refused"]
    for entry in entries:
        groups.setdefault(entry.status, []).append(entry)
    lines = [
        f"Access: {settings.access_mode} (ACCESS_MODE). "
        f"Admins: {', '.join(str(i) for i in settings.admin_ids) or 'none'}."
    ]
    env = [str(i) for i in settings.allowed_user_ids] + [str(i) for i in settings.allowed_chat_ids]
    if env:
        lines.append(f"Allowed by the environment: {', '.join(env)}")
    lines.append(f"Allowed here ({len(groups['allowed'])}):")
    lines += [_fmt(e) for e in groups["allowed"]] or ["  nobody yet"]
    lines.append(f"Waiting for approval ({len(groups['pending'])}):")
    lines += [_fmt(e) + f"  /users allow {e.subject_id}" for e in groups["pending"]] or ["  nobody"]
    lines.append(f"Blocked ({len(groups['blocked'])}):")
    lines += [_fmt(e) for e in groups["blocked"]] or ["  nobody"]
    if refused:
        latest = ", ".join(f"{e.subject_id}{' ' + e.label if e.label else ''}" for e in refused[:5])
        lines.append(f"Refused once, not on the list: {len(refused)} (latest: {latest})")
    return "\n".join(lines)


async def _edit_admin_messages(bot: Bot, entry: AccessEntry, outcome: str) -> None:
    for ref in (entry.admin_messages or "").split(","):
        chat_id, _, message_id = ref.partition(":")
        if not (chat_id.lstrip("-").isdigit() and message_id.isdigit()):
            continue
        label = f"{entry.label}, id {entry.subject_id}" if entry.label else str(entry.subject_id)
        try:
            await bot.edit_message_text(
                text=f"{label}: {outcome}", chat_id=int(chat_id), message_id=int(message_id)
            )
        except TelegramAPIError as exc:
            log.info("could not update an approval message: %s", exc)


def _answer_waiting(
    dispatcher: Dispatcher, bot: Bot, access: AccessService, entry: AccessEntry
) -> None:
    """Run the message the stranger waited on through the dispatcher, in the background (the
    admin's button press is answered at once)."""
    raw = entry.waiting_update
    if raw is None:
        return

    async def answer() -> None:
        try:
            update = Update.model_validate_json(raw, context={"bot": bot})
            await dispatcher.feed_update(bot, update)
        except Exception:
            log.exception("could not answer the waiting message of %s", entry.subject_id)
            return
        try:
            await access.answered(entry.subject_id)
        except StorageError as exc:
            log.warning("could not clear the waiting message of %s: %s", entry.subject_id, exc)

    task = asyncio.create_task(answer(), name=f"access-waiting-{entry.subject_id}")
    _answering.add(task)
    task.add_done_callback(_answering.discard)


async def _welcome(bot: Bot, entry: AccessEntry) -> None:
    if entry.subject_id > 0:
        text = "Good news: an admin let you in."
        if entry.waiting_update:
            text += " Here's my answer to your message."
    else:
        text = "An admin enabled me in this group."
    try:
        await bot.send_message(entry.subject_id, text)
    except TelegramAPIError as exc:
        log.info("could not tell %s they were let in: %s", entry.subject_id, exc)


async def on_decision(
    query: CallbackQuery,
    callback_data: AccessCallback,
    services: Services,
    bot: Bot,
    dispatcher: Dispatcher,
) -> None:
    access = services.access
    if access is None or callback_data.action not in ("a", "d"):
        await query.answer("That button is not valid any more.")
        return
    approve = callback_data.action == "a"
    by = _by(query.from_user)
    try:
        entry = await access.decide(callback_data.subject, approve=approve, by=by)
    except StorageError as exc:
        log.error("could not record an access decision: %s", exc)
        await query.answer("The database did not answer. Please try again in a minute.")
        return
    if entry is None:
        await query.answer("Someone already decided on this one (see /users).")
        return
    outcome = f"approved by {by}" if approve else f"denied by {by}"
    await query.answer("Approved." if approve else "Denied.")
    await _edit_admin_messages(bot, entry, outcome)
    log.info("access of %s %s", entry.subject_id, outcome)
    if approve:
        await _welcome(bot, entry)
        _answer_waiting(dispatcher, bot, access, entry)
    else:
        try:
            await bot.send_message(entry.subject_id, "Sorry, the bot's admins did not let you in.")
        except TelegramAPIError as exc:
            log.info("could not tell %s they were denied: %s", entry.subject_id, exc)


async def on_users(
    message: Message,
    command: CommandObject,
    services: Services,
    bot: Bot,
    dispatcher: Dispatcher,
) -> None:
    access = services.access
    if access is None:
        await message.answer("Access control is not available.")
        return
    args = (command.args or "").split()
    try:
        if not args:
            await message.answer(render_users(services, await access.entries()))
            return
        if len(args) != 2 or args[0] not in ("allow", "block"):
            await message.answer(USAGE)
            return
        try:
            subject = int(args[1])
        except ValueError:
            await message.answer(f"That is not a Telegram id (a number). {USAGE}")
            return
        by = _by(message.from_user)
        if args[0] == "block":
            if access.is_admin(subject):
                await message.answer(
                    f"{subject} is an admin (ADMIN_IDS): admins are always let in."
                )
                return
            await access.block(subject, by=by)
            await message.answer(f"Blocked {subject}: they get one notice, then are ignored.")
            return
        entry = await access.allow(subject, by=by)
    except StorageError as exc:
        log.error("/users: storage failed: %s", exc)
        await message.answer("The database did not answer. Please try again in a minute.")
        return
    await message.answer(f"Allowed {subject}{' (' + entry.label + ')' if entry.label else ''}.")
    if entry.admin_messages:
        await _edit_admin_messages(bot, entry, f"allowed by {by} (/users allow)")
    if entry.waiting_update:
        await _welcome(bot, entry)
        _answer_waiting(dispatcher, bot, access, entry)


def create_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.filter(IsAdmin())
    router.message.filter(IsAdmin())
    router.callback_query.register(on_decision, AccessCallback.filter())
    router.message.register(on_users, Command("users"))
    return router


__all__ = ["create_router", "render_users", "user_label"]
