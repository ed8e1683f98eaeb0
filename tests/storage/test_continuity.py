"""Answers while the database is down (`bot.continuity`), over the real backends: what was last
read stands in, messages wait in order and are written in one batch when the database is back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from bot.continuity import Continuity
from bot.storage.models import StoredMessage
from bot.storage.repositories import Storage, StorageUnavailable
from tests.fakes.insforge_server import FakeInsForge
from tests.storage.conftest import Backend, _insforge_backend


def message(chat: int, text: str) -> StoredMessage:
    return StoredMessage(chat_id=chat, user_id=chat, role="user", text=text)


@pytest.fixture
async def insforge(fake_insforge: FakeInsForge) -> AsyncIterator[tuple[FakeInsForge, Backend]]:
    backend = _insforge_backend(fake_insforge)
    yield fake_insforge, backend
    for storage in backend.opened:
        await storage.close()


async def test_a_turn_while_the_database_is_down_reads_memory_and_its_messages_come_later(
    insforge: tuple[FakeInsForge, Backend], uid: Callable[[], int]
) -> None:
    fake, backend = insforge
    storage: Storage = await backend.open()
    memory = Continuity(storage.messages, retry_after=0.05)
    chat = uid()
    await storage.messages.add(message(chat, "before"))

    turn = memory.turn()
    seen = await turn.read("history", chat, lambda: storage.messages.recent(chat), [])
    assert [m.text for m in seen] == ["before"]
    assert not turn.degraded
    await turn.add_message(message(chat, "up"))

    fake.down = True
    turn = memory.turn()
    seen = await turn.read("history", chat, lambda: storage.messages.recent(chat), [])
    assert [m.text for m in seen] == ["before", "up"]  # what was read, and added since
    assert turn.degraded
    await turn.add_message(message(chat, "down 1"))
    await turn.add_message(message(chat, "down 2"))
    assert memory.pending == 2
    assert memory.should_note(chat)
    assert not memory.should_note(chat)
    # The next turn sees the queued messages too, though the database does not have them yet.
    turn = memory.turn()
    seen = await turn.read("history", chat, lambda: storage.messages.recent(chat), [])
    assert [m.text for m in seen][-2:] == ["down 1", "down 2"]
    assert await memory.flush() is False  # still down: nothing lost, nothing written

    fake.down = False
    assert await memory.flush() is True
    assert memory.pending == 0
    stored = [m.text for m in await storage.messages.recent(chat)]
    assert stored == ["before", "up", "down 1", "down 2"]
    assert memory.should_note(chat)  # a new outage is told again


async def test_while_messages_wait_a_new_one_waits_behind_them_so_order_holds(
    insforge: tuple[FakeInsForge, Backend], uid: Callable[[], int]
) -> None:
    fake, backend = insforge
    storage = await backend.open()
    memory = Continuity(storage.messages, retry_after=0.05)
    chat = uid()
    fake.down = True
    await memory.turn().add_message(message(chat, "one"))
    fake.down = False
    # The database is back but "one" is not written yet: "two" must not overtake it.
    await memory.turn().add_message(message(chat, "two"))
    assert memory.pending == 2
    await memory.close()
    assert [m.text for m in await storage.messages.recent(chat)] == ["one", "two"]


async def test_past_its_bound_the_queue_refuses_and_the_caller_apologizes(
    insforge: tuple[FakeInsForge, Backend], uid: Callable[[], int]
) -> None:
    fake, backend = insforge
    storage = await backend.open()
    memory = Continuity(storage.messages, max_pending=2, retry_after=60)
    chat = uid()
    fake.down = True
    turn = memory.turn()
    await turn.add_message(message(chat, "a"))
    await turn.add_message(message(chat, "b"))
    with pytest.raises(StorageUnavailable):
        await turn.add_message(message(chat, "c"))
    fake.down = False
    await memory.close()
    assert [m.text for m in await storage.messages.recent(chat)] == ["a", "b"]
