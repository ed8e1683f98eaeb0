"""Documents and `/archives` through the real dispatcher (`dp.feed_update`) and the real aiogram
Bot: `getFile` and the download go to the fake Bot API server, the archive to a real SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.types import Update

from bot.app import Services
from bot.telegram.dispatcher import build_dispatcher
from bot.telegram.routers import archives as archives_router
from bot.telegram.routers.archives import ArchiveAction
from tests.archives.documents import corrupt_pdf, encrypted_pdf, pdf_bytes, textbook
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.conftest import fake_model_services

USER = 31
OTHER = 32


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    async with fake_model_services(tmp_path, archive_max_files=2, archive_max_mb=1) as built:
        yield built


class Chat:
    def __init__(self, dp: Dispatcher, bot: Bot, tg: FakeTelegramServer) -> None:
        self.dp, self.bot, self.tg = dp, bot, tg

    async def _feed(self, update: dict[str, Any]) -> Any:
        return await self.dp.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )

    async def text(self, text: str, *, user_id: int = USER) -> Any:
        return await self._feed(self.tg.user_message(text, user_id=user_id))

    async def document(self, data: bytes, name: str | None, **kw: Any) -> Any:
        kw.setdefault("user_id", USER)
        return await self._feed(self.tg.user_document(data, file_name=name, **kw))

    async def press(self, data: str, *, user_id: int = USER) -> Any:
        return await self._feed(self.tg.callback_query(data, user_id=user_id))

    def shown(self, chat_id: int = USER) -> list[str]:
        """The bot's messages in the chat as they read now (after edits)."""
        return [m.text for m in self.tg.chat_messages(chat_id)]

    def keyboard(self, chat_id: int = USER) -> list[list[dict[str, Any]]]:
        message = self.tg.chat_messages(chat_id)[-1]
        markup = message.reply_markup or {}
        rows: list[list[dict[str, Any]]] = markup.get("inline_keyboard", [])
        return rows


@pytest.fixture
def chat(services: Services, bot: Bot, tg: FakeTelegramServer) -> Chat:
    return Chat(build_dispatcher(services), bot, tg)


def _archives(services: Services) -> Any:
    assert services.archives is not None
    return services.archives


async def test_a_pdf_becomes_an_archive_and_the_reply_says_what_was_added(
    chat: Chat, services: Services, tg: FakeTelegramServer
) -> None:
    await chat.document(textbook(), "geo.pdf", mime_type="application/pdf")
    assert len(tg.downloads) == 1  # getFile, then the file itself, from the Bot API server
    [archive] = await _archives(services).list(USER)
    assert (archive.name, archive.page_count, archive.is_active) == ("geo.pdf", 12, True)
    [reply] = chat.shown()
    assert reply.startswith("Added “geo.pdf”: 12 pages, ")
    assert f"{archive.passage_count} passage" in reply
    [hit, *_] = await _archives(services).search(USER, "When was Quellport founded?")
    assert hit.citation == "geo.pdf, p. 7"
    assert await _archives(services).list(OTHER) == []


async def test_long_files_show_their_progress(
    chat: Chat, tg: FakeTelegramServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives_router, "PROGRESS_EVERY", 0.0)
    await chat.document(textbook(pages=40), "long.pdf")
    edits = [str(c.params["text"]) for c in tg.calls_of("editMessageText", chat_id=USER)]
    assert any("page 8 of 40" in text for text in edits)
    assert any(text.startswith("Storing “long.pdf”") for text in edits)
    # One status message, edited into the outcome at the end.
    [final] = chat.shown()
    assert final.startswith("Added “long.pdf”: 40 pages")


@pytest.mark.parametrize(
    ("data", "name", "says"),
    [
        (b"PK\x03\x04 a zip archive, not a document", "slides.pptx", "I can keep"),
        (encrypted_pdf([["Secret notes"]]), "locked.pdf", "protected by a password"),
        (b"", "empty.txt", "no text"),
        (pdf_bytes([[], []]), "scan.pdf", "text recognition"),
        (corrupt_pdf(), "broken.pdf", "damaged"),
    ],
)
async def test_files_that_cannot_be_read_get_a_kind_answer_and_leave_nothing(
    chat: Chat, services: Services, data: bytes, name: str, says: str
) -> None:
    await chat.document(data, name)
    [reply] = chat.shown()
    assert says in reply
    assert await _archives(services).list(USER) == []
    assert (await _archives(services).usage(USER)).files == 0


async def test_too_big_and_over_the_limits_are_refused_before_any_download(
    chat: Chat, services: Services, tg: FakeTelegramServer
) -> None:
    await chat.document(b"x", "huge.pdf", file_size=25 * 1024 * 1024)
    assert "up to 20 MB" in chat.shown()[-1]
    await chat.document(b"x", "big.txt", file_size=2_000_000)  # ARCHIVE_MAX_MB is 1
    assert "may hold 1.0 MB in all" in chat.shown()[-1]
    assert tg.calls_of("getFile") == []
    assert tg.downloads == []

    await chat.document(b"First notes about tides.", "a.txt")
    await chat.document(b"Second notes about moons.", "b.txt")
    await chat.document(b"Third notes about comets.", "c.txt")  # ARCHIVE_MAX_FILES is 2
    assert "You keep 2 archives, the most allowed" in chat.shown()[-1]
    assert [a.name for a in await _archives(services).list(USER)] == ["a.txt", "b.txt"]
    assert len(tg.downloads) == 2

    await chat.document(b"Again.", "a.txt")
    assert [a.name for a in await _archives(services).list(USER)] == ["a.txt", "b.txt"]


async def test_a_document_in_a_group_is_none_of_the_bots_business(
    chat: Chat, services: Services, tg: FakeTelegramServer
) -> None:
    await chat.document(b"Group notes.", "g.txt", chat_id=-500)
    assert tg.calls_of("sendMessage") == []
    assert tg.downloads == []
    assert await _archives(services).list(USER) == []


async def test_archives_lists_switches_and_deletes_after_a_confirmation(
    chat: Chat, services: Services
) -> None:
    await chat.text("/archives")
    assert "You have no archives yet" in chat.shown()[-1]

    await chat.document(textbook(), "geo.pdf")
    await chat.text("/archives")
    listing = chat.shown()[-1]
    assert "Your archives (1 of 2 files" in listing
    assert "✅ geo.pdf: 12 pages" in listing
    [[switch, delete]] = chat.keyboard()
    [archive] = await _archives(services).list(USER)
    assert switch["callback_data"] == ArchiveAction(action="off", id=archive.id).pack()

    await chat.press(switch["callback_data"])
    assert "⏸ geo.pdf" in chat.shown()[-1]
    assert not (await _archives(services).get(USER, archive.id)).is_active
    assert await _archives(services).retrieve(USER, "When was Quellport founded?") == []

    # Someone else's press of the same button finds nothing of theirs.
    await chat.press(ArchiveAction(action="on", id=archive.id).pack(), user_id=OTHER)
    assert not (await _archives(services).get(USER, archive.id)).is_active

    await chat.press(delete["callback_data"])
    assert chat.shown()[-1].startswith("Delete “geo.pdf” (12 pages")
    [[yes, keep]] = chat.keyboard()
    await chat.press(keep["callback_data"])
    assert len(await _archives(services).list(USER)) == 1

    await chat.press(delete["callback_data"])
    [[yes, keep]] = chat.keyboard()
    await chat.press(yes["callback_data"])
    assert await _archives(services).list(USER) == []
    assert "You have no archives yet" in chat.shown()[-1]
