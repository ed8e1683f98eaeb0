"""Who may use the bot: ACCESS_MODE, the environment's lists and the admins' decisions.

    access = AccessService.from_settings(settings, storage.access)
    decision = await access.check(user_id, chat_id, private=True, label=lambda: "@ann", update=...)
    if decision.verdict is Verdict.ALLOW: ...

Modes: `open` (anyone; blocked users still are not served), `allowlist` (ALLOWED_USER_IDS,
ALLOWED_CHAT_IDS for groups, and whom an admin allowed with `/users allow`), `approval` (a
stranger's first message is kept and every admin is asked; Approve lets them in and answers it).
Admins (ADMIN_IDS) are always allowed.

What costs what: a known allowed user costs nothing (the environment's lists, or a copy of the
access table refreshed in the background every `ttl` seconds). Anyone else is looked up in the
database on every message, so an approval given on another replica counts on the very next
message. A block reaches this replica at once and the others at their next refresh, or at once
with Redis (the change is published like a model configuration change).

Each notice (a refusal, "you are waiting", "you are blocked") is sent once: the row records it,
and the database settles races between replicas (`AccessRepo.create`, `claim_notice`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot.config import Settings
from bot.llm.specs import PROVIDERS
from bot.storage.access_models import AccessEntry, AccessStatus
from bot.storage.repositories import AccessRepo, StorageError

log = logging.getLogger(__name__)

ChangeListener = Callable[[int], object]

# How an access change is named on the model configuration's Redis channel (`access:<id>`).
ACCESS_TARGET = "access:"


def open_access_warning(settings: Settings) -> str | None:
    """A warning when anyone may chat with the bot on the operator's own (shared) keys."""
    if settings.access_mode != "open":
        return None
    shared = [
        name
        for name, info in PROVIDERS.items()
        if info.wire != "local" and settings.api_key_for(name) is not None
    ]
    if not shared:
        return None
    return (
        f"ACCESS_MODE=open: anyone who finds the bot can chat on your {', '.join(shared)} key; "
        "set ACCESS_MODE=allowlist (ALLOWED_USER_IDS) or approval to choose who may"
    )


class Verdict(enum.Enum):
    ALLOW = "allow"
    # Tell the stranger they are not on the list, with their id (sent once).
    REFUSE = "refuse"
    # A new stranger under approval: ask the admins, tell the stranger they wait.
    ASK_ADMINS = "ask-admins"
    # Blocked: tell them once.
    BLOCKED_NOTICE = "blocked-notice"
    # Nothing to send: a stranger already told, a blocked user already told, one waiting.
    IGNORE = "ignore"
    # A stranger's status cannot be read or written (database down): ask them to come back.
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class AccessDecision:
    verdict: Verdict
    # The user id (private chat) or group chat id the decision is about.
    subject_id: int


ALLOW_ADMIN = AccessDecision(Verdict.ALLOW, 0)


class AccessService:
    def __init__(
        self,
        repo: AccessRepo,
        *,
        mode: str,
        admin_ids: Iterable[int],
        allowed_user_ids: Iterable[int] = (),
        allowed_chat_ids: Iterable[int] = (),
        ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.mode = mode
        self.admin_ids = frozenset(admin_ids)
        self.env_users = frozenset(allowed_user_ids)
        self.env_chats = frozenset(allowed_chat_ids)
        self.ttl = ttl
        self._clock = clock
        self._statuses: dict[int, AccessStatus] | None = None
        self._loaded_at = 0.0
        self._refresh: asyncio.Task[None] | None = None
        self._listeners: list[ChangeListener] = []
        # Subjects whose one notice of their current status went out (from here or another
        # replica): their next messages cost no database write.
        self._told: set[int] = set()

    @classmethod
    def from_settings(cls, settings: Settings, repo: AccessRepo) -> AccessService:
        return cls(
            repo,
            mode=settings.access_mode,
            admin_ids=settings.admin_ids,
            allowed_user_ids=settings.allowed_user_ids,
            allowed_chat_ids=settings.allowed_chat_ids,
            ttl=settings.model_config_ttl,
        )

    def is_admin(self, user_id: int) -> bool:
        return user_id in self.admin_ids

    # --- the copy of the table ---

    async def _snapshot(self) -> dict[int, AccessStatus]:
        """The table's statuses: loaded once, then refreshed in the background when older than
        `ttl` (a message never waits for a refresh, only for the first load)."""
        if self._statuses is None:
            await self._load()
        elif self._clock() - self._loaded_at >= self.ttl and self._refresh is None:
            self._refresh = asyncio.create_task(self._background_load(), name="access-refresh")
        return self._statuses or {}

    async def _load(self) -> None:
        # Stamped before the read: a failure waits a whole ttl too (no read per message while
        # the database is down).
        self._loaded_at = self._clock()
        try:
            rows = await self.repo.list()
        except StorageError as exc:
            log.warning("could not read the access list (%s); using the last copy", exc)
            if self._statuses is None:
                self._statuses = {}
            return
        self._statuses = {row.subject_id: row.status for row in rows}

    async def _background_load(self) -> None:
        try:
            await self._load()
        finally:
            self._refresh = None

    def invalidate(self) -> None:
        """Another replica changed someone's status: read the table again on the next message."""
        self._loaded_at = float("-inf")

    def _remember(self, subject_id: int, status: AccessStatus) -> None:
        self._told.discard(subject_id)
        if self._statuses is not None:
            self._statuses[subject_id] = status

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def _changed(self, subject_id: int) -> None:
        for listener in self._listeners:
            result = listener(subject_id)
            if asyncio.iscoroutine(result):
                await result

    # --- the check on every update ---

    async def check(
        self,
        user_id: int,
        chat_id: int,
        *,
        private: bool,
        label: Callable[[], str] | None = None,
        update: Callable[[], str] | None = None,
    ) -> AccessDecision:
        """May this user be served in this chat? `label` (who they are, for /users) and
        `update` (the update's JSON, kept for a stranger who waits for approval) are only
        called for a stranger: an allowed user's message builds neither."""
        if user_id in self.admin_ids:
            return ALLOW_ADMIN
        statuses = await self._snapshot()
        # A blocked user is not served anywhere, in any mode.
        if statuses.get(user_id) == "blocked":
            return await self._blocked(user_id)
        if self.mode == "open":
            return AccessDecision(Verdict.ALLOW, user_id)
        subject = user_id if private else chat_id
        if subject in (self.env_users if private else self.env_chats):
            return AccessDecision(Verdict.ALLOW, subject)
        if not private and statuses.get(chat_id) == "blocked":
            return await self._blocked(chat_id)
        known = statuses.get(subject)
        if known == "allowed":
            return AccessDecision(Verdict.ALLOW, subject)
        if known == "refused":
            # Told once already; an allow (here, or published by another replica) clears this.
            return AccessDecision(Verdict.IGNORE, subject)
        return await self._stranger(subject, label=label, update=update)

    async def _blocked(self, subject_id: int) -> AccessDecision:
        if subject_id in self._told:
            return AccessDecision(Verdict.IGNORE, subject_id)
        try:
            first = await self.repo.claim_notice(subject_id)
        except StorageError:
            first = False  # silence rather than a notice per message during an outage
        self._told.add(subject_id)
        return AccessDecision(Verdict.BLOCKED_NOTICE if first else Verdict.IGNORE, subject_id)

    async def _stranger(
        self, subject: int, *, label: Callable[[], str] | None, update: Callable[[], str] | None
    ) -> AccessDecision:
        """Not known as allowed here: the database has the last word (another replica may
        have just approved them)."""
        try:
            entry = await self.repo.get(subject)
            if entry is None:
                return await self._first_contact(subject, label=label, update=update)
        except StorageError as exc:
            log.warning("could not check access of %s: %s", subject, exc)
            return AccessDecision(Verdict.UNAVAILABLE, subject)
        self._remember(subject, entry.status)
        if entry.status == "allowed":
            return AccessDecision(Verdict.ALLOW, subject)
        if entry.status == "blocked":
            return await self._blocked(subject)
        return AccessDecision(Verdict.IGNORE, subject)

    async def _first_contact(
        self, subject: int, *, label: Callable[[], str] | None, update: Callable[[], str] | None
    ) -> AccessDecision:
        if self.mode == "allowlist":
            row = AccessEntry(
                subject_id=subject, status="refused", label=_call(label), notified=True
            )
            created = await self.repo.create(row)
            self._remember(subject, "refused")
            return AccessDecision(Verdict.REFUSE if created else Verdict.IGNORE, subject)
        row = AccessEntry(
            subject_id=subject,
            status="pending",
            label=_call(label),
            notified=True,
            waiting_update=update() if update is not None else None,
        )
        created = await self.repo.create(row)
        if created is not None:
            self._remember(subject, "pending")
        return AccessDecision(Verdict.ASK_ADMINS if created else Verdict.IGNORE, subject)

    # --- admins' decisions ---

    async def decide(self, subject_id: int, *, approve: bool, by: str) -> AccessEntry | None:
        """An admin's Approve or Deny of a waiting stranger; the row after (its waiting update
        to answer), or None when it was no longer pending (decided by someone else)."""
        status: AccessStatus = "allowed" if approve else "blocked"
        entry = await self.repo.decide_pending(subject_id, status, decided_by=by)
        if entry is None:
            return None
        self._remember(subject_id, status)
        if not approve:
            await self.repo.update(subject_id, clear_waiting=True, notified=True)
        await self._changed(subject_id)
        return entry

    async def allow(self, subject_id: int, *, by: str) -> AccessEntry:
        """`/users allow <id>`: the row after (a waiting update is answered by the caller)."""
        entry = await self.repo.set_status(subject_id, "allowed", decided_by=by)
        self._remember(subject_id, "allowed")
        await self._changed(subject_id)
        return entry

    async def block(self, subject_id: int, *, by: str) -> AccessEntry:
        entry = await self.repo.set_status(subject_id, "blocked", decided_by=by)
        if entry.waiting_update is not None:
            await self.repo.update(subject_id, clear_waiting=True)
        self._remember(subject_id, "blocked")
        await self._changed(subject_id)
        return entry

    async def answered(self, subject_id: int) -> None:
        """The waiting message was answered: it need not be kept any more."""
        await self.repo.update(subject_id, clear_waiting=True)

    async def entries(self) -> list[AccessEntry]:
        return await self.repo.list()


def _call(make: Callable[[], str] | None) -> str | None:
    return make() if make is not None else None
