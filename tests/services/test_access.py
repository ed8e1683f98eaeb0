"""Who may use the bot, decided over a real SQLite file: the modes, groups, blocks, notices sent
once, and an approval on one replica counting at once on another."""

from __future__ import annotations

import pytest

from bot.services.access import AccessService, Verdict
from bot.storage.sqlite import SQLiteStorage

ADMIN = 1
LISTED = 10
STRANGER = 20
GROUP = -500


@pytest.fixture
def storage(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    return sqlite_storage


def service(storage: SQLiteStorage, mode: str) -> AccessService:
    return AccessService(
        storage.access,
        mode=mode,
        admin_ids=[ADMIN],
        allowed_user_ids=[LISTED],
        allowed_chat_ids=[GROUP],
    )


async def verdict(access: AccessService, user: int, chat: int | None = None) -> Verdict:
    chat_id = user if chat is None else chat
    decision = await access.check(user, chat_id, private=chat_id > 0, update=lambda: "{}")
    return decision.verdict


async def test_allowlist_refuses_a_stranger_once_then_ignores_them(storage: SQLiteStorage) -> None:
    access = service(storage, "allowlist")
    assert await verdict(access, ADMIN) is Verdict.ALLOW
    assert await verdict(access, LISTED) is Verdict.ALLOW
    assert await verdict(access, STRANGER) is Verdict.REFUSE
    assert await verdict(access, STRANGER) is Verdict.IGNORE
    # Another replica (its own service over the same database) does not refuse them again.
    assert await verdict(service(storage, "allowlist"), STRANGER) is Verdict.IGNORE
    # Groups go by their chat id: a listed user in an unlisted group is not served there.
    assert await verdict(access, LISTED, -600) is Verdict.REFUSE
    assert await verdict(access, STRANGER, GROUP) is Verdict.ALLOW
    await access.allow(STRANGER, by="tg:1")
    assert await verdict(access, STRANGER) is Verdict.ALLOW


async def test_approval_asks_once_and_an_approval_counts_at_once_on_another_replica(
    storage: SQLiteStorage,
) -> None:
    here, there = service(storage, "approval"), service(storage, "approval")
    assert await verdict(there, STRANGER) is Verdict.ASK_ADMINS  # there loads its copy
    assert await verdict(here, STRANGER) is Verdict.IGNORE  # waiting: asked once
    entry = await here.decide(STRANGER, approve=True, by="tg:1")
    assert entry is not None
    assert entry.waiting_update == "{}"
    assert await here.decide(STRANGER, approve=False, by="tg:2") is None  # decided already
    # `there` still holds its copy from before (60 s ttl): the stranger is looked up anyway.
    assert await verdict(there, STRANGER) is Verdict.ALLOW


async def test_a_blocked_user_gets_one_notice_in_every_mode(storage: SQLiteStorage) -> None:
    access = service(storage, "open")
    assert await verdict(access, STRANGER) is Verdict.ALLOW
    await access.block(STRANGER, by="tg:1")
    assert await verdict(access, STRANGER) is Verdict.BLOCKED_NOTICE
    assert await verdict(access, STRANGER) is Verdict.IGNORE
    assert await verdict(access, STRANGER, GROUP) is Verdict.IGNORE  # not in groups either
    fresh = service(storage, "allowlist")  # a new process: reads the table
    assert await verdict(fresh, STRANGER, GROUP) is Verdict.IGNORE  # the notice went out already
    await access.allow(STRANGER, by="tg:1")
    assert await verdict(access, STRANGER) is Verdict.ALLOW


async def test_a_denied_stranger_is_blocked(storage: SQLiteStorage) -> None:
    access = service(storage, "approval")
    assert await verdict(access, STRANGER) is Verdict.ASK_ADMINS
    entry = await access.decide(STRANGER, approve=False, by="tg:1")
    assert entry is not None
    assert entry.status == "blocked"
    stored = await storage.access.get(STRANGER)
    assert stored is not None
    assert stored.waiting_update is None
    assert stored.notified
    assert await verdict(access, STRANGER) is Verdict.IGNORE  # told at the decision
