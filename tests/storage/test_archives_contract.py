"""The archive repository's contract, on every backend (SQLite, InsForge through the loopback fake
over the real PostgreSQL; a live InsForge with `-m live_insforge`): atomic ingest within the
limits, isolation between users, search ranking, and deletion from the index."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from bot.storage.archive_models import ArchiveUsage, NewArchive, NewPassage
from bot.storage.repositories import (
    ArchiveQuotaExceeded,
    Storage,
    StorageConflict,
    StorageError,
)
from tests.storage.conftest import Backend

Ids = Callable[[], int]
BIG = 10**12  # limits that do not get in the way


def _archive(user_id: int, name: str = "notes.md", size: int = 1000) -> NewArchive:
    return NewArchive(user_id=user_id, name=name, kind="markdown", size_bytes=size, page_count=1)


def _passages(*texts: str, page: int | None = None) -> list[NewPassage]:
    return [NewPassage(i, text, page=page, section="Notes") for i, text in enumerate(texts)]


async def _create(
    storage: Storage,
    user_id: int,
    name: str,
    texts: Sequence[str],
    *,
    max_files: int = 100,
    max_bytes: int = BIG,
    size: int = 1000,
    replace: bool = False,
) -> int:
    archive = await storage.archives.create(
        _archive(user_id, name, size),
        _passages(*texts),
        max_files=max_files,
        max_bytes=max_bytes,
        replace=replace,
    )
    return archive.id


async def test_an_archive_is_stored_whole_and_found_with_its_document_and_page(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    passages = [
        NewPassage(0, "Photosynthesis turns light into sugar in the chloroplasts.", page=1),
        NewPassage(1, "Mitochondria produce ATP through cellular respiration.", page=2),
        NewPassage(2, "The Krebs cycle runs inside the matrix of mitochondria.", page=3),
    ]
    progress: list[tuple[int, int]] = []

    async def report(done: int, total: int) -> None:
        progress.append((done, total))

    archive = await storage.archives.create(
        NewArchive(user_id=user_id, name="biology.pdf", kind="pdf", size_bytes=5000, page_count=3),
        passages,
        max_files=5,
        max_bytes=10_000,
        progress=report,
    )
    assert (archive.name, archive.kind, archive.page_count, archive.passage_count) == (
        "biology.pdf",
        "pdf",
        3,
        3,
    )
    assert archive.is_active
    assert archive.user_id == user_id
    assert progress
    assert progress[-1] == (3, 3)
    assert await storage.archives.list(user_id) == [archive]
    assert await storage.archives.get(user_id, archive.id) == archive
    assert await storage.archives.usage(user_id) == ArchiveUsage(files=1, size_bytes=5000)

    hits = await storage.archives.search(user_id, ["mitochondria", "atp"])
    assert [hit.page for hit in hits][:1] == [2]  # both words: ranked first
    assert {hit.page for hit in hits} == {2, 3}  # either word is enough to be found
    top = hits[0]
    assert (top.document, top.archive_id, top.citation) == (
        "biology.pdf",
        archive.id,
        "biology.pdf, p. 2",
    )
    assert "ATP" in top.text
    assert hits[0].score >= hits[1].score


async def test_search_stems_words_and_ignores_query_syntax(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    await _create(storage, user_id, "a.md", ["Running shoes wear out after running marathons."])
    assert await storage.archives.search(user_id, ["runs"])
    assert await storage.archives.search(user_id, ["marathon"])
    # Operators and quotes of either backend's query language are just text here.
    for term in ['"', "OR", "AND", "NEAR", "a:b", "*", "(", "'", "!", "&", "|", "\\", "<->"]:
        assert await storage.archives.search(user_id, [term]) == []
    assert await storage.archives.search(user_id, ["zebra"]) == []
    assert await storage.archives.search(user_id, []) == []


async def test_one_users_passages_never_reach_another_user(storage: Storage, uid: Ids) -> None:
    alice, bob = uid(), uid()
    secret = "Alice's locker combination is 4711 behind the gymnasium."
    alice_archive = await _create(storage, alice, "private.txt", [secret])
    bob_archive = await _create(storage, bob, "gym.txt", ["The gymnasium opens at nine."])

    for_bob = await storage.archives.search(bob, ["locker", "combination", "4711", "gymnasium"])
    assert [hit.archive_id for hit in for_bob] == [bob_archive]
    assert all("4711" not in hit.text for hit in for_bob)
    # Naming Alice's archive does not help Bob either.
    assert await storage.archives.search(bob, ["4711"], archive_ids=[alice_archive]) == []
    assert await storage.archives.get(bob, alice_archive) is None
    assert await storage.archives.set_active(bob, alice_archive, False) is None
    assert await storage.archives.delete(bob, alice_archive) is False
    assert [a.id for a in await storage.archives.list(bob)] == [bob_archive]
    # ... and Alice still has hers, whole and active.
    hits = await storage.archives.search(alice, ["4711"])
    assert [hit.text for hit in hits] == [secret]


async def test_only_active_archives_are_searched_by_default(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    first = await _create(storage, user_id, "one.md", ["Volcanoes erupt basalt lava."])
    second = await _create(storage, user_id, "two.md", ["Glaciers carve volcanoes' flanks."])
    switched = await storage.archives.set_active(user_id, second, False)
    assert switched is not None
    assert switched.is_active is False

    assert [h.archive_id for h in await storage.archives.search(user_id, ["volcanoes"])] == [first]
    # Asked for by id, an archive that is off is searched all the same.
    named = await storage.archives.search(user_id, ["volcanoes"], archive_ids=[second])
    assert [h.archive_id for h in named] == [second]
    both = await storage.archives.search(user_id, ["volcanoes"], archive_ids=[first, second])
    assert {h.archive_id for h in both} == {first, second}
    assert await storage.archives.search(user_id, ["volcanoes"], archive_ids=[]) == []

    again = await storage.archives.set_active(user_id, second, True)
    assert again is not None
    assert again.is_active
    assert len(await storage.archives.search(user_id, ["volcanoes"])) == 2


async def test_deleting_an_archive_removes_its_passages_from_the_index(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    kept = await _create(storage, user_id, "kept.md", ["Tectonic plates drift slowly."])
    gone = await _create(
        storage, user_id, "gone.md", [f"Tectonic fact {i}: subduction zones." for i in range(30)]
    )
    assert len(await storage.archives.search(user_id, ["subduction"], limit=50)) == 30

    assert await storage.archives.delete(user_id, gone) is True
    assert await storage.archives.delete(user_id, gone) is False
    assert await storage.archives.get(user_id, gone) is None
    assert await storage.archives.search(user_id, ["subduction"], limit=50) == []
    assert await storage.archives.search(user_id, ["subduction"], archive_ids=[gone]) == []
    assert [h.archive_id for h in await storage.archives.search(user_id, ["tectonic"])] == [kept]
    assert await storage.archives.usage(user_id) == ArchiveUsage(files=1, size_bytes=1000)


async def test_limits_refuse_the_archive_and_store_nothing(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    await _create(storage, user_id, "a.md", ["Alpha notes."], max_files=2, size=400)
    await _create(storage, user_id, "b.md", ["Beta notes."], max_files=2, size=400)

    with pytest.raises(ArchiveQuotaExceeded) as files:
        await _create(storage, user_id, "c.md", ["Gamma notes."], max_files=2, size=1)
    assert files.value.reason == "files"
    assert files.value.usage == ArchiveUsage(files=2, size_bytes=800)

    with pytest.raises(ArchiveQuotaExceeded) as size:
        await _create(storage, user_id, "c.md", ["Gamma notes."], max_bytes=1000, size=201)
    assert size.value.reason == "bytes"

    assert [a.name for a in await storage.archives.list(user_id)] == ["a.md", "b.md"]
    assert await storage.archives.search(user_id, ["gamma"]) == []
    # Exactly at the limit is within it.
    await _create(storage, user_id, "c.md", ["Gamma notes."], max_bytes=1000, size=200)
    assert len(await storage.archives.search(user_id, ["gamma"])) == 1


async def test_a_name_is_taken_unless_replacing_which_swaps_atomically(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    old = await _create(storage, user_id, "notes.md", ["Old fact: Pluto is a planet."])
    with pytest.raises(StorageConflict):
        await _create(storage, user_id, "notes.md", ["New fact: Pluto is a dwarf planet."])
    assert [h.archive_id for h in await storage.archives.search(user_id, ["pluto"])] == [old]

    # A replacement that is over the limits leaves the old archive as it was.
    with pytest.raises(ArchiveQuotaExceeded):
        await _create(
            storage, user_id, "notes.md", ["Too big."], replace=True, max_bytes=500, size=501
        )
    assert [h.archive_id for h in await storage.archives.search(user_id, ["pluto"])] == [old]

    # The replaced archive does not count against the limits: one file of one allowed.
    new = await _create(
        storage, user_id, "notes.md", ["New fact: Pluto is a dwarf planet."], replace=True,
        max_files=1,
    )  # fmt: skip
    assert new != old
    hits = await storage.archives.search(user_id, ["pluto"])
    assert [(h.archive_id, "dwarf" in h.text) for h in hits] == [(new, True)]
    assert [a.id for a in await storage.archives.list(user_id)] == [new]


async def test_concurrent_uploads_cannot_both_squeeze_under_the_file_limit(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    results = await asyncio.gather(
        *(
            _create(storage, user_id, f"n{i}.md", [f"Note {i} about comets."], max_files=2)
            for i in range(5)
        ),
        return_exceptions=True,
    )
    stored = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, ArchiveQuotaExceeded)]
    assert (len(stored), len(refused)) == (2, 3), results
    assert len(await storage.archives.list(user_id)) == 2
    assert len(await storage.archives.search(user_id, ["comets"], limit=10)) == 2


async def test_a_large_archive_is_stored_whole(storage: Storage, uid: Ids) -> None:
    # Thousands of passages (several staging chunks on InsForge), searchable to the last one.
    user_id = uid()
    texts = [
        f"Chapter {i} describes the element number{i} and its isotopes. " * 6 for i in range(3000)
    ]
    archive_id = await _create(storage, user_id, "chemistry.txt", texts)
    archive = await storage.archives.get(user_id, archive_id)
    assert archive is not None
    assert archive.passage_count == 3000
    for i in (0, 1499, 2999):
        hits = await storage.archives.search(user_id, [f"number{i}"])
        assert [h.text for h in hits] == [texts[i]]


async def test_a_passage_refused_half_way_through_stores_nothing(
    storage: Storage, uid: Ids
) -> None:
    # The database refuses passage 2500 of 3000 (a NULL text): no archive, no passage, no usage.
    user_id = uid()
    passages = [NewPassage(i, f"Quasar note {i}.") for i in range(3000)]
    passages[2500] = NewPassage(2500, None)  # type: ignore[arg-type]
    with pytest.raises(StorageError):
        await storage.archives.create(
            _archive(user_id, "quasars.md"), passages, max_files=10, max_bytes=BIG
        )
    assert await storage.archives.list(user_id) == []
    assert await storage.archives.usage(user_id) == ArchiveUsage(files=0, size_bytes=0)
    assert await storage.archives.search(user_id, ["quasar"]) == []
    # The name is free: nothing of the first attempt holds it.
    await _create(storage, user_id, "quasars.md", ["Quasar note."])


async def test_search_returns_at_most_limit_best_first(storage: Storage, uid: Ids) -> None:
    user_id = uid()
    texts = [f"Comet {i} has a tail." for i in range(10)] + [
        "Comets, comets, comets: a comet is an icy body; a comet's tail points away from the Sun."
    ]
    await _create(storage, user_id, "sky.md", texts)
    hits = await storage.archives.search(user_id, ["comet", "tail", "sun"], limit=3)
    assert len(hits) == 3
    assert "icy body" in hits[0].text
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert await storage.archives.search(user_id, ["comet"], limit=0) == []


async def test_an_outage_while_storing_leaves_nothing_behind(backend: Backend, uid: Ids) -> None:
    storage = await backend.open()
    user_id = uid()
    await backend.break_writes()
    with pytest.raises(StorageError):
        await _create(storage, user_id, "lost.md", ["Nebulae glow."])
    await backend.heal()
    assert await storage.archives.list(user_id) == []
    assert await storage.archives.search(user_id, ["nebulae"]) == []
    # And the same upload goes through once the database is back.
    await _create(storage, user_id, "lost.md", ["Nebulae glow."])
    assert len(await storage.archives.search(user_id, ["nebulae"])) == 1


def _common_world() -> list[str]:
    """1,200 passages: `harbour` and `river` in the even ones, `tide` in the odd ones, `trade` in
    every third, and one rare word in three passages."""
    texts = []
    for i in range(1200):
        words = [f"filler{i % 97}", f"plain{i % 89}", "sentence"]
        words += ["harbour", "river"] if i % 2 == 0 else ["tide"]
        if i % 3 == 0:
            words.append("trade")
        if i in (401, 802, 1001):
            words.append("quellport")
        texts.append(" ".join(words) + ".")
    return texts


async def test_common_words_do_not_pick_the_candidates_when_a_rare_one_is_there(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    await _create(storage, user_id, "port.md", _common_world())
    other = uid()
    await _create(storage, other, "theirs.md", ["quellport harbour river trade."] * 3)
    hits = await storage.archives.search(user_id, ["harbour", "river", "trade", "quellport"])
    # The rare word's passages come first (every term still counts in their order), and no
    # passage of the other user's, although theirs hold every word.
    assert [h.text.count("quellport") for h in hits[:3]] == [1, 1, 1]
    assert all(h.document == "port.md" for h in hits)


async def test_when_every_word_is_common_the_passages_holding_all_of_them_come_first(
    storage: Storage, uid: Ids
) -> None:
    user_id = uid()
    await _create(storage, user_id, "port.md", _common_world())
    hits = await storage.archives.search(user_id, ["harbour", "river", "trade"], limit=5)
    assert len(hits) == 5
    assert all({"harbour", "river", "trade"} <= set(h.text.rstrip(".").split()) for h in hits)
    # No passage holds them all (and one is in none): those holding fewer still answer.
    few = await storage.archives.search(user_id, ["harbour", "tide", "absentword"], limit=50)
    assert len(few) == 50
    assert all("tide" in h.text or "harbour" in h.text for h in few)
