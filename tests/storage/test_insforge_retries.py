"""The InsForge repositories when an answer is lost: InsForge ran the request, then failed (the
fake's `fail_next(..., after_run=True)`), and the client repeated it. Every write that matters
must land exactly once, and every result must still say what happened."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.storage.crypto import KeyCipher
from bot.storage.insforge import InsForgeStorage
from bot.storage.insforge_client import InsForgeClient, eq
from bot.storage.models import ModelConfigChange, StoredMessage, UserSettings
from tests.fakes.insforge_server import FakeInsForge
from tests.storage.conftest import Sleeps

# Statuses after which InsForge may or may not have run the request.
MAYBE_RAN = [408, 500, 502, 503, 504]


@pytest.fixture
async def storage(fake_insforge: FakeInsForge, sleeps: Sleeps) -> AsyncIterator[InsForgeStorage]:
    client = InsForgeClient(
        fake_insforge.url, fake_insforge.api_key, timeout=5.0, max_retries=2, sleep=sleeps
    )
    made = InsForgeStorage(client)
    yield made
    await made.close()


@pytest.mark.parametrize("status", MAYBE_RAN)
async def test_a_message_whose_answer_was_lost_is_stored_once(
    fake_insforge: FakeInsForge, storage: InsForgeStorage, sleeps: Sleeps, status: int
) -> None:
    fake_insforge.fail_next(status, after_run=True)
    stored = await storage.messages.add(
        StoredMessage(chat_id=21, user_id=21, role="user", text="remember me", trace_id="t-1")
    )
    assert stored.id is not None
    assert (stored.text, stored.trace_id) == ("remember me", "t-1")
    assert len(sleeps.waits) == 1  # it was sent again...
    assert [m.id for m in await storage.messages.recent(21)] == [stored.id]  # ...and kept once


@pytest.mark.parametrize("status", [500, 503])
async def test_a_history_line_whose_answer_was_lost_is_recorded_once(
    fake_insforge: FakeInsForge, storage: InsForgeStorage, sleeps: Sleeps, status: int
) -> None:
    fake_insforge.fail_next(status, after_run=True)
    change = await storage.model_history.append(
        ModelConfigChange(
            agent_name="coach", action="reset", old_model_id="a/1", changed_by="admin"
        )
    )
    assert change.id is not None
    assert len(sleeps.waits) == 1
    history = await storage.model_history.list("coach")
    assert [(c.id, c.action, c.old_model_id) for c in history] == [(change.id, "reset", "a/1")]


async def test_deactivate_says_whether_this_call_turned_the_override_off(
    fake_insforge: FakeInsForge, storage: InsForgeStorage, sleeps: Sleeps
) -> None:
    await storage.model_config.upsert("tutor", "openai/gpt-4o", "admin")
    fake_insforge.fail_next(500, after_run=True, methods=["PATCH"])
    assert await storage.model_config.deactivate("tutor") is True
    assert len(sleeps.waits) == 1  # the PATCH was repeated and matched no active row
    row = await storage.model_config.get("tutor")
    assert row is not None
    assert row.is_active is False
    # Already off: this call changed nothing.
    assert await storage.model_config.deactivate("tutor") is False

    # Turned off by another replica; this call's repeated PATCH also matches nothing: False.
    await storage.model_config.upsert("tutor", "openai/gpt-4o", "admin")
    other = InsForgeStorage.from_url(fake_insforge.url, fake_insforge.api_key)
    try:
        assert await other.model_config.deactivate("tutor") is True
    finally:
        await other.close()
    fake_insforge.fail_next(500, after_run=True, methods=["PATCH"])
    assert await storage.model_config.deactivate("tutor") is False


@pytest.mark.parametrize(("status", "after_run"), [(500, True), (503, True), (408, False)])
async def test_clear_counts_the_messages_when_its_answer_was_lost(
    fake_insforge: FakeInsForge,
    storage: InsForgeStorage,
    sleeps: Sleeps,
    status: int,
    after_run: bool,
) -> None:
    for i in range(3):
        await storage.messages.add(StoredMessage(chat_id=23, role="user", text=str(i)))
    await storage.messages.add(StoredMessage(chat_id=24, role="user", text="keep"))
    fake_insforge.fail_next(status, after_run=after_run, methods=["DELETE"])
    assert await storage.messages.clear(23) == 3
    assert len(sleeps.waits) == 1
    assert await storage.messages.count(23) == 0
    assert await storage.messages.count(24) == 1


async def test_setting_a_key_whose_answer_was_lost_keeps_the_other_settings(
    fake_insforge: FakeInsForge, storage: InsForgeStorage, sleeps: Sleeps
) -> None:
    cipher = KeyCipher("retry-secret")
    await storage.settings.save(
        UserSettings(user_id=25, default_model="openai:gpt-4o", model_preference="online")
    )
    fake_insforge.fail_next(503, after_run=True)
    row = await storage.settings.set_api_key(25, "openai", cipher.encrypt("sk-own"))
    assert len(sleeps.waits) == 1
    assert (row.default_model, row.model_preference, row.api_key_provider) == (
        "openai:gpt-4o",
        "online",
        "openai",
    )
    rows = await storage.client.select("user_settings", {"user_id": eq(25)})
    assert len(rows) == 1
    assert cipher.decrypt(rows[0]["api_key_encrypted"]) == "sk-own"
