"""`ArchiveService` over real storage: ingest with progress, the kind refusals that store
nothing, limits, replace, delete, and search that never crosses users or fails a reply."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest

from bot.archives import (
    ArchiveExists,
    ArchiveLimitReached,
    ArchiveLimits,
    ArchiveNotFound,
    ArchiveService,
    CorruptFile,
    EmptyFile,
    EncryptedFile,
    IngestProgress,
    UnsupportedFile,
    format_passages,
)
from bot.archives import service as service_module
from bot.archives.extract import Block, open_document
from bot.archives.service import clean_name
from bot.storage.archive_models import ArchiveUsage
from bot.storage.insforge import InsForgeStorage
from bot.storage.sqlite import SQLiteStorage
from tests.archives.documents import FACT, corrupt_pdf, encrypted_pdf, pdf_bytes, textbook
from tests.fakes.insforge_server import FakeInsForge

_textbook = textbook


@pytest.fixture
def storage(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    return sqlite_storage


@pytest.fixture
def archives(storage: SQLiteStorage) -> ArchiveService:
    return ArchiveService(storage.archives, ArchiveLimits(max_files=3, max_bytes=200_000))


def _user() -> int:
    return 2**40 + secrets.randbelow(2**40)


async def test_a_pdf_is_ingested_with_progress_and_cited_by_page(archives: ArchiveService) -> None:
    user_id = _user()
    seen: list[IngestProgress] = []

    async def show(progress: IngestProgress) -> None:
        seen.append(progress)

    archive = await archives.ingest(user_id, "geo.pdf", _textbook(), on_progress=show)
    assert (archive.name, archive.kind, archive.page_count) == ("geo.pdf", "pdf", 12)
    assert archive.passage_count >= 12
    stages = [p.stage for p in seen]
    assert stages[0] == "reading"
    assert stages[-1] == "done"
    storing = [p for p in seen if p.stage == "storing"]
    assert storing[0].done == 0
    assert storing[-1].done == storing[-1].total == archive.passage_count
    assert stages.index("storing") > max(i for i, s in enumerate(stages) if s == "reading")
    reading = [p for p in seen if p.stage == "reading"]
    assert [p.done for p in reading] == [8, 12]  # eight pages a trip to the worker thread
    assert all(p.total == 12 for p in reading)
    assert seen[-1].fraction == 1.0

    hits = await archives.search(user_id, "When was Quellport founded?")
    assert hits
    assert hits[0].citation == "geo.pdf, p. 7"
    assert FACT in hits[0].text
    prompt = format_passages(hits[:1])
    assert prompt.startswith("[1] geo.pdf, p. 7\n")
    assert FACT in prompt


@pytest.mark.parametrize(
    ("name", "data", "error"),
    [
        ("locked.pdf", encrypted_pdf([["Quellport secrets"]]), EncryptedFile),
        ("broken.pdf", corrupt_pdf(), CorruptFile),
        ("blank.pdf", pdf_bytes([[], []]), EmptyFile),
        ("nothing.txt", b"", EmptyFile),
        ("slides.pptx", b"PK\x03\x04", UnsupportedFile),
    ],
)
async def test_a_bad_file_gets_a_kind_answer_and_stores_nothing(
    archives: ArchiveService, name: str, data: bytes, error: type[Exception]
) -> None:
    user_id = _user()
    with pytest.raises(error) as raised:
        await archives.ingest(user_id, name, data)
    message = str(raised.value)
    assert name in message
    assert "pypdf" not in message
    assert "Error" not in message
    assert await archives.list(user_id) == []
    assert await archives.usage(user_id) == ArchiveUsage(0, 0)


async def test_a_page_that_fails_half_way_stores_nothing(
    archives: ArchiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Page 40 of 60 cannot be read: the 39 before it were parsed, and none of them is stored.
    class FailsAtPage40:
        name, kind = "long.pdf", "pdf"
        block_count = page_count = 60

        def read(self, start: int, stop: int) -> list[Block]:
            if start <= 39 < stop:
                raise CorruptFile(self.name, detail="page 40: bad stream")
            return [Block(f"Quellport fact {n}.", page=n + 1) for n in range(start, stop)]

    monkeypatch.setattr(service_module, "open_document", lambda *_: FailsAtPage40())
    user_id = _user()
    with pytest.raises(CorruptFile):
        await archives.ingest(user_id, "long.pdf", b"%PDF-1.4")
    assert await archives.list(user_id) == []
    assert await archives.search(user_id, "Quellport") == []


async def test_limits_answer_before_parsing_and_say_what_to_do(archives: ArchiveService) -> None:
    user_id = _user()
    with pytest.raises(ArchiveLimitReached) as too_big:
        await archives.ingest(user_id, "huge.txt", b"x " * 150_000)
    assert too_big.value.reason == "bytes"
    assert "0.3 MB" in str(too_big.value)
    assert "0.2 MB" in str(too_big.value)

    for n in range(3):
        await archives.ingest(user_id, f"n{n}.md", f"# Note {n}\nQuellport {n}.".encode())
    with pytest.raises(ArchiveLimitReached) as too_many:
        await archives.ingest(user_id, "n4.md", b"one more")
    assert too_many.value.reason == "files"
    assert "/archives" in str(too_many.value)
    assert len(await archives.list(user_id)) == 3


async def test_the_same_name_is_refused_unless_replaced(archives: ArchiveService) -> None:
    user_id = _user()
    first = await archives.ingest(user_id, "notes.md", b"Quellport has two harbours.")
    with pytest.raises(ArchiveExists):
        await archives.ingest(user_id, "notes.md", b"Quellport has three harbours.")
    second = await archives.ingest(
        user_id, "notes.md", b"Quellport has three harbours.", replace=True
    )
    assert second.id != first.id
    [hit] = await archives.search(user_id, "Quellport harbours")
    assert "three" in hit.text


async def test_delete_and_switch_off_take_passages_out_of_search(archives: ArchiveService) -> None:
    user_id, other = _user(), _user()
    archive = await archives.ingest(user_id, "geo.pdf", _textbook())
    assert await archives.search(other, "Quellport founded") == []
    with pytest.raises(ArchiveNotFound):
        await archives.delete(other, archive.id)
    with pytest.raises(ArchiveNotFound):
        await archives.set_active(other, archive.id, False)

    assert not (await archives.set_active(user_id, archive.id, False)).is_active
    assert await archives.search(user_id, "Quellport founded") == []
    assert await archives.search(user_id, "Quellport founded", archive_ids=[archive.id])
    await archives.set_active(user_id, archive.id, True)

    deleted = await archives.delete(user_id, archive.id)
    assert deleted.name == "geo.pdf"
    assert await archives.search(user_id, "Quellport founded", archive_ids=[archive.id]) == []
    with pytest.raises(ArchiveNotFound):
        await archives.delete(user_id, archive.id)


async def test_a_query_of_stopwords_only_searches_nothing(archives: ArchiveService) -> None:
    user_id = _user()
    await archives.ingest(user_id, "a.txt", b"What is it about? It is about that.")
    assert await archives.search(user_id, "what is it about?") == []


async def test_retrieve_never_fails_a_reply(
    archives: ArchiveService, storage: SQLiteStorage, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = _user()
    await archives.ingest(user_id, "geo.pdf", _textbook())
    assert await archives.retrieve(user_id, "Quellport")
    await storage.close()
    with caplog.at_level(logging.WARNING):
        assert await archives.retrieve(user_id, "Quellport") == []
    assert "answering without" in caplog.text


async def test_retrieve_gives_up_after_its_timeout_on_a_hung_database(
    fake_insforge: FakeInsForge,
) -> None:
    storage = InsForgeStorage.from_url(fake_insforge.url, fake_insforge.api_key, max_retries=0)
    try:
        archives = ArchiveService(storage.archives)
        user_id = _user()
        await archives.ingest(user_id, "geo.pdf", _textbook())
        fake_insforge.hang_next(10.0)
        started = asyncio.get_running_loop().time()
        assert await archives.retrieve(user_id, "Quellport", timeout=0.3) == []
        assert asyncio.get_running_loop().time() - started < 2.0
        fake_insforge.release_hung()
        [hit, *_] = await archives.retrieve(user_id, "When was Quellport founded?")
        assert hit.citation == "geo.pdf, p. 7"
    finally:
        await storage.close()


async def test_a_failing_progress_callback_stops_nothing(archives: ArchiveService) -> None:
    async def broken(progress: IngestProgress) -> None:
        raise RuntimeError("message to edit is gone")

    archive = await archives.ingest(_user(), "geo.pdf", _textbook(), on_progress=broken)
    assert archive.passage_count > 0


def test_names_are_cleaned_for_showing_and_keeping() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("C:\\Users\\me\\notes.md") == "notes.md"
    assert clean_name("bad\x00\u202ename.txt") == "badname.txt"
    assert clean_name(None) == "document"
    long = clean_name("a" * 300 + ".pdf")
    assert long.endswith(".pdf")
    assert len(long) == 120


def test_documents_used_here_are_what_they_claim() -> None:
    document = open_document("geo.pdf", _textbook())
    assert FACT in document.read(6, 7)[0].text


def test_the_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.config import load_settings

    defaults = load_settings(_env_file=None)
    assert (defaults.archive_max_files, defaults.archive_max_mb) == (20, 50.0)
    monkeypatch.setenv("ARCHIVE_MAX_FILES", "3")
    monkeypatch.setenv("ARCHIVE_MAX_MB", "1.5")
    settings = load_settings(_env_file=None)
    limits = ArchiveLimits.from_megabytes(settings.archive_max_files, settings.archive_max_mb)
    assert limits == ArchiveLimits(max_files=3, max_bytes=1_500_000)


class CountingRepo:
    """The real repository, counting what the service asks of it."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.calls.append(name)
        return getattr(self.inner, name)


async def test_a_user_without_active_archives_costs_no_search_per_message(
    storage: SQLiteStorage,
) -> None:
    repo = CountingRepo(storage.archives)
    now = [0.0]
    archives = ArchiveService(repo, active_ttl=30.0, clock=lambda: now[0])  # type: ignore[arg-type]
    user_id, other = _user(), _user()
    for _ in range(5):
        assert await archives.retrieve(user_id, "When was Quellport founded?") == []
    assert repo.calls == ["list"]  # asked once, remembered for ACTIVE_TTL; no search at all

    # An ingest, a switch and a delete on this replica are seen at once.
    archive = await archives.ingest(user_id, "geo.pdf", _textbook())
    [hit, *_] = await archives.retrieve(user_id, "When was Quellport founded?")
    assert hit.citation == "geo.pdf, p. 7"
    assert await archives.retrieve(other, "When was Quellport founded?") == []
    await archives.set_active(user_id, archive.id, False)
    repo.calls.clear()
    assert await archives.retrieve(user_id, "When was Quellport founded?") == []
    assert repo.calls == ["list"]
    await archives.set_active(user_id, archive.id, True)
    assert await archives.retrieve(user_id, "When was Quellport founded?")
    await archives.delete(user_id, archive.id)
    repo.calls.clear()
    assert await archives.retrieve(user_id, "When was Quellport founded?") == []
    assert repo.calls == ["list"]

    # Another replica's ingest is seen once the remembered answer expires.
    elsewhere = ArchiveService(storage.archives)
    await elsewhere.ingest(user_id, "geo.pdf", _textbook())
    assert await archives.retrieve(user_id, "When was Quellport founded?") == []
    now[0] += 31.0
    assert await archives.retrieve(user_id, "When was Quellport founded?")
