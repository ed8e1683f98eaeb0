"""`/forget` forgets the facts too and says what it forgot; `/deleteme` erases everything the bot
holds about the user, archives included, after a confirmation only they can give. Through
`dp.feed_update` on the real dispatcher and real SQLite (issue 19, item 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiogram import Bot, Dispatcher

from bot.app import Services, build_services
from bot.config import Settings
from bot.pipeline.observer import NullObserver
from bot.storage.archive_models import NewArchive, NewPassage
from bot.storage.models import ChatSummary, StoredMessage, User, UserSettings
from bot.telegram.dispatcher import BOT_COMMANDS, build_dispatcher
from bot.telegram.routers.settings import NOT_YOUR_BUTTON
from bot.telegram.routers.start import USER_HELP
from tests.fakes.telegram_server import FakeTelegramServer
from tests.services.fakes import FakeProviders
from tests.telegram.test_routers import ADMIN, GROUP, USER, Feed

OTHER = 41


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'bot.db'}",
        default_model="openai:gpt-4o-mini",
        openai_api_key="sk-test",
        openrouter_api_key="sk-or-test",
        openrouter_base_url="http://127.0.0.1:9/api/v1",
        admin_ids=[ADMIN],
    )
    async with build_services(
        settings, providers=FakeProviders(), observer=NullObserver()
    ) as built:
        yield built


@pytest.fixture
def dp(services: Services) -> Dispatcher:
    return build_dispatcher(services)


@pytest.fixture
def feed(dp: Dispatcher, bot: Bot, tg: FakeTelegramServer) -> Feed:
    return Feed(dp, bot, tg)


async def _remember(services: Services, user: int) -> None:
    storage = services.storage
    await storage.facts.add_many(user, ["likes tea", "runs on Sundays", "lives in Oslo"])
    await storage.summaries.save(ChatSummary(chat_id=user, summary="They talked about tea."))
    for n in range(4):
        await storage.messages.add(
            StoredMessage(chat_id=user, user_id=user, role="user", text=f"m{n}")
        )


async def test_forget_in_private_forgets_history_summary_and_facts_and_says_so(
    feed: Feed, services: Services
) -> None:
    await _remember(services, USER)
    await feed.text("/forget")
    (reply,) = feed.sent(USER)
    assert reply == (
        "Done: I've forgotten this chat's 4 messages, its summary and the 3 facts I had noted "
        "about you."
    )
    storage = services.storage
    assert await storage.facts.list(USER) == []
    assert await storage.messages.recent(USER) == []
    assert await storage.summaries.get(USER) is None
    # The facts no longer reach a prompt.
    ctx = await services.conversation.build_context(
        "support", user_id=USER, chat_id=USER, text="hi"
    )
    assert ctx.facts == []


async def test_forget_in_a_group_clears_the_group_and_keeps_private_notes(
    feed: Feed, services: Services
) -> None:
    await _remember(services, USER)
    await services.storage.messages.add(
        StoredMessage(chat_id=GROUP, user_id=USER, role="user", text="in the group")
    )
    await feed.text("/forget", chat_id=GROUP)
    (reply,) = feed.sent(GROUP)
    assert reply.startswith("Done: I've forgotten this group's 1 message and its summary.")
    assert len(await services.storage.facts.list(USER)) == 3
    assert len(await services.storage.messages.recent(USER)) == 4


async def test_deleteme_erases_everything_after_the_users_own_confirmation(
    feed: Feed, services: Services
) -> None:
    storage = services.storage
    await _remember(services, USER)
    await storage.settings.save(UserSettings(user_id=USER, default_model="gpt-4o-mini"))
    await storage.messages.add(
        StoredMessage(chat_id=GROUP, user_id=USER, role="user", text="said in a group")
    )
    await storage.archives.create(
        NewArchive(user_id=USER, name="notes.txt", kind="text", size_bytes=10, page_count=1),
        [NewPassage(ordinal=0, text="cell membranes", page=1)],
        max_files=5,
        max_bytes=10_000,
    )
    await _remember(services, OTHER)

    await feed.text("/deleteme")
    (ask,) = feed.tg.calls_of("sendMessage", chat_id=USER)
    assert "erase everything" in str(ask.params["text"]).lower()
    buttons = ask.params["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == [f"erase:yes:{USER}", f"erase:no:{USER}"]
    # Nothing is erased by asking, nor by anyone else's press.
    assert len(await storage.facts.list(USER)) == 3
    await feed.raw(feed.tg.callback_query(f"erase:yes:{USER}", user_id=OTHER, chat_id=USER))
    assert feed.tg.calls_of("answerCallbackQuery")[-1].params["text"] == NOT_YOUR_BUTTON
    assert len(await storage.facts.list(USER)) == 3

    await feed.raw(feed.tg.callback_query(f"erase:yes:{USER}", user_id=USER))
    (done,) = feed.tg.calls_of("editMessageText", chat_id=USER)
    text = str(done.params["text"])
    assert text.startswith("Done: I erased everything I held about you")
    assert "1 archive" in text
    assert await storage.users.get(USER) is None
    assert await storage.settings.get(USER) is None
    assert await storage.facts.list(USER) == []
    assert await storage.messages.recent(USER) == []
    assert await storage.messages.recent(GROUP) == []
    assert await storage.summaries.get(USER) is None
    assert await storage.archives.list(USER) == []
    # Someone else's memory is untouched.
    assert len(await storage.facts.list(OTHER)) == 3
    assert len(await storage.messages.recent(OTHER)) == 4


async def test_deleteme_can_be_cancelled_and_is_listed(feed: Feed, services: Services) -> None:
    await _remember(services, USER)
    await storage_touch(services, USER)
    await feed.text("/deleteme")
    await feed.raw(feed.tg.callback_query(f"erase:no:{USER}", user_id=USER))
    (kept,) = feed.tg.calls_of("editMessageText", chat_id=USER)
    assert str(kept.params["text"]).startswith("Nothing was erased.")
    assert len(await services.storage.facts.list(USER)) == 3
    assert "deleteme" in {c.command for c in BOT_COMMANDS}
    assert "/deleteme" in USER_HELP
    await feed.text("/deleteme", chat_id=GROUP)
    assert feed.sent(GROUP)[-1].startswith("Please send /deleteme to me in a private chat")


async def storage_touch(services: Services, user: int) -> None:
    await services.storage.users.touch(User(id=user, first_name="Ann"))
