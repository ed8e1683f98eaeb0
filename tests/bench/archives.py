"""Benchmark: users' archives: ingest speed, search latency and recall, on both backends.

    python -m tests.bench.archives [--total 1000000] [--per-user 10000] [--only sqlite,insforge]
                                   [--data /tmp/bench-archives] [--rebuild] [--keep]

The world: `--total` passages in all, of which `--per-user` belong to the user measured and the
rest to 5,000-passage users around them (synthetic words with Zipf frequencies, a topical
vocabulary per user). The other users' passages are loaded in bulk, straight into the tables
(built once and kept in `--data` and in the PostgreSQL database `bench_archives`, rebuilt when
the schema changes or with `--rebuild`); the measured user's go through the bot's own code.

What it prints, per backend (SQLite, and PostgreSQL as the bot reaches it: InsForge through the
loopback fake, in a child process, over the real PostgreSQL):

- ingest: the measured user's documents (hand-written PDFs of ~3,600 characters a page) through
  `ArchiveService.ingest`, in pages per second; and the parsing alone (pypdf + splitting);
- search latency p50/p95 through `ArchiveService.search`, the call the pipeline makes, for two
  query sets run interleaved over the backends: `questions` (the recall questions, 2-4 terms)
  and `common` (the user's most frequent topical words with a rare one: the most passages to
  rank); and the same queries as raw SQL (the FTS5 statement; `archive_search` over asyncpg), so
  the HTTP hop to InsForge shows;
- recall@5: questions built from facts planted in the documents, each answer passage known
  ("What is the harbour of Quellport?" for "Quellport's harbour is Varn."), with distractors (each
  entity has several facts, each attribute many entities);
- the tuning figure behind decision 0010 for SQLite, raw SQL, interleaved: the owner tokens in
  the MATCH against filtering by user after it.

Nothing asserts: it prints figures. The issue's target: search p95 under 20 ms at 10,000 passages
per user on both backends.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from bot.archives import ArchiveLimits, ArchiveService, PassageHit
from bot.archives.extract import open_document
from bot.archives.passages import split_blocks
from bot.archives.query import query_terms
from bot.storage.insforge import InsForgeStorage
from bot.storage.migration_files import load_migration_files
from bot.storage.repositories import Storage
from bot.storage.sqlite import SQLiteStorage
from bot.storage.sqlite.archives import match_expression
from bot.storage.sqlite.archives_schema import ARCHIVES_SQL
from tests.archives.documents import pdf_bytes
from tests.fakes.insforge_server import FakeInsForge, dsn_for, migrate_through_fake

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_DATABASE = "bench_archives"
OTHER_USER_PASSAGES = 5000
PASSAGES_PER_ARCHIVE = 500
MEASURED_USER = 7_000_000_001
VOCABULARY = 30_000
CHARS_PER_LINE = 90
# ~3,300 characters a page: about four passages.
WORDS_PER_PAGE = 380
# Share of the other users' passages that hold a fact of the same templates (other entities):
# the words of the questions are not the measured user's alone.
BACKGROUND_FACTS = 0.3

# --- the synthetic language ---

_SYLLABLE_TEXT = (
    "ka ro mi tu le sa vo ne ri da po li fe ga mo ta ru ve si no be lo zu fa di ko ma te "
    "pi ra ga hu ju ki lu ni qo xa ye zo bra cle dri fro gla kri plo sta tru vla"
)
_SYLLABLES = _SYLLABLE_TEXT.split()


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3, 3, 4)))))
    return sorted(words)


@dataclass
class Language:
    words: list[str]
    cumulative: np.ndarray  # Zipf weights over the words, offset past the stop words

    @classmethod
    def build(cls, seed: int = 17) -> Language:
        rng = random.Random(seed)
        words = vocabulary(VOCABULARY, rng)
        rng.shuffle(words)
        ranks = np.arange(150, 150 + len(words), dtype=np.float64)
        weights = 1.0 / ranks
        return cls(words, np.cumsum(weights / weights.sum()))

    def sample(self, generator: np.random.Generator, count: int) -> np.ndarray:
        return np.searchsorted(self.cumulative, generator.random(count))

    def text(self, indexes: Sequence[int]) -> str:
        return " ".join(self.words[i] for i in indexes)


# --- the other users, loaded in bulk ---


def background_rows(language: Language, total: int, seed: int = 5) -> list[tuple[Any, ...]]:
    """(archive_id, user_id, ordinal, text) for every passage of the other users."""
    generator = np.random.default_rng(seed)
    words_per_passage = 110
    picks = language.sample(generator, total * words_per_passage).reshape(total, -1)
    rng = random.Random(seed)
    rows = []
    for n in range(total):
        user = 1 + n // OTHER_USER_PASSAGES
        archive = 1 + n // PASSAGES_PER_ARCHIVE
        text = language.text(picks[n])
        if rng.random() < BACKGROUND_FACTS:
            _, fact, _ = rng.choice(ATTRIBUTES)
            entity, value = rng.choice(language.words), rng.choice(language.words)
            text += " " + fact.format(e=entity.capitalize(), v=value.capitalize())
        rows.append((archive, user, n % PASSAGES_PER_ARCHIVE, text))
    return rows


_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION (\w+)\(.*?\$\$;", re.S)


def search_functions(versions: Sequence[str] = ("008", "012")) -> list[str]:
    """The functions of migrations 008 and 012 (which replaces `archive_search`) that do not
    shape the stored rows: reloaded every run, in order, so tuning them needs no rebuild of the
    world."""
    found: list[str] = []
    for item in load_migration_files():
        if item.version in versions:
            found += [
                m.group(0)
                for m in _FUNCTION.finditer(item.read_sql())
                if m.group(1) != "archive_lexemes"
            ]
    return found


def fingerprint(total: int) -> str:
    digest = hashlib.sha256(ARCHIVES_SQL.encode())
    for item in load_migration_files():
        sql = item.read_sql()
        if "archive_" not in sql:  # another feature's migration: the world is the same
            continue
        for function in search_functions():
            sql = sql.replace(function, "")
        digest.update(sql.encode())
    digest.update(
        f"{total}:{OTHER_USER_PASSAGES}:{PASSAGES_PER_ARCHIVE}:{BACKGROUND_FACTS}:v2".encode()
    )
    return digest.hexdigest()[:16]


def archive_rows(rows: Sequence[tuple[Any, ...]]) -> list[tuple[int, int, str, int]]:
    """(id, user_id, name, passage_count) of the other users' archives."""
    counts: dict[tuple[int, int], int] = {}
    for archive, user, _, _ in rows:
        counts[(archive, user)] = counts.get((archive, user), 0) + 1
    return [(a, u, f"background-{a}.txt", n) for (a, u), n in sorted(counts.items())]


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


async def build_sqlite(path: Path, total: int, language: Language, rebuild: bool) -> None:
    marker = path.with_suffix(".built")
    if not rebuild and marker.exists() and marker.read_text() == fingerprint(total):
        return
    _remove_database(path)
    storage = SQLiteStorage(str(path))
    await storage.connect()
    await storage.close()
    started = time.perf_counter()
    rows = background_rows(language, total)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO archives (id, user_id, name, kind, size_bytes, page_count, passage_count, "
        "is_active, idempotency_key, created_at) "
        "VALUES (?, ?, ?, 'text', 1000, 1, ?, 1, 'bench-' || ?, '2026-12-01T00:00:00Z')",
        [(a, u, name, n, a) for a, u, name, n in archive_rows(rows)],
    )
    conn.executemany(
        "INSERT INTO archive_passages (archive_id, user_id, ordinal, text) VALUES (?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "INSERT INTO archive_fts (rowid, owner, section, text) "
        "SELECT id, 'a' || archive_id, coalesce(section, ''), text FROM archive_passages"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("INSERT INTO archive_fts (archive_fts) VALUES ('optimize')")
    conn.close()
    marker.write_text(fingerprint(total))
    print(f"  sqlite: built {total:,} passages in {time.perf_counter() - started:.0f} s")


async def build_postgres(total: int, language: Language, rebuild: bool) -> str:
    dsn = dsn_for(ADMIN_DSN, PG_DATABASE)
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE)
        if exists and not rebuild:
            conn = await asyncpg.connect(dsn)
            try:
                built = await conn.fetchval(
                    "SELECT obj_description('archives'::regclass, 'pg_class')"
                )
            except asyncpg.PostgresError:
                built = None
            finally:
                await conn.close()
            if built == fingerprint(total):
                conn = await asyncpg.connect(dsn)
                try:
                    for function in search_functions():
                        await conn.execute(function)
                finally:
                    await conn.close()
                return dsn
        await admin.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        await admin.close()
    started = time.perf_counter()
    await migrate_through_fake(dsn)
    rows = background_rows(language, total)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        # The index is built again after the copy (faster than row by row), with the options the
        # migrations gave it (021: no pending list).
        options = await conn.fetchval(
            "SELECT array_to_string(reloptions, ', ') FROM pg_class "
            "WHERE relname = 'archive_passages_tsv_idx'"
        )
        await conn.execute("DROP INDEX archive_passages_tsv_idx")
        await conn.copy_records_to_table(
            "archives",
            records=[
                (a, u, name, "text", 1000, 1, n, True, f"bench-{a}")
                for a, u, name, n in archive_rows(rows)
            ],
            columns=[
                "id", "user_id", "name", "kind", "size_bytes", "page_count", "passage_count",
                "is_active", "idempotency_key",
            ],
        )  # fmt: skip
        await conn.execute("SELECT setval('archives_id_seq', (SELECT max(id) FROM archives))")
        await conn.copy_records_to_table(
            "archive_passages", records=rows, columns=["archive_id", "user_id", "ordinal", "text"]
        )
        await conn.execute(
            "CREATE INDEX archive_passages_tsv_idx ON archive_passages USING GIN (tsv)"
            + (f" WITH ({options})" if options else "")
        )
        await conn.execute("VACUUM ANALYZE archive_passages")
        await conn.execute("ANALYZE archives")
        await conn.execute(f"COMMENT ON TABLE archives IS '{fingerprint(total)}'")
    finally:
        await conn.close()
    print(f"  postgres: built {total:,} passages in {time.perf_counter() - started:.0f} s")
    return dsn


# --- the measured user's documents, facts and questions ---

ATTRIBUTES = [
    ("harbour", "{e}'s harbour is {v}.", "What is the harbour of {e}?"),
    ("founder", "{e} was founded by {v}, its founder.", "Who was the founder of {e}?"),
    ("export", "The main export of {e} is {v}.", "What does {e} export most?"),
    ("river", "The river {v} flows through {e}.", "Which river flows through {e}?"),
    ("festival", "Every spring {e} holds the festival of {v}.", "Which festival does {e} hold?"),
    ("mineral", "Miners in {e} dig for {v}, a rare mineral.", "What mineral is mined in {e}?"),
    ("poet", "The poet {v} was born in {e}.", "Which poet was born in {e}?"),
    ("dish", "The dish {e} is known for is {v}.", "What dish is {e} known for?"),
    ("treaty", "The treaty of {v} gave {e} its borders.", "Which treaty set the borders of {e}?"),
    ("mountain", "Above {e} rises mount {v}.", "Which mountain rises above {e}?"),
]


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str
    sentence: str
    question: str


@dataclass
class Library:
    documents: list[tuple[str, bytes]]
    pages: int
    facts: list[Fact]
    topical: list[str]


def library(language: Language, passages: int, seed: int = 11) -> Library:
    """PDFs with about `passages` passages in all, facts planted on their pages."""
    rng = random.Random(seed)
    generator = np.random.default_rng(seed)
    topical = rng.sample(language.words[:3000], 300)
    entities = [w.capitalize() for w in rng.sample(language.words[3000:20000], 400)]
    values = iter(w.capitalize() for w in rng.sample(language.words[20000:], 2400))
    facts: list[Fact] = []
    for entity in entities:
        for attribute, fact, question in rng.sample(ATTRIBUTES, 4):
            value = next(values)
            facts.append(
                Fact(
                    entity,
                    attribute,
                    value,
                    fact.format(e=entity, v=value),
                    question.format(e=entity),
                )
            )
    rng.shuffle(facts)
    # ~3,600 characters a page: four passages of ~900.
    page_count = max(1, passages // 4)
    facts_left = list(facts)
    per_page = len(facts) / page_count
    pages: list[list[str]] = []
    debt = 0.0
    for _ in range(page_count):
        words: list[str] = []
        # Half the words topical (the user's subject), half the general language.
        general = language.sample(generator, WORDS_PER_PAGE // 2 + 1)
        for n in range(WORDS_PER_PAGE):
            words.append(rng.choice(topical) if n % 2 else language.words[general[n // 2]])
        debt += per_page
        planted = []
        while debt >= 1 and facts_left:
            planted.append(facts_left.pop())
            debt -= 1
        for fact in planted:
            # Entities also turn up in passing elsewhere: a name alone does not find the fact.
            words.insert(rng.randrange(len(words)), fact.sentence)
            words.insert(rng.randrange(len(words)), rng.choice(entities))
        text = " ".join(words)
        lines, line = [], ""
        for word in text.split(" "):
            if len(line) + len(word) + 1 > CHARS_PER_LINE:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
        pages.append(lines)
    per_document = 250
    documents = [
        (f"volume-{i // per_document + 1:02d}.pdf", pdf_bytes(pages[i : i + per_document]))
        for i in range(0, len(pages), per_document)
    ]
    return Library(documents, len(pages), facts, topical)


def common_queries(lib: Library, language: Language, count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    frequent = lib.topical[:12]  # the topical words are drawn uniformly: all of them are common
    return [
        " ".join([*rng.sample(frequent, 3), rng.choice(language.words[25000:])])
        for _ in range(count)
    ]


# --- timing ---


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def figures(samples: Sequence[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"p50 {percentile(ms, 0.5):6.2f} ms  p95 {percentile(ms, 0.95):6.2f} ms"


async def timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


# --- the InsForge fake in its own process ---


def _serve(dsn: str, queue: Any) -> None:
    async def main() -> None:
        fake = FakeInsForge(dsn)
        await fake.start()
        queue.put((fake.url, fake.api_key))
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Backend:
    name: str
    storage: Storage
    archives: ArchiveService
    raw: Callable[[list[str]], Awaitable[Any]]
    variants: dict[str, Callable[[list[str]], Awaitable[Any]]]
    close: Callable[[], Awaitable[None]]


async def sqlite_backend(path: Path) -> Backend:
    storage = SQLiteStorage(str(path))
    await storage.connect()
    archives = ArchiveService(storage.archives, ArchiveLimits(1000, 10**12))
    conn = sqlite3.connect(path, check_same_thread=False)
    rank = "bm25(archive_fts, 0.0, 2.0, 1.0)"
    owned: list[int] = []

    def active() -> list[int]:
        if not owned:
            owned.extend(
                row[0]
                for row in conn.execute(
                    "SELECT id FROM archives WHERE user_id = ? AND is_active = 1",
                    (MEASURED_USER,),
                )
            )
        return owned

    async def one_statement(terms: list[str]) -> Any:
        # Decision 0010's search: one OR of every term, bm25 over every passage it matches.
        return conn.execute(
            f"SELECT p.id, -{rank} FROM archive_fts JOIN archive_passages p "
            "ON p.id = archive_fts.rowid JOIN archives a ON a.id = p.archive_id "
            f"WHERE archive_fts MATCH ? AND p.user_id = ? ORDER BY {rank} LIMIT 5",
            (match_expression(active(), terms), MEASURED_USER),
        ).fetchall()

    async def raw(terms: list[str]) -> Any:
        # The repository's search as it is now (its term counts, then the ranked MATCH).
        return await storage.archives.search(MEASURED_USER, terms, limit=5)

    async def close() -> None:
        conn.close()
        await storage.close()

    return Backend(
        "sqlite",
        storage,
        archives,
        raw,
        {"before (one OR statement, 0010)": one_statement, "now (weighed terms)": raw},
        close,
    )


async def insforge_backend(dsn: str) -> Backend:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_serve, args=(dsn, queue), daemon=True)
    process.start()
    url, key = queue.get(timeout=60)
    storage = InsForgeStorage.from_url(url, key, timeout=30)
    archives = ArchiveService(storage.archives, ArchiveLimits(1000, 10**12))
    conn = await asyncpg.connect(dsn)

    await conn.execute(_function_of_008())

    async def raw(terms: list[str]) -> Any:
        return await conn.fetch("SELECT * FROM archive_search($1, $2, 5)", MEASURED_USER, terms)

    async def before(terms: list[str]) -> Any:
        return await conn.fetch(
            "SELECT * FROM bench_archive_search_008($1, $2, 5)", MEASURED_USER, terms
        )

    async def close() -> None:
        await conn.close()
        await storage.close()
        process.terminate()
        process.join(5)

    return Backend(
        "insforge",
        storage,
        archives,
        raw,
        {"before (archive_search of 008)": before, "now (of 012)": raw},
        close,
    )


def _function_of_008() -> str:
    """Migration 008's `archive_search` as `bench_archive_search_008`: the A of the A/B."""
    text = next(f for f in load_migration_files() if f.version == "008").read_sql()
    start = text.index("CREATE OR REPLACE FUNCTION archive_search(")
    end = text.index("$$;", start) + 3
    return text[start:end].replace(
        "FUNCTION archive_search(", "FUNCTION bench_archive_search_008(", 1
    )


# --- the run ---


async def ingest(backend: Backend, lib: Library, keep: bool) -> None:
    kept = await backend.archives.list(MEASURED_USER)
    if keep and sorted(a.name for a in kept) == sorted(name for name, _ in lib.documents):
        print(f"  {backend.name:8}  ingest: kept from the last run (--keep)")
        return
    for archive in kept:  # a run that was interrupted
        await backend.archives.delete(MEASURED_USER, archive.id)
    started = time.perf_counter()
    passages = 0
    for name, data in lib.documents:
        archive = await backend.archives.ingest(MEASURED_USER, name, data)
        passages += archive.passage_count
    elapsed = time.perf_counter() - started
    print(
        f"  {backend.name:8}  ingest {lib.pages:,} pages ({passages:,} passages) in "
        f"{elapsed:5.1f} s: {lib.pages / elapsed:6.0f} pages/s, {passages / elapsed:6.0f} "
        "passages/s"
    )


def parse_only(lib: Library) -> None:
    started = time.perf_counter()
    passages = 0
    for name, data in lib.documents:
        document = open_document(name, data)
        passages += len(split_blocks(document.read(0, document.block_count)))
    elapsed = time.perf_counter() - started
    print(f"  parsing alone (pypdf + splitting): {lib.pages / elapsed:6.0f} pages/s")


def answer_ids(hits: Sequence[PassageHit], fact: Fact) -> bool:
    return any(fact.sentence in hit.text for hit in hits[:5])


async def measure(backends: Sequence[Backend], lib: Library, language: Language, n: int) -> None:
    rng = random.Random(23)
    questions = rng.sample(lib.facts, min(n, len(lib.facts)))
    sets = {
        "questions": [fact.question for fact in questions],
        "common": common_queries(lib, language, n),
    }
    for backend in backends:  # warm the caches and the connections
        for query in sets["questions"][:30] + sets["common"][:30]:
            await backend.archives.search(MEASURED_USER, query)
    for label, queries in sets.items():
        service = {b.name: [] for b in backends}
        raw = {b.name: [] for b in backends}
        for query in queries:  # interleaved: backend A, B, A, B ...
            terms = query_terms(query)
            for backend in backends:
                elapsed, _ = await timed(
                    lambda b=backend, q=query: b.archives.search(MEASURED_USER, q)
                )
                service[backend.name].append(elapsed)
                elapsed, _ = await timed(lambda b=backend, t=terms: b.raw(t))
                raw[backend.name].append(elapsed)
        for backend in backends:
            print(
                f"  {backend.name:8}  {label:9}  search: {figures(service[backend.name])}   "
                f"raw SQL: {figures(raw[backend.name])}"
            )
    for backend in backends:
        found = 0
        for fact in questions:
            hits = await backend.archives.search(MEASURED_USER, fact.question, limit=5)
            found += answer_ids(hits, fact)
        print(
            f"  {backend.name:8}  recall@5 {found / len(questions):.3f} "
            f"({len(questions)} questions)"
        )
    for backend in backends:
        for label, queries in sets.items():
            if not backend.variants:
                continue
            samples: dict[str, list[float]] = {name: [] for name in backend.variants}
            for query in queries:
                terms = query_terms(query)
                for name, variant in backend.variants.items():
                    elapsed, _ = await timed(lambda v=variant, t=terms: v(t))
                    samples[name].append(elapsed)
            line = "   ".join(f"{name}: {figures(s)}" for name, s in samples.items())
            print(f"  {backend.name:8}  {label:9}  raw, {line}")


async def main(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores)")
    language = Language.build()
    lib = library(language, args.per_user)
    print(
        f"world: {args.total:,} passages of other users + {args.per_user:,} of the measured user "
        f"({lib.pages:,} PDF pages in {len(lib.documents)} files, {len(lib.facts):,} facts)"
    )
    background = args.total - args.per_user
    args.data.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    backends: list[Backend] = []
    if "sqlite" in only:
        path = args.data / "archives.db"
        await build_sqlite(path, background, language, args.rebuild)
        backends.append(await sqlite_backend(path))
    if "insforge" in only:
        dsn = await build_postgres(background, language, args.rebuild)
        backends.append(await insforge_backend(dsn))
    if args.build_only:
        for backend in backends:
            await backend.close()
        return
    try:
        parse_only(lib)
        for backend in backends:
            await ingest(backend, lib, args.keep)
        await measure(backends, lib, language, args.queries)
        for backend in [] if args.keep else backends:
            elapsed, _ = await timed(lambda b=backend: _delete_all(b))
            print(f"  {backend.name:8}  deleting the user's archives: {elapsed:.1f} s")
    finally:
        for backend in backends:
            await backend.close()
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


async def _delete_all(backend: Backend) -> None:
    for archive in await backend.archives.list(MEASURED_USER):
        await backend.archives.delete(MEASURED_USER, archive.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--total", type=int, default=1_000_000)
    parser.add_argument("--per-user", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--only", default="sqlite,insforge")
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench-archives"))
    parser.add_argument("--rebuild", action="store_true")
    # Keep the measured user's archives at the end, and use them again when they are there.
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--build-only", action="store_true")
    asyncio.run(main(parser.parse_args()))
