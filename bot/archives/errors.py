"""What can go wrong with a user's archive, in words the user can act on.

    ArchiveError                  str(error) is a short, kind message for the user
    ├── UnreadableFile            the file itself cannot become an archive
    │   ├── UnsupportedFile       not plain text, Markdown, PDF or HTML
    │   ├── EncryptedFile         a PDF that needs a password
    │   ├── EmptyFile             no text in it (an empty file, a scanned PDF)
    │   └── CorruptFile           damaged or not what its name says
    ├── ArchiveLimitReached       ARCHIVE_MAX_FILES or ARCHIVE_MAX_MB
    ├── ArchiveExists             the user has an archive of that name
    └── ArchiveNotFound           no such archive of this user

`detail` carries what an operator needs (the parser's own words); it never reaches the user.
Storage failures are not archive errors: they stay `bot.storage.repositories.StorageError`.
"""

from __future__ import annotations

from typing import Literal

SUPPORTED = "plain text, Markdown, PDF and HTML"


def megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1_000_000:.1f} MB"


class ArchiveError(Exception):
    """Base of the archive errors; `str()` is the user's message."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    @property
    def user_message(self) -> str:
        return str(self)


class UnreadableFile(ArchiveError):
    def __init__(self, name: str, message: str, *, detail: str | None = None) -> None:
        super().__init__(message, detail=detail)
        self.name = name


class UnsupportedFile(UnreadableFile):
    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            name,
            f"I can keep {SUPPORTED} files, and “{name}” is none of these. Save it as PDF or "
            "text and send it again.",
            detail=detail,
        )


class EncryptedFile(UnreadableFile):
    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            name,
            f"“{name}” is protected by a password, so I cannot read it. Save a copy without "
            "the password and send that.",
            detail=detail,
        )


class EmptyFile(UnreadableFile):
    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            name,
            f"I found no text in “{name}”. If it is a scanned document, run it through text "
            "recognition (OCR) first.",
            detail=detail,
        )


class CorruptFile(UnreadableFile):
    def __init__(self, name: str, *, detail: str | None = None) -> None:
        super().__init__(
            name,
            f"“{name}” seems to be damaged: I could not read it. Try saving or exporting it again.",
            detail=detail,
        )


class ArchiveLimitReached(ArchiveError):
    """`reason`: `files` (ARCHIVE_MAX_FILES) or `bytes` (ARCHIVE_MAX_MB)."""

    def __init__(
        self,
        name: str,
        reason: Literal["files", "bytes"],
        *,
        limit: int,
        used: int,
        size_bytes: int,
    ) -> None:
        if reason == "files":
            message = (
                f"You keep {used} archives, the most allowed. Delete one in /archives to add "
                f"“{name}”."
            )
        elif used == 0 or size_bytes > limit:
            message = (
                f"“{name}” is {megabytes(size_bytes)}, and archives may hold {megabytes(limit)} "
                "in all. Send a smaller file (or split it)."
            )
        else:
            message = (
                f"“{name}” ({megabytes(size_bytes)}) would take your archives to "
                f"{megabytes(used + size_bytes)}, over the {megabytes(limit)} allowed. Delete "
                "one in /archives first."
            )
        super().__init__(message, detail=f"{reason}: used {used}, limit {limit}")
        self.name = name
        self.reason: Literal["files", "bytes"] = reason
        self.limit = limit
        self.used = used
        self.size_bytes = size_bytes


class ArchiveExists(ArchiveError):
    def __init__(self, name: str) -> None:
        super().__init__(f"You already have an archive named “{name}”.")
        self.name = name


class ArchiveNotFound(ArchiveError):
    def __init__(self, archive_id: int) -> None:
        super().__init__("That archive is not there any more (deleted already?).")
        self.archive_id = archive_id
