"""Users' archives in the chat: a document sent in a private chat becomes an archive; `/archives`
lists them with buttons (searched by default or not, delete with a confirmation).

    user sends biology.pdf  ->  "Reading “biology.pdf”…"  (edited: "page 40 of 250")
                            ->  "Added “biology.pdf”: 250 pages, 1,034 passages. ..."

The bot downloads the file (`getFile`, up to Telegram's 20 MB for bots) only after the size and
the user's limits allow it, and `ArchiveService.ingest` stores all of it or nothing: a refused,
damaged or empty file gets the service's kind message and leaves nothing behind. Progress edits
one status message, at most every PROGRESS_EVERY seconds, and only for files long enough to need it.
"""

from __future__ import annotations

import logging
import time

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from bot.app import Services
from bot.archives import (
    Archive,
    ArchiveError,
    ArchiveService,
    ArchiveUsage,
    IngestProgress,
)
from bot.archives.errors import megabytes
from bot.storage.repositories import StorageError
from bot.telegram.filters import Magic
from bot.telegram.middlewares import typing_action

log = logging.getLogger(__name__)

# Telegram lets a bot download files of up to 20 MB (getFile); larger ones cannot reach us.
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
# Seconds between two edits of the progress message (Telegram throttles edits per chat).
PROGRESS_EVERY = 2.0

OFF = "Archives are not available on this bot."
NO_STORAGE = "Sorry, I can't reach my archive store right now. Please try again in a minute."
TOO_BIG = (
    "“{name}” is {size}; Telegram lets me download files of up to 20 MB. Split it into smaller "
    "files (or export only the chapters you need) and send those."
)
EMPTY_LIST = (
    "You have no archives yet. Send me a document here (PDF, plain text, Markdown or HTML, up "
    "to 20 MB) and I'll keep it: when you ask me something, or use /learn, I'll look in your "
    "notes and say where I found it."
)


class ArchiveAction(CallbackData, prefix="arch"):
    """A button of `/archives`: `on`/`off` (search by default), `del` (ask), `yes`/`no`."""

    action: str
    id: int


def _service(services: Services) -> ArchiveService | None:
    return services.archives


def describe_archive(archive: Archive) -> str:
    pages = f"{archive.page_count} page{'s' if archive.page_count != 1 else ''}"
    passages = f"{archive.passage_count:,} passage{'s' if archive.passage_count != 1 else ''}"
    return f"{pages}, {passages}"


def list_text(archives: list[Archive], usage: ArchiveUsage, service: ArchiveService) -> str:
    if not archives:
        return EMPTY_LIST
    limits = service.limits
    lines = [
        f"Your archives ({usage.files} of {limits.max_files} files, "
        f"{megabytes(usage.size_bytes)} of {megabytes(limits.max_bytes)}):"
    ]
    for archive in archives:
        mark = "✅" if archive.is_active else "⏸"
        lines.append(f"{mark} {archive.name}: {describe_archive(archive)}")
    lines.append(
        "\n✅ = I search it for every message and lesson; ⏸ = kept but not searched. "
        "Tap to switch; 🗑 deletes (I'll ask first)."
    )
    return "\n".join(lines)


def list_keyboard(archives: list[Archive]) -> InlineKeyboardMarkup | None:
    if not archives:
        return None
    rows = []
    for archive in archives:
        switch = "off" if archive.is_active else "on"
        label = ("✅ " if archive.is_active else "⏸ ") + _short(archive.name)
        rows.append(
            [
                InlineKeyboardButton(
                    text=label, callback_data=ArchiveAction(action=switch, id=archive.id).pack()
                ),
                InlineKeyboardButton(
                    text="🗑", callback_data=ArchiveAction(action="del", id=archive.id).pack()
                ),
            ]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def confirm_keyboard(archive: Archive) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text="Yes, delete it",
                    callback_data=ArchiveAction(action="yes", id=archive.id).pack(),
                ),
                InlineKeyboardButton(
                    text="Keep it", callback_data=ArchiveAction(action="no", id=archive.id).pack()
                ),
            ]
        ]
    )


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def added_text(archive: Archive) -> str:
    return (
        f"Added “{archive.name}”: {describe_archive(archive)}. I'll look in it when you ask me "
        "something or use /learn, and say where I found it. /archives lists your archives."
    )


class Progress:
    """Edits one status message as the ingest goes, at most every PROGRESS_EVERY seconds."""

    def __init__(self, bot: Bot, status: Message, name: str) -> None:
        self.bot, self.status, self.name = bot, status, name
        self._last = time.monotonic()
        self._shown = ""

    async def __call__(self, progress: IngestProgress) -> None:
        if progress.stage == "done" or progress.total <= 1:
            return
        now = time.monotonic()
        if now - self._last < PROGRESS_EVERY:
            return
        if progress.stage == "reading":
            text = f"Reading “{self.name}”: page {progress.done} of {progress.total}…"
        else:
            text = f"Storing “{self.name}”: {progress.fraction:.0%}…"
        if text == self._shown:
            return
        self._last, self._shown = now, text
        await self.bot.edit_message_text(
            text=text, chat_id=self.status.chat.id, message_id=self.status.message_id
        )


async def _finish(bot: Bot, status: Message | None, chat_id: int, text: str) -> None:
    """Replace the status message with the outcome (or send it, when there is none)."""
    if status is not None:
        try:
            await bot.edit_message_text(
                text=text, chat_id=status.chat.id, message_id=status.message_id
            )
            return
        except TelegramAPIError as exc:
            log.info("could not edit the archive status message: %s", exc)
    await bot.send_message(chat_id=chat_id, text=text)


async def on_document(message: Message, bot: Bot, services: Services) -> None:
    document = message.document
    if document is None or message.from_user is None:
        return
    service = _service(services)
    if service is None:
        await message.answer(OFF)
        return
    user_id = message.from_user.id
    name = document.file_name or "document"
    size = document.file_size or 0
    if size > MAX_DOWNLOAD_BYTES:
        await message.answer(TOO_BIG.format(name=name, size=megabytes(size)))
        return
    try:
        # The limits before the download: a refusal costs the user no wait.
        service.check_room(name, size, await service.usage(user_id))
    except ArchiveError as exc:
        await message.answer(exc.user_message)
        return
    except StorageError as exc:
        log.error("could not read the archive usage of user %s: %s", user_id, exc)
        await message.answer(NO_STORAGE)
        return
    status: Message | None = None
    try:
        status = await message.answer(f"Reading “{name}”…")
    except TelegramAPIError as exc:
        log.info("could not send the archive status message: %s", exc)
    async with typing_action(bot, message.chat.id, action="upload_document"):
        try:
            downloaded = await bot.download(document)
        except TelegramAPIError as exc:
            log.warning("could not download a document of user %s: %s", user_id, exc)
            await _finish(
                bot,
                status,
                message.chat.id,
                f"I couldn't download “{name}” from Telegram. Please send it again.",
            )
            return
        data = downloaded.read() if downloaded is not None else b""
        progress = Progress(bot, status, name) if status is not None else None
        try:
            archive = await service.ingest(
                user_id, name, data, mime=document.mime_type, on_progress=progress
            )
        except ArchiveError as exc:
            await _finish(bot, status, message.chat.id, exc.user_message)
            return
        except StorageError as exc:
            log.error("could not store an archive of user %s: %s", user_id, exc)
            await _finish(bot, status, message.chat.id, NO_STORAGE + " Nothing was stored.")
            return
    await _finish(bot, status, message.chat.id, added_text(archive))


async def _render(service: ArchiveService, user_id: int) -> tuple[str, InlineKeyboardMarkup | None]:
    archives = await service.list(user_id)
    usage = await service.usage(user_id)
    return list_text(archives, usage, service), list_keyboard(archives)


async def on_archives(message: Message, services: Services) -> None:
    service = _service(services)
    if service is None:
        await message.answer(OFF)
        return
    if message.chat.type != "private":
        await message.answer("Your archives are personal: send /archives to me in a private chat.")
        return
    user_id = message.from_user.id if message.from_user else message.chat.id
    try:
        text, keyboard = await _render(service, user_id)
    except StorageError as exc:
        log.error("could not list the archives of user %s: %s", user_id, exc)
        await message.answer(NO_STORAGE)
        return
    await message.answer(text, reply_markup=keyboard)


async def on_archive_action(
    query: CallbackQuery, callback_data: ArchiveAction, services: Services
) -> None:
    service = _service(services)
    if service is None:
        await query.answer(OFF, show_alert=True)
        return
    user_id = query.from_user.id
    action = callback_data.action
    try:
        if action in ("on", "off"):
            archive = await service.set_active(user_id, callback_data.id, action == "on")
            note = (
                f"I'll search “{_short(archive.name)}” again."
                if archive.is_active
                else f"“{_short(archive.name)}” is kept, but I won't search it."
            )
        elif action == "del":
            archive = await service.get(user_id, callback_data.id)
            await query.answer()
            await _edit(
                query,
                f"Delete “{archive.name}” ({describe_archive(archive)})? This cannot be undone.",
                confirm_keyboard(archive),
            )
            return
        elif action == "yes":
            archive = await service.delete(user_id, callback_data.id)
            note = f"Deleted “{_short(archive.name)}”."
        else:
            note = "Kept."
        text, keyboard = await _render(service, user_id)
    except ArchiveError as exc:
        await query.answer(exc.user_message, show_alert=True)
        return
    except StorageError as exc:
        log.error("archive action %s of user %s failed: %s", action, user_id, exc)
        await query.answer(NO_STORAGE, show_alert=True)
        return
    await query.answer(note)
    await _edit(query, text, keyboard)


async def _edit(query: CallbackQuery, text: str, keyboard: InlineKeyboardMarkup | None) -> None:
    if not isinstance(query.message, Message):
        return
    try:
        await query.message.edit_text(text, reply_markup=keyboard)
    except TelegramAPIError as exc:
        log.info("could not update the /archives message: %s", exc)


def create_command_router() -> Router:
    """`/archives`, behind the dispatcher's command gate."""
    router = Router(name=f"{__name__}.commands")
    router.message.register(on_archives, Command("archives"))
    return router


def create_router() -> Router:
    """Documents and the `/archives` buttons (not commands: before the chat router)."""
    router = Router(name=__name__)
    router.message.register(on_document, Magic(F.document), Magic(F.chat.type == "private"))
    router.callback_query.register(on_archive_action, ArchiveAction.filter())
    return router
