"""`ArchiveRepo` over InsForge: PostgreSQL functions of migration 008, called through RPC.

The records API runs one statement per request, so an archive of thousands of passages cannot be
stored in one request (InsForge's body limits) nor in several atomically. It is staged instead:

    archive_stage(upload, user, [passages...])   x N chunks    invisible to search, repeatable
    archive_commit(upload, user, name, ..., limits)           one transaction: all or nothing
    archive_abort(upload, user)                               on any failure or refusal

Every one of these calls is safe to repeat (staging ignores a chunk it has, a commit of an upload
already committed returns its archive), so after an answer that was lost (a timeout, a 5xx) the
call is made again with the same upload key instead of giving up. Search is one STABLE function,
retried like a GET.
"""

from __future__ import annotations

import builtins
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bot.storage.archive_models import Archive, ArchiveUsage, NewArchive, NewPassage, PassageHit
from bot.storage.insforge_client import InsForgeClient, eq
from bot.storage.repositories import (
    ArchiveQuotaExceeded,
    StorageConflict,
    StorageError,
    StorageUnavailable,
    StoreProgress,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Bytes of JSON per staging request: far below the request limits of InsForge and its proxies
# (the loopback fake, like aiohttp's default, refuses bodies over 1 MiB).
STAGE_CHUNK_BYTES = 256 * 1024
# Extra attempts of a repeatable call whose answer was lost (the client's own retries cover the
# requests that certainly did not run).
REPEATS = 2

_ARCHIVE_COLUMNS = "id,user_id,name,kind,size_bytes,page_count,passage_count,is_active,created_at"


def chunks(passages: Sequence[NewPassage], limit: int = STAGE_CHUNK_BYTES) -> list[list[Any]]:
    """The passages as JSON-ready rows, cut into chunks of about `limit` bytes of JSON each."""
    out: list[list[Any]] = []
    current: list[Any] = []
    size = 0
    for passage in passages:
        row = {
            "ordinal": passage.ordinal,
            "page": passage.page,
            "section": passage.section,
            "text": passage.text,
        }
        # UTF-8 bytes of the text dominate; JSON escapes add a little (counted generously).
        weight = len((passage.text or "").encode()) + len(passage.section or "") + 64
        if current and size + weight > limit:
            out.append(current)
            current, size = [], 0
        current.append(row)
        size += weight
    if current:
        out.append(current)
    return out


async def _repeatable(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Make a call that is safe to repeat again when its outcome was lost."""
    attempt = 0
    while True:
        try:
            return await call()
        except StorageUnavailable as exc:
            if attempt >= REPEATS:
                raise
            attempt += 1
            log.warning("InsForge %s: outcome unknown (%s); repeating it (%d)", what, exc, attempt)


class InsForgeArchiveRepo:
    def __init__(self, client: InsForgeClient) -> None:
        self._client = client

    async def create(
        self,
        archive: NewArchive,
        passages: Sequence[NewPassage],
        *,
        max_files: int,
        max_bytes: int,
        replace: bool = False,
        progress: StoreProgress | None = None,
    ) -> Archive:
        upload = archive.key()
        try:
            staged = 0
            for chunk in chunks(passages):
                body = {"p_upload": upload, "p_user_id": archive.user_id, "p_passages": chunk}
                await _repeatable(
                    lambda body=body: self._client.rpc("archive_stage", body),  # type: ignore[misc]
                    "archive_stage",
                )
                staged += len(chunk)
                if progress is not None:
                    await progress(staged, len(passages))
            answer = await _repeatable(
                lambda: self._client.rpc(
                    "archive_commit",
                    {
                        "p_upload": upload,
                        "p_user_id": archive.user_id,
                        "p_name": archive.name,
                        "p_kind": archive.kind,
                        "p_size_bytes": archive.size_bytes,
                        "p_page_count": archive.page_count,
                        "p_passage_count": len(passages),
                        "p_max_files": max_files,
                        "p_max_bytes": max_bytes,
                        "p_replace": replace,
                    },
                ),
                "archive_commit",
            )
            row = _single(answer, "archive_commit")
            outcome = row.get("outcome")
            if outcome == "stored":
                return Archive.model_validate(row)
            usage = ArchiveUsage(files=int(row["files"]), size_bytes=int(row["used_bytes"]))
            if outcome == "exists":
                raise StorageConflict(
                    f"the user already has an archive named {archive.name!r}", code="23505"
                )
            if outcome in ("files", "bytes"):
                raise ArchiveQuotaExceeded(outcome, usage)
            raise StorageError(
                f"InsForge did not commit the archive {archive.name!r}: {outcome} (staged "
                f"passages were missing)"
            )
        except BaseException:
            await self._abort(upload, archive.user_id)
            raise

    async def _abort(self, upload: str, user_id: int) -> None:
        try:
            await self._client.rpc("archive_abort", {"p_upload": upload, "p_user_id": user_id})
        except StorageError as exc:
            # Staged rows are invisible to search; archive_abort drops them after a day anyway.
            log.warning(
                "InsForge archive_abort failed; staged passages wait for the purge: %s", exc
            )

    async def usage(self, user_id: int) -> ArchiveUsage:
        rows = await self._client.select("archives", {"user_id": eq(user_id)}, select="size_bytes")
        return ArchiveUsage(files=len(rows), size_bytes=sum(int(r["size_bytes"]) for r in rows))

    async def list(self, user_id: int) -> builtins.list[Archive]:
        rows = await self._client.select(
            "archives", {"user_id": eq(user_id)}, select=_ARCHIVE_COLUMNS, order="id.asc"
        )
        return [Archive.model_validate(row) for row in rows]

    async def get(self, user_id: int, archive_id: int) -> Archive | None:
        rows = await self._client.select(
            "archives",
            {"id": eq(archive_id), "user_id": eq(user_id)},
            select=_ARCHIVE_COLUMNS,
            limit=1,
        )
        return Archive.model_validate(rows[0]) if rows else None

    async def set_active(self, user_id: int, archive_id: int, active: bool) -> Archive | None:
        rows = await self._client.update(
            "archives", {"is_active": active}, {"id": eq(archive_id), "user_id": eq(user_id)}
        )
        return Archive.model_validate(rows[0]) if rows else None

    async def delete(self, user_id: int, archive_id: int) -> bool:
        # One transaction (archive_delete): the archive, its passages (ON DELETE CASCADE, the
        # index with them) and its terms in the statistics. Looked up first, because a repeat
        # after a lost answer finds nothing to delete even when the first attempt deleted it.
        if await self.get(user_id, archive_id) is None:
            return False
        await _repeatable(
            lambda: self._client.rpc(
                "archive_delete", {"p_user_id": user_id, "p_archive_id": archive_id}
            ),
            "archive_delete",
        )
        return True

    async def search(
        self,
        user_id: int,
        terms: Sequence[str],
        *,
        limit: int = 5,
        archive_ids: Sequence[int] | None = None,
    ) -> builtins.list[PassageHit]:
        if not terms or limit <= 0:
            return []
        args: dict[str, Any] = {"p_user_id": user_id, "p_terms": list(terms), "p_limit": limit}
        if archive_ids is not None:
            wanted = [int(archive_id) for archive_id in archive_ids][:500]
            if not wanted:
                return []
            args["p_archive_ids"] = wanted
        rows = await self._client.rpc("archive_search", args, read_only=True)
        if not isinstance(rows, list):
            raise StorageError("InsForge answered archive_search with an unexpected body")
        return [PassageHit.model_validate(row) for row in rows]


def _single(answer: Any, function: str) -> dict[str, Any]:
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict):
        return answer[0]
    if isinstance(answer, dict):
        return answer
    raise StorageError(
        f"InsForge answered {function} with an unexpected body: {json.dumps(answer)[:200]}"
    )
