"""The real Dispatcher long-polling the fake Bot API: ordering, concurrency, user loading."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiogram import Bot, Dispatcher, Router
from aiogram.fsm.storage.base import StorageKey
from aiogram.types import Message

from bot.storage.models import User, UserSettings
from bot.storage.sqlite import SQLiteStorage
from bot.telegram.middlewares import UserLoaderMiddleware, typing_action
from bot.telegram.ordering import ChatEventIsolation, RedisChatEventIsolation
from bot.telegram.streaming import ReplyStreamer
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.conftest import eventually, polling


async def test_polling_delivers_messages_and_the_streamed_answer(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    router = Router(name="echo")

    @router.message()
    async def echo(message: Message, bot: Bot) -> None:
        async with typing_action(bot, message.chat.id):
            streamer = ReplyStreamer(bot, message.chat.id, draft_interval=0.01)
            for word in (message.text or "").split():
                await streamer.push(f"**{word}** ")
                await asyncio.sleep(0.02)
            await streamer.finish()

    dp = Dispatcher(events_isolation=ChatEventIsolation())
    dp.include_router(router)
    async with polling(dp, bot):
        tg.user_message("hello there polling world", user_id=77)
        (call,) = await tg.wait_for_call("sendMessage", chat_id=77)
    assert call.params["parse_mode"] == "HTML"
    assert [m.text for m in tg.chat_messages(77)] == ["hello there polling world"]
    assert tg.calls_of("sendChatAction", chat_id=77)  # typing was shown
    assert tg.calls_of("sendMessageDraft", chat_id=77)  # and drafts before the final message


async def test_two_quick_messages_from_one_chat_are_handled_in_order(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    events: list[tuple[str, str]] = []
    router = Router(name="slow-first")

    @router.message()
    async def handle(message: Message) -> None:
        events.append(("start", message.text or ""))
        if message.text == "first":
            await asyncio.sleep(0.3)  # the first takes longer: without isolation it would lose
        events.append(("end", message.text or ""))
        await message.answer(f"re: {message.text}")

    isolation = ChatEventIsolation()
    dp = Dispatcher(events_isolation=isolation)
    dp.include_router(router)
    async with polling(dp, bot):
        tg.user_message("first", user_id=31, chat_id=-31)
        tg.user_message("second", user_id=32, chat_id=-31)  # another user, same group
        await tg.wait_for_call("sendMessage", chat_id=-31, count=2)
    assert events == [("start", "first"), ("end", "first"), ("start", "second"), ("end", "second")]
    assert [m.text for m in tg.chat_messages(-31)] == ["re: first", "re: second"]
    assert isolation.active_chats == 0  # locks are dropped once a chat is idle


async def test_different_chats_run_concurrently(tg: FakeTelegramServer, bot: Bot) -> None:
    events: list[str] = []
    b_started = asyncio.Event()
    router = Router(name="concurrent")

    @router.message()
    async def handle(message: Message) -> None:
        events.append(f"start {message.chat.id}")
        if message.chat.id == 41:
            # Chat 41 can only proceed once chat 42's update has started: if chats were
            # serialized this would time out and record it.
            try:
                await asyncio.wait_for(b_started.wait(), 5)
            except TimeoutError:
                events.append("serialized!")
        else:
            b_started.set()
        events.append(f"end {message.chat.id}")
        await message.answer("ok")

    dp = Dispatcher(events_isolation=ChatEventIsolation())
    dp.include_router(router)
    async with polling(dp, bot):
        tg.user_message("a", user_id=41)
        tg.user_message("b", user_id=42)
        await tg.wait_for_call("sendMessage", count=2)
    assert events == ["start 41", "start 42", "end 42", "end 41"]


async def test_user_loader_stores_the_user_once_per_update(
    tg: FakeTelegramServer, bot: Bot, tmp_path: Path
) -> None:
    storage = SQLiteStorage(str(tmp_path / "bot.db"))
    await storage.connect()
    try:
        await storage.settings.save(UserSettings(user_id=55, default_model="openai:gpt-4o-mini"))
        seen: list[tuple[User, UserSettings, bool]] = []
        router = Router(name="loader")

        @router.message()
        async def handle(
            message: Message, db_user: User, user_settings: UserSettings, storage_ok: bool
        ) -> None:
            seen.append((db_user, user_settings, storage_ok))
            await message.answer("ok")

        dp = Dispatcher(events_isolation=ChatEventIsolation())
        dp.update.outer_middleware(UserLoaderMiddleware(storage.users, storage.settings))
        dp.include_router(router)
        async with polling(dp, bot):
            tg.user_message("hi", user_id=55, first_name="Ada", username="ada")
            tg.user_message("hi", user_id=56)
            await tg.wait_for_call("sendMessage", count=2)
        stored = await storage.users.get(55)
        assert stored is not None
        assert (stored.first_name, stored.username) == ("Ada", "ada")
        by_id = {u.id: (u, s, ok) for u, s, ok in seen}
        assert by_id[55][1].default_model == "openai:gpt-4o-mini"
        assert by_id[56][1] == UserSettings(user_id=56, updated_at=by_id[56][1].updated_at)
        assert by_id[55][2]
        assert by_id[56][2]
    finally:
        await storage.close()


class _BrokenUsers:
    async def touch(self, user: User) -> User:
        raise ConnectionError("database down")

    async def get(self, user_id: int) -> User | None:
        raise ConnectionError("database down")


async def test_storage_failure_does_not_cost_the_reply(tg: FakeTelegramServer, bot: Bot) -> None:
    seen: list[Any] = []
    router = Router(name="loader")

    @router.message()
    async def handle(message: Message, db_user: User, storage_ok: bool) -> None:
        seen.append((db_user.id, db_user.first_name, storage_ok))
        await message.answer("still here")

    dp = Dispatcher()
    dp.update.outer_middleware(UserLoaderMiddleware(_BrokenUsers()))
    dp.include_router(router)
    async with polling(dp, bot):
        tg.user_message("hi", user_id=57, first_name="Bob")
        await tg.wait_for_call("sendMessage", chat_id=57)
    assert seen == [(57, "Bob", False)]


def _key(chat_id: int, user_id: int = 1) -> StorageKey:
    return StorageKey(bot_id=1, chat_id=chat_id, user_id=user_id)


async def test_redis_isolation_orders_one_chat_across_replicas(redis_url: str) -> None:
    replica_a = RedisChatEventIsolation.from_url(
        redis_url, prefix="test-chat-lock", poll_interval=0.01
    )
    replica_b = RedisChatEventIsolation.from_url(
        redis_url, prefix="test-chat-lock", poll_interval=0.01
    )
    events: list[str] = []
    a_inside = asyncio.Event()
    release_a = asyncio.Event()

    async def on_a() -> None:
        async with replica_a.lock(_key(-900, 1)):
            events.append("a in")
            a_inside.set()
            await release_a.wait()
            events.append("a out")

    async def on_b(chat_id: int, label: str) -> None:
        async with replica_b.lock(_key(chat_id, 2)):
            events.append(f"{label} in")

    try:
        task_a = asyncio.create_task(on_a())
        await a_inside.wait()
        other_chat = asyncio.create_task(on_b(-901, "other chat"))
        same_chat = asyncio.create_task(on_b(-900, "b"))
        await other_chat  # a different chat is not blocked by replica A's lock
        await asyncio.sleep(0.1)
        assert not same_chat.done()  # the same chat on replica B waits for replica A
        release_a.set()
        await asyncio.gather(task_a, same_chat)
        assert events == ["a in", "other chat in", "a out", "b in"]
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_redis_isolation_without_redis_still_orders_locally() -> None:
    isolation = RedisChatEventIsolation.from_url("redis://127.0.0.1:1/0", poll_interval=0.01)
    events: list[str] = []

    async def handle(label: str, delay: float) -> None:
        async with isolation.lock(_key(-5)):
            events.append(f"{label} in")
            await asyncio.sleep(delay)
            events.append(f"{label} out")

    try:
        await asyncio.gather(handle("first", 0.05), handle("second", 0))
    finally:
        await isolation.close()
    assert events == ["first in", "first out", "second in", "second out"]


async def test_typing_action_survives_telegram_errors(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.fail_next("sendChatAction", status=400, description="Bad Request: not enough rights")
    async with typing_action(bot, -66, interval=0.02):
        await eventually(lambda: len(tg.calls_of("sendChatAction")) >= 3)
    count = len(tg.calls_of("sendChatAction"))
    await asyncio.sleep(0.06)
    assert len(tg.calls_of("sendChatAction")) == count  # stopped with the block
    assert tg.calls_of("sendChatAction")[0].status == 400


async def test_typing_action_stops_in_a_chat_that_blocked_the_bot(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    tg.fail_next("sendChatAction", status=403, description="Forbidden: bot was blocked by the user")
    async with typing_action(bot, 66, interval=0.02):
        await asyncio.sleep(0.1)
    # Every later call would be refused the same way: one attempt, then none.
    assert [c.status for c in tg.calls_of("sendChatAction")] == [403]


async def test_closing_the_isolation_with_updates_in_flight_lets_them_finish_cleanly() -> None:
    # Shutdown closes the isolation while updates still hold their chat's lock; leaving the
    # lock afterwards used to raise KeyError into the error route of every such update.
    isolation = ChatEventIsolation()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def update() -> str:
        async with isolation.lock(_key(-6)):
            inside.set()
            await release.wait()
        return "done"

    task = asyncio.create_task(update())
    await inside.wait()
    await isolation.close()
    release.set()

    assert await task == "done"
    assert isolation.active_chats == 0


class _CountingUsers:
    def __init__(self) -> None:
        self.touched: list[tuple[int, str | None]] = []

    async def touch(self, user: User) -> User:
        self.touched.append((user.id, user.first_name))
        return user

    async def get(self, user_id: int) -> User | None:
        return None


async def test_a_user_is_written_once_per_interval_unless_their_names_change(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    users = _CountingUsers()
    loader = UserLoaderMiddleware(users, touch_every=60)  # type: ignore[arg-type]
    seen: list[tuple[int, str | None]] = []
    router = Router(name="loader")

    @router.message()
    async def handle(message: Message, db_user: User) -> None:
        seen.append((db_user.id, db_user.first_name))
        await message.answer("ok")

    dp = Dispatcher(events_isolation=ChatEventIsolation())
    dp.update.outer_middleware(loader)
    dp.include_router(router)
    async with polling(dp, bot):
        for name in ("Ada", "Ada", "Ada", "Ada L."):
            mark = len(tg.calls)
            tg.user_message("hi", user_id=58, first_name=name)
            await tg.wait_for_call("sendMessage", chat_id=58, since=mark)
        loader.touch_every = 0  # the interval has passed
        mark = len(tg.calls)
        tg.user_message("hi", user_id=58, first_name="Ada L.")
        await tg.wait_for_call("sendMessage", chat_id=58, since=mark)

    assert users.touched == [(58, "Ada"), (58, "Ada L."), (58, "Ada L.")]
    assert seen == [(58, "Ada")] * 3 + [(58, "Ada L.")] * 2  # handlers always get the user
