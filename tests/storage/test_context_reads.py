"""The reads that build a pipeline's context: issued together where each is a round trip
(InsForge), one after the other where each completes on the loop (SQLite), same result either way.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.llm.openai_compat import OpenAICompatibleProvider, make_openai_client
from bot.pipeline.runner import PipelineRunner
from bot.services.conversation import ConversationService
from bot.storage.insforge import InsForgeStorage
from bot.storage.models import ChatSummary, Exercise, StoredMessage
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from tests.fakes.insforge_server import FakeInsForge
from tests.fakes.ports import free_port


def _service(storage: Storage) -> ConversationService:
    # The default model is never called: building a context reads storage only.
    client = make_openai_client(
        provider="openai",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        api_key="sk-unused",
        timeout=1,
        max_retries=0,
    )
    llm = OpenAICompatibleProvider(provider="openai", model="unused", client=client)
    return ConversationService(storage, PipelineRunner(), {}, resolver=None, default_llm=llm)


async def _seed(storage: Storage, chat: int, user: int) -> None:
    for n in range(3):
        await storage.messages.add(
            StoredMessage(chat_id=chat, user_id=user, role="user", text=f"message {n}")
        )
    await storage.facts.add_many(user, ["likes tea"])


def _count_tasks() -> tuple[Counter[str], Callable[[], None]]:
    loop = asyncio.get_running_loop()
    made: Counter[str] = Counter()
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made[getattr(coro, "__qualname__", "?")] += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    return made, lambda: loop.set_task_factory(previous)


async def test_context_holds_history_and_facts_on_every_backend(
    storage: Storage, uid: Callable[[], int]
) -> None:
    user = uid()
    chat = user  # a private chat: Telegram gives it the user's id
    await _seed(storage, chat, user)
    ctx = await _service(storage).build_context("support", user_id=user, chat_id=chat, text="hi")
    assert [m.text for m in ctx.history] == ["message 0", "message 1", "message 2"]
    assert ctx.facts == ["likes tea"]
    assert ctx.private is True
    assert ctx.summary is None
    assert ctx.exercise is None
    # In a group the user's facts are not read: only what the group said reaches its prompts.
    group = -uid()
    in_group = await _service(storage).build_context(
        "support", user_id=user, chat_id=group, text="hi"
    )
    assert in_group.facts == []
    assert in_group.private is False


async def test_sqlite_reads_run_in_turn_without_tasks(
    tmp_path: Path, uid: Callable[[], int]
) -> None:
    storage = SQLiteStorage(str(tmp_path / "bot.db"))
    await storage.connect()
    assert storage.reads_overlap is False
    chat, user = uid(), uid()
    await _seed(storage, chat, user)
    service = _service(storage)
    made, restore = _count_tasks()
    try:
        ctx = await service.build_context("train", user_id=user, chat_id=chat, text="hi")
    finally:
        restore()
    assert len(ctx.history) == 3
    await storage.close()
    assert made == Counter()  # gather would have made one task per read (five here)


async def test_insforge_reads_the_context_in_one_request(
    fake_insforge: FakeInsForge, uid: Callable[[], int]
) -> None:
    storage = InsForgeStorage.from_url(fake_insforge.url, fake_insforge.api_key, timeout=40.0)
    await storage.connect()
    assert storage.reads_overlap is True
    user = uid()
    chat = user  # a private chat, where the user's facts are read too
    await _seed(storage, chat, user)
    await storage.summaries.save(
        ChatSummary(chat_id=chat, summary="they drink tea", message_count=3)
    )
    await storage.settings.set_default_model(user, "fast")
    exercise = await storage.exercises.create(
        Exercise(chat_id=chat, user_id=user, topic="tea", question="Which tea?")
    )
    service = _service(storage)
    before = len(fake_insforge.requests)
    ctx = await service.build_context("train", user_id=user, chat_id=chat, text="hi")
    made = fake_insforge.requests[before:]
    await storage.close()
    # History, summary, facts, settings and the open exercise: one round trip (decision 0020).
    assert [(method, path) for method, path, _ in made] == [
        ("POST", "/api/database/rpc/turn_context")
    ]
    assert [m.text for m in ctx.history] == ["message 0", "message 1", "message 2"]
    assert ctx.facts == ["likes tea"]
    assert ctx.summary == "they drink tea"
    assert ctx.summary_covers == 3
    assert ctx.user_model is not None
    assert ctx.user_model.choice == "fast"
    assert ctx.exercise is not None
    assert ctx.exercise.id == exercise.id
