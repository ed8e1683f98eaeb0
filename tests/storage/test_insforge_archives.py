"""InsForge's staged ingest (migration 008) under lost answers and refusals: the loopback fake
over the real PostgreSQL, looking at the tables themselves."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.storage.archive_models import NewArchive, NewPassage
from bot.storage.insforge import InsForgeStorage
from bot.storage.insforge.archives import chunks
from bot.storage.repositories import ArchiveQuotaExceeded, StorageError
from tests.fakes.insforge_server import FakeInsForge

BIG = 10**12


@pytest.fixture
async def storage(fake_insforge: FakeInsForge) -> AsyncIterator[InsForgeStorage]:
    storage = InsForgeStorage.from_url(
        fake_insforge.url, fake_insforge.api_key, max_retries=1, backoff=0.01
    )
    yield storage
    await storage.close()


async def _count(dsn: str, sql: str, *args: object) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql, *args))
    finally:
        await conn.close()


def _user() -> int:
    return 2**40 + secrets.randbelow(2**40)


def _passages(n: int) -> list[NewPassage]:
    return [NewPassage(i, f"Pulsar observation {i} " + "lorem ipsum " * 10) for i in range(n)]


def _archive(user_id: int, name: str = "pulsars.txt", size: int = 100) -> NewArchive:
    return NewArchive(user_id=user_id, name=name, kind="text", size_bytes=size, page_count=1)


def test_passages_are_staged_in_bounded_chunks() -> None:
    passages = _passages(3000)
    parts = chunks(passages, limit=64 * 1024)
    assert len(parts) > 3
    assert [row["ordinal"] for part in parts for row in part] == list(range(3000))
    assert all(len(str(part).encode()) < 80 * 1024 for part in parts)


async def test_a_commit_whose_answer_was_lost_is_repeated_and_stores_once(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    user_id = _user()
    passages = _passages(3000)

    async def lose_the_commit_answer(done: int, total: int) -> None:
        if done == total:  # every chunk staged: the next request is the commit
            fake_insforge.drop_next(after_run=True)

    archive = await storage.archives.create(
        _archive(user_id),
        passages,
        max_files=5,
        max_bytes=BIG,
        progress=lose_the_commit_answer,
    )
    commits = [r for r in fake_insforge.requests if r[1].endswith("/archive_commit")]
    assert len(commits) == 2  # the lost one and its repeat
    assert archive.passage_count == 3000
    dsn = fake_insforge.dsn
    assert await _count(dsn, "SELECT count(*) FROM archives WHERE user_id = $1", user_id) == 1
    stored = "SELECT count(*) FROM archive_passages WHERE archive_id = $1"
    assert await _count(dsn, stored, archive.id) == 3000
    assert await _count(dsn, "SELECT count(*) FROM archive_uploads") == 0


async def test_a_chunk_whose_answer_was_lost_is_staged_once(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    user_id = _user()
    fake_insforge.drop_next(after_run=True)  # the first chunk lands, its answer does not
    archive = await storage.archives.create(
        _archive(user_id), _passages(3000), max_files=5, max_bytes=BIG
    )
    stored = "SELECT count(*) FROM archive_passages WHERE archive_id = $1"
    assert await _count(fake_insforge.dsn, stored, archive.id) == 3000
    ordinals = "SELECT count(DISTINCT ordinal) FROM archive_passages WHERE archive_id = $1"
    assert await _count(fake_insforge.dsn, ordinals, archive.id) == 3000


async def test_a_chunk_refused_half_way_leaves_no_staged_rows(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    user_id = _user()
    passages = _passages(3000)
    passages[-1] = NewPassage(2999, None)  # type: ignore[arg-type]  # the last chunk fails
    with pytest.raises(StorageError):
        await storage.archives.create(_archive(user_id), passages, max_files=5, max_bytes=BIG)
    dsn = fake_insforge.dsn
    assert await _count(dsn, "SELECT count(*) FROM archive_uploads") == 0
    assert await _count(dsn, "SELECT count(*) FROM archives WHERE user_id = $1", user_id) == 0
    assert (
        await _count(dsn, "SELECT count(*) FROM archive_passages WHERE user_id = $1", user_id) == 0
    )


async def test_a_refused_commit_drops_what_was_staged(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    user_id = _user()
    with pytest.raises(ArchiveQuotaExceeded):
        await storage.archives.create(
            _archive(user_id, size=2000), _passages(3000), max_files=5, max_bytes=1000
        )
    assert await _count(fake_insforge.dsn, "SELECT count(*) FROM archive_uploads") == 0


async def test_a_commit_with_passages_missing_stores_nothing(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    # As if a staging chunk had been lost: the commit counts what was staged and refuses.
    user_id = _user()
    client = storage.client
    upload = secrets.token_hex(8)
    rows = [{"ordinal": i, "page": None, "section": None, "text": f"x {i}"} for i in range(5)]
    await client.rpc(
        "archive_stage", {"p_upload": upload, "p_user_id": user_id, "p_passages": rows}
    )
    [answer] = await client.rpc(
        "archive_commit",
        {
            "p_upload": upload,
            "p_user_id": user_id,
            "p_name": "short.txt",
            "p_kind": "text",
            "p_size_bytes": 10,
            "p_page_count": 1,
            "p_passage_count": 6,
            "p_max_files": 5,
            "p_max_bytes": 1000,
            "p_replace": False,
        },
    )
    assert answer["outcome"] == "incomplete"
    assert answer["id"] is None
    assert (
        await _count(fake_insforge.dsn, "SELECT count(*) FROM archives WHERE user_id = $1", user_id)
        == 0
    )
    # Another user cannot commit (or see) this user's staged passages.
    [other] = await client.rpc(
        "archive_commit",
        {
            "p_upload": upload,
            "p_user_id": user_id + 1,
            "p_name": "stolen.txt",
            "p_kind": "text",
            "p_size_bytes": 10,
            "p_page_count": 1,
            "p_passage_count": 5,
            "p_max_files": 5,
            "p_max_bytes": 1000,
            "p_replace": False,
        },
    )
    assert other["outcome"] == "incomplete"


async def test_term_statistics_follow_every_store_replace_and_delete(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    user_id = _user()
    dsn = fake_insforge.dsn
    kept = await storage.archives.create(
        _archive(user_id, "a.txt"), _passages(40), max_files=5, max_bytes=BIG
    )
    await storage.archives.create(
        _archive(user_id, "b.txt"), _passages(25), max_files=5, max_bytes=BIG
    )
    replaced = await storage.archives.create(
        _archive(user_id, "b.txt"), _passages(10), max_files=5, max_bytes=BIG, replace=True
    )
    await storage.archives.delete(user_id, kept.id)
    conn = await asyncpg.connect(dsn)
    try:
        kept_terms = await conn.fetch(
            "SELECT lexeme, ndoc FROM archive_terms WHERE user_id = $1 ORDER BY lexeme", user_id
        )
        truth = await conn.fetch(
            "SELECT word AS lexeme, ndoc FROM ts_stat($1) ORDER BY word",
            f"SELECT tsv FROM archive_passages WHERE archive_id = {replaced.id}",
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in kept_terms] == [tuple(r) for r in truth]
    assert dict(kept_terms)[f"{user_id}_pulsar"] == 10


async def test_a_committed_upload_leaves_nothing_in_the_search_index_pending_list(
    storage: InsForgeStorage, fake_insforge: FakeInsForge
) -> None:
    # Migration 021: every search would read a GIN pending list whole, once per index scan.
    user_id = _user()
    await storage.archives.create(_archive(user_id), _passages(2000), max_files=5, max_bytes=BIG)
    conn = await asyncpg.connect(fake_insforge.dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        pending = await conn.fetchrow(
            "SELECT pending_pages, pending_tuples FROM pgstatginindex($1::regclass)",
            "archive_passages_tsv_idx",
        )
        indexed = await conn.fetchval(
            "SELECT count(*) FROM archive_passages WHERE tsv @@ $1::tsquery",
            f"{user_id}_pulsar",
        )
    finally:
        await conn.close()
    assert indexed == 2000
    assert pending is not None
    assert (pending["pending_pages"], pending["pending_tuples"]) == (0, 0)
