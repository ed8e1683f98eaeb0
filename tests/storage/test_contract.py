"""One contract for every storage backend: each test runs on SQLite and on InsForge (the loopback
fake over the real PostgreSQL; a live InsForge with `-m live_insforge` and INSFORGE_URL /
INSFORGE_API_KEY, see conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bot.storage.crypto import KeyCipher
from bot.storage.models import (
    ChatSummary,
    Exercise,
    ModelCatalogRow,
    ModelConfigChange,
    StoredMessage,
    User,
    UserSettings,
)
from bot.storage.repositories import (
    Storage,
    StorageError,
    StorageNotFound,
    StorageRejected,
    StorageUnavailable,
)
from tests.storage.conftest import Backend

Ids = Callable[[], int]


# --- users ---


async def test_touch_inserts_then_updates_names_and_keeps_first_seen(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    assert await storage.users.get(user_id) is None
    first = await storage.users.touch(
        User(id=user_id, username="ann", first_name="Ann", language_code="en")
    )
    assert first.id == user_id
    assert first.username == "ann"
    later = datetime.now(UTC) + timedelta(minutes=5)
    second = await storage.users.touch(
        User(id=user_id, username="ann2", first_name="Anna", language_code="de", last_seen=later)
    )
    assert second.username == "ann2"
    assert second.language_code == "de"
    assert second.first_seen == first.first_seen
    assert abs((second.last_seen - later).total_seconds()) < 0.01
    got = await storage.users.get(user_id)
    assert got is not None
    assert (got.username, got.first_name, got.first_seen) == ("ann2", "Anna", first.first_seen)
    assert got.last_seen.tzinfo is not None


# --- settings ---


async def test_settings_round_trip_with_encrypted_key(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    cipher = KeyCipher("a-long-random-bot-secret-for-tests")
    plain = "sk-or-v1-USERS-OWN-KEY-0123456789"
    assert await storage.settings.get(user_id) is None
    saved = await storage.settings.save(
        UserSettings(
            user_id=user_id,
            default_model="openai:gpt-4o",
            model_preference="online",
            api_key_provider="openrouter",
            api_key_encrypted=cipher.encrypt(plain),
        )
    )
    got = await storage.settings.get(user_id)
    assert got is not None
    assert got == saved
    assert got.model_preference == "online"
    assert got.api_key_encrypted is not None
    assert plain not in got.api_key_encrypted
    assert cipher.decrypt(got.api_key_encrypted) == plain

    # save is an upsert on user_id: the second save replaces every field.
    await storage.settings.save(UserSettings(user_id=user_id, model_preference="local"))
    replaced = await storage.settings.get(user_id)
    assert replaced is not None
    assert replaced.default_model is None
    assert replaced.api_key_encrypted is None
    assert replaced.model_preference == "local"
    assert replaced.updated_at >= got.updated_at


async def test_set_api_key_changes_only_the_key(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    cipher = KeyCipher("a-long-random-bot-secret-for-tests")
    await storage.settings.save(
        UserSettings(user_id=user_id, default_model="openai:gpt-4o", model_preference="local")
    )
    stale = await storage.settings.get(user_id)
    assert stale is not None
    # While the key is being tested, the user picks another model on /model.
    await storage.settings.set_default_model(user_id, "groq:llama-3.3-70b")

    row = await storage.settings.set_api_key(user_id, "openai", cipher.encrypt("sk-own"))
    got = await storage.settings.get(user_id)
    assert got == row
    assert (got.default_model, got.model_preference, got.api_key_provider) == (
        "groq:llama-3.3-70b",
        "local",
        "openai",
    )
    assert got.api_key_encrypted is not None
    assert cipher.decrypt(got.api_key_encrypted) == "sk-own"
    assert got.updated_at >= stale.updated_at

    # None and None forget the key, and only the key.
    forgotten = await storage.settings.set_api_key(user_id, None, None)
    assert (forgotten.api_key_provider, forgotten.api_key_encrypted) == (None, None)
    assert (forgotten.default_model, forgotten.model_preference) == ("groq:llama-3.3-70b", "local")


async def test_set_model_preference_changes_only_the_preference(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    fresh = await storage.settings.set_model_preference(user_id, "local")
    assert (fresh.model_preference, fresh.default_model) == ("local", None)
    await storage.settings.set_default_model(user_id, "openai:gpt-4o")
    await storage.settings.set_api_key(user_id, "openai", "encrypted-blob")
    row = await storage.settings.set_model_preference(user_id, "online")
    assert row == await storage.settings.get(user_id)
    assert (row.model_preference, row.default_model, row.api_key_encrypted) == (
        "online",
        "openai:gpt-4o",
        "encrypted-blob",
    )


async def test_set_default_model_changes_only_the_model(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    await storage.settings.set_api_key(user_id, "anthropic", "encrypted-blob")
    row = await storage.settings.set_default_model(user_id, "anthropic:claude-haiku")
    assert (row.default_model, row.api_key_provider, row.api_key_encrypted) == (
        "anthropic:claude-haiku",
        "anthropic",
        "encrypted-blob",
    )
    assert (await storage.settings.set_default_model(user_id, None)).default_model is None
    got = await storage.settings.get(user_id)
    assert got is not None
    assert (got.default_model, got.api_key_encrypted) == (None, "encrypted-blob")


async def test_setting_one_field_creates_the_row_with_defaults(storage: Storage, uid: Ids) -> None:
    first, second = uid(), uid()
    keyed = await storage.settings.set_api_key(first, "openai", "blob")
    assert (keyed.user_id, keyed.default_model, keyed.model_preference) == (first, None, "any")
    modelled = await storage.settings.set_default_model(second, "openai:gpt-4o")
    assert (modelled.default_model, modelled.api_key_encrypted, modelled.model_preference) == (
        "openai:gpt-4o",
        None,
        "any",
    )
    assert await storage.settings.get(first) == keyed
    assert await storage.settings.get(second) == modelled


# --- messages ---


async def test_messages_recent_is_the_last_n_oldest_first_per_chat(
    storage: Storage, uid: Ids
) -> None:
    chat, other = uid(), uid()
    stored = []
    for i in range(7):
        role = "user" if i % 2 == 0 else "assistant"
        message = await storage.messages.add(
            StoredMessage(
                chat_id=chat,
                user_id=chat,
                role=role,
                text=f"m{i} ✓",
                pipeline="support",
                trace_id=f"trace-{i}",
            )
        )
        assert message.id is not None
        stored.append(message)
    await storage.messages.add(StoredMessage(chat_id=other, role="user", text="elsewhere"))

    assert [m.id for m in stored] == sorted(m.id or 0 for m in stored)
    recent = await storage.messages.recent(chat, limit=3)
    assert [m.text for m in recent] == ["m4 ✓", "m5 ✓", "m6 ✓"]
    assert [(m.role, m.pipeline, m.trace_id) for m in recent] == [
        ("user", "support", "trace-4"),
        ("assistant", "support", "trace-5"),
        ("user", "support", "trace-6"),
    ]
    assert len(await storage.messages.recent(chat)) == 7
    assert await storage.messages.count(chat) == 7
    assert await storage.messages.count(other) == 1


async def test_clear_deletes_only_that_chat(storage: Storage, uid: Ids) -> None:
    chat, other = uid(), uid()
    for i in range(3):
        await storage.messages.add(StoredMessage(chat_id=chat, role="user", text=str(i)))
    await storage.messages.add(StoredMessage(chat_id=other, role="user", text="keep"))
    assert await storage.messages.clear(chat) == 3
    assert await storage.messages.recent(chat) == []
    assert await storage.messages.count(chat) == 0
    assert await storage.messages.clear(chat) == 0
    assert [m.text for m in await storage.messages.recent(other)] == ["keep"]


async def test_concurrent_writers_and_readers_lose_nothing(storage: Storage, uid: Ids) -> None:
    chat = uid()

    async def turn(i: int) -> None:
        await storage.messages.add(StoredMessage(chat_id=chat, role="user", text=f"q{i}"))
        await storage.messages.recent(chat, limit=5)
        await storage.messages.add(StoredMessage(chat_id=chat, role="assistant", text=f"a{i}"))

    await asyncio.gather(*(turn(i) for i in range(100)))
    assert await storage.messages.count(chat) == 200
    texts = [m.text for m in await storage.messages.recent(chat, limit=200)]
    assert sorted(texts) == sorted([f"q{i}" for i in range(100)] + [f"a{i}" for i in range(100)])
    # Within a turn the question was stored before its answer.
    for i in range(100):
        assert texts.index(f"q{i}") < texts.index(f"a{i}")


async def test_adding_the_same_message_again_stores_it_once(storage: Storage, uid: Ids) -> None:
    chat = uid()
    message = StoredMessage(chat_id=chat, role="user", text="once", trace_id="t")
    first = await storage.messages.add(message)
    # The caller retries the same message after an error whose outcome it could not know.
    again = await storage.messages.add(message)
    assert first.id is not None
    assert again.id == first.id
    assert (again.text, again.trace_id) == ("once", "t")
    assert await storage.messages.count(chat) == 1
    # The same words in a new message are a new message.
    await storage.messages.add(StoredMessage(chat_id=chat, role="user", text="once"))
    assert [m.text for m in await storage.messages.recent(chat)] == ["once", "once"]


async def test_a_message_is_found_by_its_idempotency_key(storage: Storage, uid: Ids) -> None:
    chat = uid()
    key = f"tg:{chat}:7:user"
    stored = await storage.messages.add(
        StoredMessage(chat_id=chat, role="user", text="rate me", idempotency_key=key)
    )
    await storage.messages.add(
        StoredMessage(chat_id=chat, role="assistant", text="reply", idempotency_key=f"{key}x")
    )
    assert stored.id is not None
    assert await storage.messages.id_of(key) == stored.id
    assert await storage.messages.id_of(f"tg:{chat}:8:user") is None


async def test_add_many_stores_a_batch_in_order_once(storage: Storage, uid: Ids) -> None:
    chat = uid()
    batch = [
        StoredMessage(chat_id=chat, role="user", text="first"),
        StoredMessage(chat_id=chat, role="assistant", text="second"),
        StoredMessage(chat_id=chat, role="user", text="third"),
    ]
    await storage.messages.add_many(batch)
    # Written again after an answer that never came: nothing twice.
    await storage.messages.add_many(batch[1:])
    await storage.messages.add_many([])
    assert [m.text for m in await storage.messages.recent(chat)] == ["first", "second", "third"]


# --- summaries ---


async def test_summary_upsert_and_clear(storage: Storage, uid: Ids) -> None:
    chat = uid()
    assert await storage.summaries.get(chat) is None
    await storage.summaries.save(ChatSummary(chat_id=chat, summary="first", message_count=4))
    saved = await storage.summaries.save(
        ChatSummary(chat_id=chat, summary="second", message_count=9)
    )
    assert (saved.summary, saved.message_count) == ("second", 9)
    got = await storage.summaries.get(chat)
    assert got is not None
    assert (got.summary, got.message_count) == ("second", 9)
    await storage.summaries.clear(chat)
    assert await storage.summaries.get(chat) is None


# --- facts ---


async def test_facts_skip_exact_duplicates_and_list_oldest_first(
    storage: Storage, uid: Ids
) -> None:
    user, other = uid(), uid()
    added = await storage.facts.add_many(user, ["likes tea", "lives in Oslo", "likes tea", " "])
    assert [f.fact for f in added] == ["likes tea", "lives in Oslo"]
    again = await storage.facts.add_many(user, ["lives in Oslo", "has a cat"])
    assert [f.fact for f in again] == ["has a cat"]
    assert await storage.facts.add_many(user, []) == []
    await storage.facts.add_many(other, ["likes tea"])

    facts = await storage.facts.list(user)
    assert [f.fact for f in facts] == ["likes tea", "lives in Oslo", "has a cat"]
    assert all(f.user_id == user and f.id is not None for f in facts)
    # A limit keeps the newest facts, still oldest first.
    assert [f.fact for f in await storage.facts.list(user, limit=2)] == [
        "lives in Oslo",
        "has a cat",
    ]


# --- exercises ---


async def test_exercise_lifecycle(storage: Storage, uid: Ids) -> None:
    chat, user = uid(), uid()
    assert await storage.exercises.open_for_chat(chat) is None
    first = await storage.exercises.create(
        Exercise(chat_id=chat, user_id=user, topic="algebra", question="2+2?")
    )
    second = await storage.exercises.create(
        Exercise(chat_id=chat, user_id=user, topic="algebra", question="3*3?")
    )
    assert first.id is not None
    assert second.id is not None
    opened = await storage.exercises.open_for_chat(chat)
    assert opened is not None
    assert opened.id == second.id

    graded = await storage.exercises.grade(second.id, answer="9", grade=1.0, feedback="right")
    assert (graded.answer, graded.grade, graded.feedback) == ("9", 1.0, "right")
    assert graded.graded_at is not None
    opened = await storage.exercises.open_for_chat(chat)
    assert opened is not None
    assert opened.id == first.id
    await storage.exercises.grade(first.id, answer="5", grade=0.0, feedback="no: 4")
    assert await storage.exercises.open_for_chat(chat) is None

    listed = await storage.exercises.list_for_user(user)
    assert [e.id for e in listed] == [second.id, first.id]  # newest first
    assert [e.grade for e in listed] == [1.0, 0.0]
    assert len(await storage.exercises.list_for_user(user, limit=1)) == 1


async def test_grading_an_unknown_exercise_is_an_error(storage: Storage) -> None:
    with pytest.raises(StorageNotFound):
        await storage.exercises.grade(2**60, answer="x", grade=0.5, feedback="?")


# --- admin overrides ---


async def test_override_upsert_deactivate_reactivate(storage: Storage, agent: str) -> None:
    assert await storage.model_config.get(agent) is None
    assert await storage.model_config.deactivate(agent) is False

    created = await storage.model_config.upsert(agent, "anthropic/claude-sonnet-4.5", "111")
    assert (created.agent_name, created.model_id, created.is_active, created.set_by) == (
        agent,
        "anthropic/claude-sonnet-4.5",
        True,
        "111",
    )
    active = {row.agent_name: row for row in await storage.model_config.get_all_active()}
    assert active[agent].model_id == "anthropic/claude-sonnet-4.5"

    updated = await storage.model_config.upsert(agent, "openai/gpt-4o", "222")
    assert updated.id == created.id
    assert (updated.model_id, updated.set_by) == ("openai/gpt-4o", "222")
    assert updated.created_at == created.created_at
    assert updated.updated_at >= created.updated_at

    assert await storage.model_config.deactivate(agent) is True
    assert await storage.model_config.deactivate(agent) is False
    assert agent not in {row.agent_name for row in await storage.model_config.get_all_active()}
    inactive = await storage.model_config.get(agent)
    assert inactive is not None
    assert (inactive.is_active, inactive.model_id) == (False, "openai/gpt-4o")

    again = await storage.model_config.upsert(agent, "x-ai/grok-4", "111")
    assert again.is_active is True
    assert again.id == created.id
    active = {row.agent_name: row for row in await storage.model_config.get_all_active()}
    assert active[agent].model_id == "x-ai/grok-4"


async def test_get_all_active_lists_only_active_rows(storage: Storage, agent: str) -> None:
    names = [f"{agent}_{i}" for i in range(3)]
    for name in names:
        await storage.model_config.upsert(name, f"model/{name}", None)
    await storage.model_config.deactivate(names[1])
    active = {
        row.agent_name: row.model_id
        for row in await storage.model_config.get_all_active()
        if row.agent_name.startswith(agent)
    }
    assert active == {names[0]: f"model/{names[0]}", names[2]: f"model/{names[2]}"}


async def test_history_is_newest_first_and_filters_by_agent(storage: Storage, agent: str) -> None:
    other = agent + "_other"
    await storage.model_history.append(
        ModelConfigChange(agent_name=agent, action="set", new_model_id="a/1", changed_by="1")
    )
    await storage.model_history.append(
        ModelConfigChange(agent_name=other, action="set", new_model_id="b/1", changed_by="1")
    )
    await storage.model_history.append(
        ModelConfigChange(
            agent_name=agent, action="set", old_model_id="a/1", new_model_id="a/2", changed_by="2"
        )
    )
    last = await storage.model_history.append(
        ModelConfigChange(agent_name=agent, action="reset", old_model_id="a/2", changed_by="3")
    )
    assert last.id is not None

    mine = await storage.model_history.list(agent)
    assert [(c.action, c.old_model_id, c.new_model_id, c.changed_by) for c in mine] == [
        ("reset", "a/2", None, "3"),
        ("set", "a/1", "a/2", "2"),
        ("set", None, "a/1", "1"),
    ]
    assert [c.action for c in await storage.model_history.list(agent, limit=1)] == ["reset"]
    everything = await storage.model_history.list(limit=50)
    ours = [c.agent_name for c in everything if c.agent_name in {agent, other}]
    assert ours == [agent, agent, other, agent]


async def test_concurrent_resets_turn_an_override_off_once(storage: Storage, agent: str) -> None:
    await storage.model_config.upsert(agent, "openai/gpt-4o", "admin")
    results = await asyncio.gather(*(storage.model_config.deactivate(agent) for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    row = await storage.model_config.get(agent)
    assert row is not None
    assert row.is_active is False


async def test_appending_the_same_change_again_records_it_once(
    storage: Storage, agent: str
) -> None:
    change = ModelConfigChange(agent_name=agent, action="set", new_model_id="a/1", changed_by="1")
    first = await storage.model_history.append(change)
    again = await storage.model_history.append(change)
    assert first.id is not None
    assert again.id == first.id
    assert [c.id for c in await storage.model_history.list(agent)] == [first.id]


async def test_the_newest_history_line_is_the_configuration_version(
    storage: Storage, agent: str
) -> None:
    before = await storage.model_history.latest_id()
    first = await storage.model_history.append(
        ModelConfigChange(agent_name=agent, action="set", new_model_id="a/1", changed_by="1")
    )
    assert first.id is not None
    assert first.id > before
    assert await storage.model_history.latest_id() == first.id
    # Every kind of change is a line: rollbacks (naming what they undid) and catalog changes.
    undo = await storage.model_history.append(
        ModelConfigChange(
            agent_name=agent,
            action="rollback",
            old_model_id="a/1",
            new_model_id=None,
            changed_by="2",
            reverts_id=first.id,
        )
    )
    added = await storage.model_history.append(
        ModelConfigChange(
            agent_name=f"catalog:{agent}", action="add", new_model_id="openai:x", changed_by="3"
        )
    )
    assert undo.id is not None
    assert added.id is not None
    assert first.id < undo.id < added.id
    assert await storage.model_history.latest_id() == added.id
    mine = await storage.model_history.list(agent)
    assert [(c.action, c.reverts_id) for c in mine] == [("rollback", first.id), ("set", None)]
    for action in ("edit", "remove"):
        line = await storage.model_history.append(
            ModelConfigChange(agent_name=f"catalog:{agent}", action=action)  # type: ignore[arg-type]
        )
        assert line.action == action


async def test_catalog_entries_save_update_and_delete(storage: Storage, agent: str) -> None:
    alias = agent.replace("_", "-")
    assert await storage.model_catalog.get(alias) is None
    saved = await storage.model_catalog.save(
        ModelCatalogRow(
            alias=alias,
            spec="openai:gpt-4o",
            display_name='GPT-4o "fast"',
            max_tokens=800,
            temperature=0.3,
            offered_to_users=True,
            updated_by="tg:1",
        )
    )
    assert saved.id is not None
    assert (saved.spec, saved.display_name, saved.max_tokens, saved.temperature) == (
        "openai:gpt-4o",
        'GPT-4o "fast"',
        800,
        0.3,
    )
    assert saved.timeout is None
    assert saved.offered_to_users is True
    # Every field is written on an update: a cleared parameter is cleared, created_at is kept.
    again = await storage.model_catalog.save(
        saved.model_copy(
            update={
                "max_tokens": None,
                "timeout": 12.5,
                "offered_to_users": None,
                "updated_by": "2",
            }
        )
    )
    assert again.id == saved.id
    assert (again.max_tokens, again.timeout, again.offered_to_users) == (None, 12.5, None)
    assert again.created_at == saved.created_at
    assert again.updated_at >= saved.updated_at
    listed = [row for row in await storage.model_catalog.list() if row.alias == alias]
    assert [(r.alias, r.updated_by) for r in listed] == [(alias, "2")]
    assert await storage.model_catalog.delete(alias) is True
    assert await storage.model_catalog.get(alias) is None
    assert await storage.model_catalog.delete(alias) is False


async def test_the_catalog_refuses_impossible_parameters(storage: Storage, agent: str) -> None:
    with pytest.raises(StorageRejected):
        await storage.model_catalog.save(
            ModelCatalogRow(alias=agent.replace("_", "-"), spec="openai:x", max_tokens=0)
        )


# --- restart and outages ---


async def test_a_restart_keeps_everything(backend: Backend, uid: Ids, agent: str) -> None:
    user, chat = uid(), uid()
    cipher = KeyCipher("restart-secret")
    first = await backend.open()
    await first.users.touch(User(id=user, username="kim"))
    await first.settings.save(
        UserSettings(
            user_id=user,
            default_model="groq:llama-3.3-70b",
            model_preference="local",
            api_key_provider="groq",
            api_key_encrypted=cipher.encrypt("gsk_secret"),
        )
    )
    await first.messages.add(StoredMessage(chat_id=chat, user_id=user, role="user", text="hi"))
    await first.messages.add(StoredMessage(chat_id=chat, role="assistant", text="hello"))
    await first.summaries.save(ChatSummary(chat_id=chat, summary="greetings", message_count=2))
    await first.facts.add_many(user, ["plays chess"])
    await first.exercises.create(Exercise(chat_id=chat, user_id=user, topic="t", question="q"))
    await first.model_config.upsert(agent, "openai/gpt-4o", "admin")
    await first.model_config.upsert(agent + "_off", "openai/gpt-4o", "admin")
    await first.model_config.deactivate(agent + "_off")
    await first.model_history.append(
        ModelConfigChange(agent_name=agent, action="set", new_model_id="openai/gpt-4o")
    )
    await first.close()

    second = await backend.open()
    got_user = await second.users.get(user)
    assert got_user is not None
    assert got_user.username == "kim"
    settings = await second.settings.get(user)
    assert settings is not None
    assert settings.api_key_encrypted is not None
    assert cipher.decrypt(settings.api_key_encrypted) == "gsk_secret"
    assert settings.model_preference == "local"
    assert [m.text for m in await second.messages.recent(chat)] == ["hi", "hello"]
    summary = await second.summaries.get(chat)
    assert summary is not None
    assert summary.summary == "greetings"
    assert [f.fact for f in await second.facts.list(user)] == ["plays chess"]
    assert await second.exercises.open_for_chat(chat) is not None
    active = {r.agent_name: r.model_id for r in await second.model_config.get_all_active()}
    assert active.get(agent) == "openai/gpt-4o"
    assert agent + "_off" not in active
    off = await second.model_config.get(agent + "_off")
    assert off is not None
    assert off.is_active is False
    assert [c.new_model_id for c in await second.model_history.list(agent)] == ["openai/gpt-4o"]


async def test_an_outage_during_a_write_is_an_error_never_a_silent_loss(
    backend: Backend, uid: Ids, agent: str
) -> None:
    chat = uid()
    storage = await backend.open()
    await storage.messages.add(StoredMessage(chat_id=chat, role="user", text="before"))

    await backend.break_writes()
    with pytest.raises(StorageUnavailable):
        await storage.messages.add(StoredMessage(chat_id=chat, role="user", text="during"))
    with pytest.raises(StorageError):
        await storage.model_config.upsert(agent, "openai/gpt-4o", "admin")
    await backend.heal()

    # The caller retries once the database is back: the write lands, exactly once.
    await storage.messages.add(StoredMessage(chat_id=chat, role="user", text="during"))
    await storage.model_config.upsert(agent, "openai/gpt-4o", "admin")
    await storage.close()
    reopened = await backend.open()
    assert [m.text for m in await reopened.messages.recent(chat)] == ["before", "during"]
    assert await reopened.model_config.get(agent) is not None


async def test_a_closed_storage_refuses_writes(backend: Backend, uid: Ids) -> None:
    storage = await backend.open()
    await storage.close()
    with pytest.raises(StorageError):
        await storage.messages.add(StoredMessage(chat_id=uid(), role="user", text="lost?"))


async def test_ping_answers(storage: Storage) -> None:
    await storage.ping()
    assert storage.backend in {"sqlite", "insforge"}
