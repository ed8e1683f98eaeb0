"""Users' study archives: their own documents, searched for the passages a reply can cite.

    archives = ArchiveService(storage.archives, ArchiveLimits.from_megabytes(20, 50))
    archive = await archives.ingest(user_id, "biology.pdf", data, on_progress=show)
    hits = await archives.retrieve(user_id, "what do mitochondria do?")  # never fails a reply
    prompt_part = format_passages(hits)           # "[1] biology.pdf, p. 3: Mitochondria ..."

What flows through, in order:

1. `extract.open_document` tells the format (name, MIME type, bytes: plain text, Markdown, PDF
   via pypdf, HTML), refuses what it cannot read with a kind `UnreadableFile` error, and yields
   blocks: PDF pages, Markdown/HTML sections under their headings, text pages;
2. `passages.split_blocks` cuts each block into passages of ~900 characters that keep their page
   or section and their place in the document;
3. `ArchiveService.ingest` checks the limits (ARCHIVE_MAX_FILES, ARCHIVE_MAX_MB), reports
   progress (reading pages, then storing passages) and stores the archive with every passage in
   one atomic `ArchiveRepo.create`: all of it or nothing;
4. `query.query_terms` turns a message into search terms, and `ArchiveRepo.search` ranks the
   passages of the user's active archives in the database's full-text index (SQLite: FTS5 and
   bm25; PostgreSQL: a `tsvector` of user-keyed lexemes with a GIN index, BM25 term weights and
   `ts_rank`, in the RPC function `archive_search`), returning each hit with its document name
   and page or section (`PassageHit.citation`).

This package knows no Telegram and no LLM: the Telegram side downloads the file, calls
`ingest`, shows `str(error)` of an `ArchiveError`; a pipeline step calls `retrieve` beside the
other helpers and puts `format_passages(hits)` into the tutor's or coach's prompt.
"""

from bot.archives.errors import (
    ArchiveError,
    ArchiveExists,
    ArchiveLimitReached,
    ArchiveNotFound,
    CorruptFile,
    EmptyFile,
    EncryptedFile,
    UnreadableFile,
    UnsupportedFile,
)
from bot.archives.prompt import format_passages
from bot.archives.service import ArchiveLimits, ArchiveService, IngestProgress
from bot.storage.archive_models import Archive, ArchiveUsage, PassageHit

__all__ = [
    "Archive",
    "ArchiveError",
    "ArchiveExists",
    "ArchiveLimitReached",
    "ArchiveLimits",
    "ArchiveNotFound",
    "ArchiveService",
    "ArchiveUsage",
    "CorruptFile",
    "EmptyFile",
    "EncryptedFile",
    "IngestProgress",
    "PassageHit",
    "UnreadableFile",
    "UnsupportedFile",
    "format_passages",
]
