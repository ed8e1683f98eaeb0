"""The access list's contract, on every backend (SQLite; InsForge through the loopback fake over
the real PostgreSQL): one row per subject, races settled in the database (one `create`, one
`decide_pending`, one notice win), a waiting update kept until cleared."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bot.storage.access_models import AccessEntry
from bot.storage.repositories import Storage

Ids = Callable[[], int]


async def test_create_inserts_once_and_the_second_caller_learns_it_existed(
    storage: Storage, uid: Ids
) -> None:
    subject = uid()
    first, second = await asyncio.gather(
        storage.access.create(AccessEntry(subject_id=subject, status="refused", label="@a")),
        storage.access.create(AccessEntry(subject_id=subject, status="pending")),
    )
    created = [entry for entry in (first, second) if entry is not None]
    assert len(created) == 1
    stored = await storage.access.get(subject)
    assert stored is not None
    assert stored.status == created[0].status


async def test_a_pending_subject_is_decided_once_and_keeps_its_waiting_update(
    storage: Storage, uid: Ids
) -> None:
    subject = uid()
    update = '{"update_id": 7, "message": {"text": "hello"}}'
    await storage.access.create(
        AccessEntry(subject_id=subject, status="pending", waiting_update=update, notified=True)
    )
    decided = await storage.access.decide_pending(subject, "allowed", decided_by="tg:1")
    assert decided is not None
    assert decided.status == "allowed"
    assert decided.waiting_update == update
    assert decided.decided_by == "tg:1"
    assert decided.notified is False
    # A second admin pressing Deny a moment later changes nothing.
    assert await storage.access.decide_pending(subject, "blocked", decided_by="tg:2") is None
    stored = await storage.access.get(subject)
    assert stored is not None
    assert stored.status == "allowed"
    await storage.access.update(subject, clear_waiting=True)
    stored = await storage.access.get(subject)
    assert stored is not None
    assert stored.waiting_update is None


async def test_set_status_upserts_and_a_notice_is_claimed_once(storage: Storage, uid: Ids) -> None:
    subject = uid()
    entry = await storage.access.set_status(subject, "blocked", decided_by="tg:1", label="@b")
    assert entry.status == "blocked"
    assert entry.label == "@b"
    assert entry.notified is False
    claims = await asyncio.gather(*(storage.access.claim_notice(subject) for _ in range(3)))
    assert sorted(claims) == [False, False, True]
    again = await storage.access.set_status(subject, "allowed", decided_by="tg:2")
    assert again.status == "allowed"
    assert again.label == "@b"
    assert again.notified is False  # a new status gets its own notice
    assert await storage.access.claim_notice(uid()) is False  # no row: nothing claimed


async def test_list_has_every_row_and_update_records_admin_messages(
    storage: Storage, uid: Ids
) -> None:
    a, b = uid(), uid()
    await storage.access.create(AccessEntry(subject_id=a, status="pending"))
    await storage.access.set_status(b, "blocked", decided_by="tg:1")
    await storage.access.update(a, admin_messages="1:10,2:20")
    rows = {entry.subject_id: entry for entry in await storage.access.list()}
    assert rows[a].status == "pending"
    assert rows[a].admin_messages == "1:10,2:20"
    assert rows[b].status == "blocked"
