"""The intake's contract (`Intake`), its rows (`Stored`) and the factory that picks a backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.config import Settings

UPDATE = "update"
REPLY = "reply"

# (update_id, chat_id or None, the update as JSON text)
NewUpdate = tuple[int, int | None, str]


class IntakeError(RuntimeError):
    """The intake could not store or read (its file or Redis failed)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """One open entry: an update not yet answered, or a reply not yet delivered."""

    key: str
    kind: str  # UPDATE or REPLY
    update_id: int  # a reply carries its update's id, so it sorts where its update was
    chat_id: int | None
    body: str
    received_at: float  # unix time the update was stored (a reply: when it was deferred)
    attempts: int = 0  # how many times a process has taken it up again after a restart

    @property
    def order(self) -> tuple[int, int]:
        # A reply goes out before the next update of its chat is answered.
        return (self.update_id, 0 if self.kind == REPLY else 1)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """An update's place in its chat's queue across replicas (`bot.telegram.chat_queue`): a
    Redis sorted set scored by update id. The Redis intake joins it in the write that stores the
    update and leaves it in the one that marks the update done: one round trip each, not two."""

    key: str
    update_id: int
    ttl: int  # seconds the set outlives its last join

    @property
    def member(self) -> str:
        return str(self.update_id)


class Intake(Protocol):
    async def start(self) -> None: ...

    async def offset(self) -> int | None:
        """The `getUpdates` offset to poll from: one past the newest update stored."""
        ...

    async def put(self, updates: Sequence[NewUpdate], *, offset: int | None) -> list[str | None]:
        """Store updates (and the next offset) in one write; a key per update, None for an
        update stored before (a webhook re-delivery): it must not be answered twice."""
        ...

    async def put_queued(
        self, update: NewUpdate, queue: QueueEntry
    ) -> tuple[str | None, bool | None]:
        """`put` one update (no offset: the webhook's) and join its chat's queue in the same
        write. Its key as `put` gives it, and None when it did not join the queue (the file
        stores it), else whether it was the queue's head (its oldest) as it joined."""
        ...

    async def done(self, key: str, *, leave: QueueEntry | None = None) -> bool:
        """The entry is answered (or delivered): never taken up again. Idempotent. `leave`: the
        chat queue entry to leave in the same write; True when it was left."""
        ...

    async def defer_reply(
        self, update_key: str | None, update_id: int, chat_id: int, body: str
    ) -> str:
        """Store a reply still to deliver and mark its update answered, in one write."""
        ...

    async def reclaim(self, *, everything: bool = False) -> list[Stored]:
        """Open entries no live process holds (`everything`: held or not, but not this
        process's own), in `Stored.order`; taken over by this one."""
        ...

    async def close(self) -> None: ...


def intake_path(settings: Settings) -> str:
    """INTAKE_PATH, else `<main database>.intake.db` beside it (`data/intake.db` on InsForge)."""
    if settings.intake_path:
        return settings.intake_path
    if settings.uses_insforge:
        return "data/intake.db"
    main = settings.sqlite_path
    if main == ":memory:" or main.startswith("file:"):
        return ":memory:"
    path = Path(main)
    return str(path.with_name(path.stem + ".intake.db"))


def open_intake(settings: Settings, *, bot_id: int) -> Intake:
    """A Redis stream with REDIS_URL (the SQLite file behind it while Redis is away), else the
    SQLite file."""
    from bot.intake.sqlite import SqliteIntake

    local = SqliteIntake(intake_path(settings))
    if not settings.redis_url:
        return local
    from bot.intake.redis import RedisIntake

    return RedisIntake.from_url(settings.redis_url, bot_id=bot_id, fallback=local)
