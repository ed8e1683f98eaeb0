"""Command parsing and filters, through `dp.feed_update` on the real dispatcher (in-process
models, real SQLite; the Bot API calls the handlers make land on the fake server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.filters import Command
from aiogram.types import Message, Update

from bot.app import Services
from bot.telegram.dispatcher import BOT_COMMANDS, build_dispatcher
from bot.telegram.live_budget import LiveUpdateBudget
from bot.telegram.routers.admin import ADMIN_COMMANDS, REFUSAL
from tests.fakes.telegram_server import FakeTelegramServer
from tests.services.fakes import FakeProviders
from tests.telegram.conftest import fake_model_services

ADMIN = 7
USER = 8
GROUP = -100


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    async with fake_model_services(
        tmp_path, openrouter_api_key="sk-or-test", admin_ids=[ADMIN]
    ) as built:
        yield built


@pytest.fixture
def dp(services: Services) -> Dispatcher:
    return build_dispatcher(services)


class Feed:
    def __init__(self, dp: Dispatcher, bot: Bot, tg: FakeTelegramServer) -> None:
        self.dp, self.bot, self.tg = dp, bot, tg

    async def text(
        self, text: str, *, user_id: int = USER, chat_id: int | None = None, **kw: Any
    ) -> Any:
        raw = self.tg.user_message(text, user_id=user_id, chat_id=chat_id, **kw)
        return await self.dp.feed_update(
            self.bot, Update.model_validate(raw, context={"bot": self.bot})
        )

    async def raw(self, update: dict[str, Any]) -> Any:
        update = self.tg.push_update(update)
        return await self.dp.feed_update(
            self.bot, Update.model_validate(update, context={"bot": self.bot})
        )

    def sent(self, chat_id: int) -> list[str]:
        return [str(c.text) for c in self.tg.calls_of("sendMessage", chat_id=chat_id)]


@pytest.fixture
def feed(dp: Dispatcher, bot: Bot, tg: FakeTelegramServer) -> Feed:
    return Feed(dp, bot, tg)


def model_calls(services: Services) -> int:
    providers = services.providers
    assert isinstance(providers, FakeProviders)
    return sum(len(p.calls) for made in providers.made.values() for p in made)


async def test_every_router_is_included_and_commands_are_listed(dp: Dispatcher) -> None:
    names = [router.name for router in dp.sub_routers]
    assert names == [
        "bot.telegram.routers.errors",
        "commands",
        "bot.telegram.routers.feedback",
        "bot.telegram.routers.archives",
        "bot.telegram.routers.train",
        "bot.telegram.routers.chat",
    ]
    (commands,) = [router for router in dp.sub_routers if router.name == "commands"]
    assert [router.name for router in commands.sub_routers] == [
        "bot.telegram.routers.start",
        "bot.telegram.routers.settings",
        "bot.telegram.routers.users",
        "bot.telegram.routers.budget",
        "bot.telegram.routers.admin",
        "bot.telegram.routers.learn",
        "bot.telegram.routers.archives.commands",
        "bot.telegram.routers.train.commands",
    ]
    assert dp.resolve_used_update_types() == ["callback_query", "message"]
    commands_listed = {c.command for c in BOT_COMMANDS}
    assert commands_listed >= {"start", "help", "learn", "train", "model", "archives"}


async def test_a_plain_message_skips_every_command_filter_and_commands_still_work(
    feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real_call = Command.__call__

    async def counting_call(self: Command, message: Message, bot: Bot) -> Any:
        parsed.append(message.text or "")
        return await real_call(self, message, bot)

    monkeypatch.setattr(Command, "__call__", counting_call)
    await feed.text("hello there")
    assert parsed == []  # the commands router's gate turned it away: no Command filter ran
    assert len(feed.sent(USER)) == 1  # and the chat answered it

    await feed.text("/help")
    assert "/help" in parsed
    assert "/learn" in feed.sent(USER)[-1]  # the help text lists the commands


async def test_chat_learn_and_train_replies_draw_on_the_bots_live_update_budget(
    feed: Feed, dp: Dispatcher, services: Services
) -> None:
    budget = dp["live_budget"]
    assert isinstance(budget, LiveUpdateBudget)
    assert budget.per_second == services.settings.live_updates_per_second
    for text in ("hello", "/learn sleep", "/train sleep"):
        before = budget.granted + budget.refused
        await feed.text(text)
        assert budget.granted + budget.refused > before, text  # at least the "Thinking…" draft


def test_no_filter_or_handler_runs_in_a_worker_thread(dp: Dispatcher) -> None:
    # aiogram runs a synchronous filter or handler through asyncio.to_thread: a thread hand-off
    # per update. A bare magic filter (F.text) or FSM State is one; wrap them (Magic, StateFilter).
    sync: list[str] = []

    def visit(router: Any) -> None:
        for observer in router.observers.values():
            for handler in observer.handlers:
                if not handler.awaitable:
                    sync.append(f"{router.name}: handler {handler.callback!r}")
                sync.extend(
                    f"{router.name}: filter {f.callback!r} of {handler.callback.__name__}"
                    for f in handler.filters or ()
                    if not f.awaitable
                )
            sync.extend(
                f"{router.name}: router filter {f.callback!r}"
                for f in observer._handler.filters or ()
                if not f.awaitable
            )
        for child in router.sub_routers:
            visit(child)

    visit(dp)
    assert sync == []


async def test_a_chat_message_reads_the_users_settings_once(
    feed: Feed, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    original = services.storage.settings.get

    async def counted(user_id: int) -> Any:
        reads.append(user_id)
        return await original(user_id)

    monkeypatch.setattr(services.storage.settings, "get", counted)
    await feed.text("hello")
    assert reads == [USER]
    assert len(feed.sent(USER)) == 1


async def test_two_dispatchers_can_be_built_from_the_same_services(services: Services) -> None:
    # Routers are made per dispatcher (a restart or a test builds another one).
    build_dispatcher(services)
    build_dispatcher(services)


async def test_admin_commands_need_their_arguments(feed: Feed) -> None:
    await feed.text("/setmodel strategist", user_id=ADMIN)
    await feed.text("/resetmodel", user_id=ADMIN)
    await feed.text("/modelhistory a b", user_id=ADMIN)
    usage = feed.sent(ADMIN)
    assert usage[0].startswith("Usage: /setmodel <target> <model>")
    assert usage[1].startswith("Usage: /resetmodel <target>")
    assert usage[2].startswith("Usage: /modelhistory [target]")
    for text in usage:
        assert "pipeline:<support|learn|train>, role:<chat|plan|post>, default" in text


async def test_every_admin_command_is_refused_to_others_and_changes_nothing(
    feed: Feed, services: Services
) -> None:
    for command in ADMIN_COMMANDS:
        await feed.text(f"/{command} strategist openai/gpt-4o", user_id=USER)
    assert feed.sent(USER) == [REFUSAL] * len(ADMIN_COMMANDS)
    assert await services.storage.model_config.get_all_active() == []


async def test_a_command_for_this_bot_by_name_works_and_one_for_another_bot_is_ignored(
    feed: Feed, services: Services
) -> None:
    await feed.text("/setmodel@coach_test_bot coach x/y", user_id=ADMIN, chat_id=GROUP)
    assert feed.sent(GROUP)[0].startswith("coach now runs on openrouter:x/y")
    # The catalog could not be fetched: set anyway, with a note saying so.
    assert "was not checked" in feed.sent(GROUP)[0]
    await feed.text("/setmodel@other_bot coach z/z", user_id=ADMIN, chat_id=GROUP)
    assert len(feed.sent(GROUP)) == 1
    assert await services.model_config.get_override("coach") == "x/y"


async def test_learn_without_a_topic_gets_usage_and_asks_no_model(
    feed: Feed, services: Services
) -> None:
    await feed.text("/learn   ")
    assert feed.sent(USER) == ["Usage: /learn <topic>, e.g. /learn spaced repetition"]
    assert model_calls(services) == 0


async def test_groups_only_answer_messages_addressed_to_the_bot(
    feed: Feed, services: Services
) -> None:
    assert await feed.text("talking to a friend", chat_id=GROUP) is UNHANDLED
    assert await feed.text("/unknown", chat_id=GROUP) is None  # someone else's command
    assert feed.tg.calls_of("sendMessage", chat_id=GROUP) == []
    assert model_calls(services) == 0
    await feed.text("hey @Coach_Test_Bot any tips?", chat_id=GROUP)
    assert model_calls(services) > 0
    (placeholder, *_rest) = feed.tg.calls_of("sendMessage", chat_id=GROUP)
    assert placeholder.text == "…"


async def test_unknown_commands_and_non_text_get_help_in_private(feed: Feed) -> None:
    await feed.text("/frobnicate now")
    await feed.raw(
        {
            "message": {
                "message_id": 99,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "from": feed.tg.user(USER),
                "sticker": {
                    "file_id": "f",
                    "file_unique_id": "u",
                    "type": "regular",
                    "width": 1,
                    "height": 1,
                    "is_animated": False,
                    "is_video": False,
                },
            }
        }
    )
    assert feed.sent(USER) == [
        "I don't know /frobnicate. Send /help for the commands.",
        "I can only read text for now. Tell me in words?",
    ]


async def test_oversized_input_gets_a_kind_answer_and_no_model_call(
    feed: Feed, dp: Dispatcher, services: Services
) -> None:
    dp["max_input_chars"] = 50
    await feed.text("x" * 51)
    await feed.text("/learn " + "y" * 51)
    (first, second) = feed.sent(USER)
    assert first == second
    assert "up to 50 characters" in first
    assert model_calls(services) == 0


async def test_setkey_in_a_group_is_deleted_and_refused(feed: Feed, services: Services) -> None:
    update = feed.tg.user_message("/setkey openai sk-secret-123456", user_id=USER, chat_id=GROUP)
    await feed.dp.feed_update(feed.bot, Update.model_validate(update, context={"bot": feed.bot}))
    (deleted,) = feed.tg.calls_of("deleteMessage", chat_id=GROUP)
    assert deleted.params["message_id"] == update["message"]["message_id"]
    (reply,) = feed.sent(GROUP)
    assert reply.startswith("Please send /setkey to me in a private chat.")
    assert "revoke" in reply
    assert "sk-secret" not in reply
    assert await services.storage.settings.get(USER) is None


async def test_setkey_usage_and_unknown_provider(feed: Feed) -> None:
    await feed.text("/setkey")
    await feed.text("/setkey openai")
    await feed.text("/setkey opnai sk-abc")
    replies = feed.sent(USER)
    assert replies[0].startswith("Usage: /setkey <provider> <key>")
    assert replies[1].startswith("Usage: /setkey <provider> <key>")
    assert replies[2].startswith("I don't know the provider 'opnai'. Did you mean openai?")
    # Anything that may carry a key is deleted; the bare command is not.
    assert len(feed.tg.calls_of("deleteMessage", chat_id=USER)) == 2


async def test_model_keyboard_offers_the_allowed_models_and_the_default(
    feed: Feed, services: Services
) -> None:
    await feed.text("/model")
    (call,) = feed.tg.calls_of("sendMessage", chat_id=USER)
    *rows, preference = call.params["reply_markup"]["inline_keyboard"]
    # The catalog's entries for users, by display name (an environment entry: its model).
    assert [row[0]["text"] for row in rows] == ["gpt-4o-mini", "✅ Bot default"]
    assert [row[0]["callback_data"] for row in rows] == [
        f"model:gpt-4o-mini:{USER}",
        f"model:-:{USER}",
    ]
    # Under them, the local/online preference (/prefer).
    assert [b["text"] for b in preference] == ["✅ Any", "Local only", "Online only"]
    assert preference[1]["callback_data"] == f"pref:local:{USER}"
    assert "Your preference: any" in str(call.params["text"])
    await feed.raw(feed.tg.callback_query(f"model:removed-since:{USER}", user_id=USER))
    (stale,) = feed.tg.calls_of("answerCallbackQuery")
    assert "no longer offered" in stale.params["text"]
    assert await services.storage.settings.get(USER) is None


async def test_the_error_route_answers_kindly(feed: Feed, dp: Dispatcher) -> None:
    class Broken:
        async def models(self, user_id: int | None) -> str:
            raise RuntimeError("boom")

    dp["admin"] = Broken()
    await feed.text("/models", user_id=ADMIN)
    assert feed.sent(ADMIN) == ["Sorry, something went wrong on my side. Please try again."]


async def test_a_train_answer_in_the_chat_state_is_graded_not_chatted(
    feed: Feed, services: Services
) -> None:
    await feed.text("/train fractions", chat_id=GROUP)
    providers = services.providers
    assert isinstance(providers, FakeProviders)
    # In a group the answer must be addressed to the bot; a command is never an answer.
    assert await feed.text("1/2", chat_id=GROUP) is UNHANDLED
    await feed.text("@coach_test_bot 3/4", user_id=USER + 1, chat_id=GROUP)
    exercises = await services.storage.exercises.list_for_user(USER)
    assert [e.answer for e in exercises if e.answer] == ["3/4"]  # anyone in the chat may answer
