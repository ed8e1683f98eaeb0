"""Rows of users' study archives, as storage keeps them (`ArchiveRepo` in `repositories.py`).

An archive is one uploaded document; its passages are the pieces of its text that search returns,
each with the page (PDF) or section (Markdown/HTML heading) it came from, for citing. What a
document is and how it is cut into passages is `bot.archives`' business; storage only keeps and
indexes the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from bot.storage.models import Row, new_idempotency_key, utcnow

ArchiveKind = Literal["text", "markdown", "pdf", "html"]


class Archive(Row):
    id: int
    user_id: int
    name: str  # the document's file name, unique per user
    kind: ArchiveKind
    size_bytes: int  # of the uploaded file (what ARCHIVE_MAX_MB counts)
    page_count: int
    passage_count: int
    # Searched by default (`ArchiveService.search` without `archive_ids`).
    is_active: bool = True
    created_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class NewArchive:
    """An archive to store, with its passages given beside it to `ArchiveRepo.create`."""

    user_id: int
    name: str
    kind: ArchiveKind
    size_bytes: int
    page_count: int
    # One key per upload: a repeated store of the same upload (after a lost answer) stores once.
    idempotency_key: str = ""

    def key(self) -> str:
        return self.idempotency_key or new_idempotency_key()


@dataclass(frozen=True, slots=True)
class NewPassage:
    ordinal: int  # its place in the document, from 0
    text: str
    page: int | None = None  # 1-based PDF page (or text page between form feeds)
    section: str | None = None  # the nearest heading above it (Markdown, HTML)


@dataclass(frozen=True, slots=True)
class ArchiveUsage:
    """What one user keeps: counted against ARCHIVE_MAX_FILES and ARCHIVE_MAX_MB."""

    files: int
    size_bytes: int


class PassageHit(Row):
    """One search result: a passage, the document it is from, and its rank (higher is better)."""

    passage_id: int
    archive_id: int
    document: str
    page: int | None = None
    section: str | None = None
    text: str
    score: float

    @property
    def citation(self) -> str:
        """`notes.pdf, p. 3`, `biology.md, § Mitochondria`, or the document name alone."""
        if self.page is not None:
            return f"{self.document}, p. {self.page}"
        if self.section:
            return f"{self.document}, § {self.section}"
        return self.document
