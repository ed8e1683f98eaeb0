"""`ArchiveService`: ingest, list, switch, delete and search one user's archives.

Ingest reads the whole file before it stores anything, then stores the archive with all its
passages in one `ArchiveRepo.create` (atomic on both backends), so a file that fails half-way
(a damaged page 40 of 60, a refused limit, a database outage) leaves nothing behind. Parsing is
CPU-bound (pypdf) and runs in a worker thread a few pages at a time, with the event loop free in
between to report progress and serve other chats.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.archives.errors import (
    ArchiveExists,
    ArchiveLimitReached,
    ArchiveNotFound,
    EmptyFile,
    UnreadableFile,
)
from bot.archives.extract import Document, open_document
from bot.archives.passages import split_blocks
from bot.archives.query import query_terms
from bot.storage.archive_models import Archive, ArchiveUsage, NewArchive, NewPassage, PassageHit
from bot.storage.models import new_idempotency_key
from bot.storage.repositories import (
    ArchiveQuotaExceeded,
    ArchiveRepo,
    StorageConflict,
    StorageError,
)

log = logging.getLogger(__name__)

# Pages (blocks) parsed per trip to the worker thread: a progress report between trips, and
# the loop is never without the GIL for long (pypdf: ~5-20 ms a page).
PAGES_PER_BATCH = 8
MAX_NAME_CHARS = 120
# Passages returned at most by one search.
MAX_LIMIT = 50

Stage = Literal["reading", "storing", "done"]


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """`reading`: pages parsed of `total`; `storing`: passages stored of `total`; `done`."""

    stage: Stage
    done: int
    total: int

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


OnProgress = Callable[[IngestProgress], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Per user: how many archives (ARCHIVE_MAX_FILES) and how many bytes of files in all
    (ARCHIVE_MAX_MB, in decimal megabytes)."""

    max_files: int = 20
    max_bytes: int = 50_000_000

    @classmethod
    def from_megabytes(cls, max_files: int, max_mb: float) -> ArchiveLimits:
        return cls(max_files=max_files, max_bytes=int(max_mb * 1_000_000))


def clean_name(name: str | None) -> str:
    """A file name fit to show and to keep: no folders, no control characters, not too long."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = " ".join(base.split())
    if len(base) > MAX_NAME_CHARS:
        stem, dot, suffix = base.rpartition(".")
        if dot and 0 < len(suffix) <= 10:
            base = stem[: MAX_NAME_CHARS - len(suffix) - 1] + "." + suffix
        else:
            base = base[:MAX_NAME_CHARS]
    return base or "document"


# How long a replica trusts what it knows of whether a user has an active archive. Its own
# ingests, deletes and switches update it at once; another replica's reach it within this.
ACTIVE_TTL = 30.0
# Users whose answer is remembered (a dict: the oldest entries go first when it is full).
ACTIVE_REMEMBERED = 50_000


class ArchiveService:
    """One user's archives; every method takes the owner's id (Telegram's user id)."""

    def __init__(
        self,
        repo: ArchiveRepo,
        limits: ArchiveLimits | None = None,
        *,
        active_ttl: float = ACTIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.limits = limits or ArchiveLimits()
        self._active_ttl = active_ttl
        self._clock = clock
        # user id -> (has an active archive, until when that is trusted).
        self._active: dict[int, tuple[bool, float]] = {}

    # --- whether there is anything to search ---

    async def has_active(self, user_id: int) -> bool:
        """Whether the user has an archive searched by default: the pipeline asks it before
        searching, so a user without archives costs no query (on InsForge, no RPC) per message
        but one per ACTIVE_TTL. Storage errors propagate (the caller answers without)."""
        known = self._active.get(user_id)
        now = self._clock()
        if known is not None and known[1] > now:
            return known[0]
        active = any(archive.is_active for archive in await self.repo.list(user_id))
        self._remember(user_id, active)
        return active

    def note_active(self, user_id: int, active: bool) -> None:
        """What a turn's own read found (`turn_context` on InsForge): trusted for ACTIVE_TTL
        like an answer of `has_active`, so the search step costs no read of its own."""
        self._remember(user_id, active)

    def _remember(self, user_id: int, active: bool) -> None:
        if len(self._active) >= ACTIVE_REMEMBERED:
            for stale in list(self._active)[: ACTIVE_REMEMBERED // 10]:
                del self._active[stale]
        self._active.pop(user_id, None)
        self._active[user_id] = (active, self._clock() + self._active_ttl)

    def forget_active(self, user_id: int) -> None:
        """Ask storage again next time (after a change this replica did not make itself)."""
        self._active.pop(user_id, None)

    # --- ingest ---

    async def ingest(
        self,
        user_id: int,
        name: str | None,
        data: bytes,
        *,
        mime: str | None = None,
        replace: bool = False,
        on_progress: OnProgress | None = None,
    ) -> Archive:
        """Read `data` (the downloaded file) and store it as the user's archive `name`.

        Returns the stored archive (its `name`, `page_count`, `passage_count` for the reply).
        Raises an `ArchiveError` the user can read (`UnreadableFile`, `ArchiveLimitReached`,
        `ArchiveExists` unless `replace`), or `StorageError`; in every case nothing is stored.
        """
        name = clean_name(name)
        size = len(data)
        limits = self.limits
        if size > limits.max_bytes:
            raise ArchiveLimitReached(
                name, "bytes", limit=limits.max_bytes, used=0, size_bytes=size
            )
        # Refuse early what the limits will refuse anyway, before minutes of parsing. The
        # store checks again, atomically (two uploads at once cannot both squeeze in).
        if not replace:
            self.check_room(name, size, await self.repo.usage(user_id))
        document = await asyncio.to_thread(_open, name, data, mime)
        passages = await self._read(document, on_progress)
        if not passages:
            raise EmptyFile(name, detail=f"{document.block_count} blocks without words")

        async def stored(done: int, total: int) -> None:
            await _report(on_progress, IngestProgress("storing", done, total))

        await _report(on_progress, IngestProgress("storing", 0, len(passages)))
        try:
            archive = await self.repo.create(
                NewArchive(
                    user_id=user_id,
                    name=name,
                    kind=document.kind,
                    size_bytes=size,
                    page_count=document.page_count,
                    idempotency_key=new_idempotency_key(),
                ),
                passages,
                max_files=limits.max_files,
                max_bytes=limits.max_bytes,
                replace=replace,
                progress=stored,
            )
        except ArchiveQuotaExceeded as exc:
            raise self._limit_error(name, size, exc.reason, exc.usage) from None
        except StorageConflict as exc:
            raise ArchiveExists(name) from exc
        finally:
            # Whatever happened (a lost answer may still have stored it), ask storage next time.
            self.forget_active(user_id)
        log.info(
            "archive stored: user %s, archive %s (%s), %d pages, %d passages, %d bytes",
            user_id,
            archive.id,
            archive.kind,
            archive.page_count,
            archive.passage_count,
            size,
        )
        await _report(on_progress, IngestProgress("done", len(passages), len(passages)))
        return archive

    async def _read(self, document: Document, on_progress: OnProgress | None) -> list[NewPassage]:
        passages: list[NewPassage] = []
        total = document.block_count
        for start in range(0, total, PAGES_PER_BATCH):
            stop = min(total, start + PAGES_PER_BATCH)
            passages += await asyncio.to_thread(_read_batch, document, start, stop, len(passages))
            await _report(on_progress, IngestProgress("reading", stop, total))
        return passages

    def check_room(self, name: str | None, size: int, usage: ArchiveUsage) -> None:
        """Raise `ArchiveLimitReached` when a file of `size` bytes would not fit beside `usage`
        (the Telegram side asks before it downloads anything)."""
        name = clean_name(name)
        if size > self.limits.max_bytes:
            raise ArchiveLimitReached(
                name, "bytes", limit=self.limits.max_bytes, used=0, size_bytes=size
            )
        if usage.files + 1 > self.limits.max_files:
            raise self._limit_error(name, size, "files", usage)
        if usage.size_bytes + size > self.limits.max_bytes:
            raise self._limit_error(name, size, "bytes", usage)

    def _limit_error(
        self, name: str, size: int, reason: Literal["files", "bytes"], usage: ArchiveUsage
    ) -> ArchiveLimitReached:
        if reason == "files":
            return ArchiveLimitReached(
                name, "files", limit=self.limits.max_files, used=usage.files, size_bytes=size
            )
        return ArchiveLimitReached(
            name, "bytes", limit=self.limits.max_bytes, used=usage.size_bytes, size_bytes=size
        )

    # --- the user's list ---

    async def list(self, user_id: int) -> list[Archive]:
        return await self.repo.list(user_id)

    async def usage(self, user_id: int) -> ArchiveUsage:
        return await self.repo.usage(user_id)

    async def get(self, user_id: int, archive_id: int) -> Archive:
        archive = await self.repo.get(user_id, archive_id)
        if archive is None:
            raise ArchiveNotFound(archive_id)
        return archive

    async def set_active(self, user_id: int, archive_id: int, active: bool) -> Archive:
        """Search the archive by default (`active`) or only when asked for by id."""
        archive = await self.repo.set_active(user_id, archive_id, active)
        self.forget_active(user_id)
        if archive is None:
            raise ArchiveNotFound(archive_id)
        return archive

    async def delete(self, user_id: int, archive_id: int) -> Archive:
        """Delete the archive and its passages; the archive as it was (for the reply)."""
        archive = await self.get(user_id, archive_id)
        try:
            deleted = await self.repo.delete(user_id, archive_id)
        finally:
            self.forget_active(user_id)
        if not deleted:
            raise ArchiveNotFound(archive_id)
        log.info("archive deleted: user %s, archive %s", user_id, archive_id)
        return archive

    # --- search ---

    async def search(
        self,
        user_id: int,
        query: str,
        *,
        limit: int = 5,
        archive_ids: Sequence[int] | None = None,
    ) -> builtins.list[PassageHit]:
        """The best `limit` passages of the user's active archives (or of `archive_ids`, theirs)
        for `query` (a message as the user wrote it), best first. Raises `StorageError`."""
        terms = query_terms(query)
        if not terms:
            return []
        return await self.repo.search(
            user_id, terms, limit=max(0, min(limit, MAX_LIMIT)), archive_ids=archive_ids
        )

    async def retrieve(
        self,
        user_id: int,
        query: str,
        *,
        limit: int = 5,
        archive_ids: Sequence[int] | None = None,
        timeout: float = 2.0,
    ) -> builtins.list[PassageHit]:
        """`search` for a pipeline step: never fails the reply. A user without an active archive
        costs no search (`has_active`). After `timeout` seconds or on a storage failure it logs
        a warning and returns no passages. Cancellation propagates."""
        try:
            async with asyncio.timeout(timeout):
                if archive_ids is None and not await self.has_active(user_id):
                    return []
                return await self.search(user_id, query, limit=limit, archive_ids=archive_ids)
        except TimeoutError:
            log.warning(
                "archive search for user %s took over %.1f s; answering without", user_id, timeout
            )
        except StorageError as exc:
            log.warning("archive search for user %s failed; answering without: %s", user_id, exc)
        return []


def _open(name: str, data: bytes, mime: str | None) -> Document:
    try:
        return open_document(name, data, mime)
    except UnreadableFile as exc:
        log.info("archive refused: %s (%s): %s", name, type(exc).__name__, exc.detail)
        raise


def _read_batch(document: Document, start: int, stop: int, first: int) -> list[NewPassage]:
    return split_blocks(document.read(start, stop), first_ordinal=first)


async def _report(on_progress: OnProgress | None, progress: IngestProgress) -> None:
    if on_progress is None:
        return
    try:
        await on_progress(progress)
    except Exception:  # progress is cosmetic: a failed edit of the status message stops nothing
        log.warning("archive progress callback failed", exc_info=True)
