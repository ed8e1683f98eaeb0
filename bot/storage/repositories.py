"""The repository interfaces: what the bot may ask of storage, implemented by each backend.

Both backends (SQLite in `bot.storage.sqlite`, InsForge in `bot.storage.insforge`) implement every
protocol here and pass the same contract suite (`tests/storage/test_contract.py`).

Failures: a backend raises `StorageError` (or a subclass) when the database cannot do what was
asked; a write that matters is retried by the backend where safe, and otherwise surfaces as an
error the caller can show. Nothing is silently dropped.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Literal, Protocol

from bot.storage.access_models import AccessEntry, AccessStatus
from bot.storage.archive_models import (
    Archive,
    ArchiveUsage,
    NewArchive,
    NewPassage,
    PassageHit,
)
from bot.storage.budget_models import BudgetLimitRow
from bot.storage.ledger_models import CallStats, LedgerCall, SeriesPoint, TrialCall, UserCost
from bot.storage.models import (
    AgentModelConfig,
    ChatSummary,
    Exercise,
    ModelCatalogRow,
    ModelConfigChange,
    ModelPreference,
    StoredMessage,
    User,
    UserFact,
    UserSettings,
)
from bot.storage.replay_models import ReplayInput
from bot.storage.task_models import ScoreStats, TaskResult, TaskRow
from bot.storage.trial_models import TrialRow, TrialStatus
from bot.storage.turn_models import TurnContext, TurnWritten


class StorageError(Exception):
    """The database could not do what was asked (unreachable, rejected, timed out)."""


class StorageUnavailable(StorageError):
    """The database could not be reached or did not answer in time; the caller may retry."""


class StorageConfigError(StorageError):
    """Storage is misconfigured (bad URL, rejected credentials): fix the named variable."""


class StorageRejected(StorageError):
    """The database refused the request itself (unknown column, bad filter, constraint): retrying
    the same request will not help. `status` is the HTTP status (InsForge) and `code` the
    PostgreSQL/PostgREST error code when known (e.g. `23505`, `PGRST204`)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class StorageConflict(StorageRejected):
    """A unique (or foreign-key) constraint refused the write: the row already exists."""


class StorageNotFound(StorageRejected):
    """The row the request names (e.g. an exercise id) does not exist."""


class ArchiveQuotaExceeded(StorageRejected):
    """Storing the archive would take the user past a limit: `reason` is `files`
    (ARCHIVE_MAX_FILES) or `bytes` (ARCHIVE_MAX_MB); `usage` is what they keep now."""

    def __init__(self, reason: Literal["files", "bytes"], usage: ArchiveUsage) -> None:
        super().__init__(f"archive limit reached ({reason})", code="archive_quota")
        self.reason: Literal["files", "bytes"] = reason
        self.usage = usage


class UserRepo(Protocol):
    async def touch(self, user: User) -> User:
        """Insert the user or update names/language and `last_seen`; `first_seen` is kept."""
        ...

    async def get(self, user_id: int) -> User | None: ...

    async def erase(self, user_id: int) -> dict[str, int]:
        """Delete everything stored about the user (`/deleteme`): their row, settings and key,
        facts, exercises, their private chat's messages and summary, and the messages they
        wrote (and were answered with) in groups; how many rows of each kind, by
        `ERASED_KINDS`. Archives are the `ArchiveRepo`'s. Erasing again finds nothing."""
        ...


# What `UserRepo.erase` counts, in this order.
ERASED_KINDS = (
    "messages",
    "summaries",
    "facts",
    "exercises",
    "settings",
    "user",
    "replay_inputs",
    "task_results",
)


class UserSettingsRepo(Protocol):
    async def get(self, user_id: int) -> UserSettings | None: ...

    async def save(self, settings: UserSettings) -> UserSettings:
        """Insert or replace the user's settings (upsert on user_id): every field is written."""
        ...

    async def set_default_model(self, user_id: int, default_model: str | None) -> UserSettings:
        """Set only the user's default model (None: the bot's defaults); the other fields are
        kept, the row is created with defaults when missing. Returns the row as stored."""
        ...

    async def set_model_preference(self, user_id: int, preference: ModelPreference) -> UserSettings:
        """Set only the user's `local`/`online`/`any` preference; the other fields are kept, the
        row is created with defaults when missing. Returns the row as stored."""
        ...

    async def set_api_key(
        self, user_id: int, provider: str | None, encrypted: str | None
    ) -> UserSettings:
        """Set only the user's own key: its provider and the key encrypted with BOT_SECRET_KEY
        (None and None forget it); the other fields are kept, the row is created with defaults
        when missing. Returns the row as stored."""
        ...


class MessageRepo(Protocol):
    async def add(self, message: StoredMessage) -> StoredMessage:
        """Store one message; returns it with its id. Storing the same message (the same
        `idempotency_key`) again stores nothing and returns the row stored the first time."""
        ...

    async def add_many(self, messages: Sequence[StoredMessage]) -> None:
        """Store messages in one batch, in order; idempotent like `add` (a message stored
        before under its `idempotency_key` is not stored again)."""
        ...

    async def recent(self, chat_id: int, limit: int = 20) -> list[StoredMessage]:
        """The chat's last `limit` messages, oldest first."""
        ...

    async def count(self, chat_id: int) -> int: ...

    async def id_of(self, idempotency_key: str) -> int | None:
        """The id of the message stored under `idempotency_key`; None when there is none."""
        ...

    async def clear(self, chat_id: int) -> int:
        """Delete the chat's messages; returns how many (also when the backend had to repeat the
        delete after losing its first answer)."""
        ...


class SummaryRepo(Protocol):
    async def get(self, chat_id: int) -> ChatSummary | None: ...

    async def save(self, summary: ChatSummary) -> ChatSummary:
        """Upsert on chat_id."""
        ...

    async def clear(self, chat_id: int) -> None: ...


class FactRepo(Protocol):
    async def add_many(self, user_id: int, facts: Sequence[str]) -> list[UserFact]:
        """Store facts not already known for the user (exact duplicates are skipped)."""
        ...

    async def list(self, user_id: int, limit: int = 50) -> list[UserFact]:
        """The user's facts, oldest first."""
        ...

    async def clear(self, user_id: int) -> int:
        """Delete the user's facts; how many."""
        ...


class ExerciseRepo(Protocol):
    async def create(self, exercise: Exercise) -> Exercise: ...

    async def open_for_chat(self, chat_id: int) -> Exercise | None:
        """The latest exercise of the chat that has not been graded yet."""
        ...

    async def grade(
        self, exercise_id: int, *, answer: str, grade: float, feedback: str
    ) -> Exercise: ...

    async def list_for_user(self, user_id: int, limit: int = 20) -> list[Exercise]: ...


class AgentModelConfigRepo(Protocol):
    async def get_all_active(self) -> list[AgentModelConfig]:
        """Every active override; one query."""
        ...

    async def get(self, agent_name: str) -> AgentModelConfig | None:
        """The agent's row, active or not."""
        ...

    async def upsert(self, agent_name: str, model_id: str, set_by: str | None) -> AgentModelConfig:
        """Set the agent's override (insert, or update model/set_by/updated_at and reactivate)."""
        ...

    async def deactivate(self, agent_name: str) -> bool:
        """Turn the agent's override off. True exactly when this call turned an active override
        off, including when the backend had to repeat the write after losing its first answer;
        False when there was no active override (none, already off, or turned off by another
        call first). Of concurrent calls for one agent at most one gets True, so a caller can
        record one history line per True. Raises `StorageError` when the outcome is unknown."""
        ...


class ModelConfigHistoryRepo(Protocol):
    async def append(self, change: ModelConfigChange) -> ModelConfigChange:
        """Record one change; appending the same change (the same `idempotency_key`) again
        records nothing and returns the line recorded the first time."""
        ...

    async def list(self, agent_name: str | None = None, limit: int = 20) -> list[ModelConfigChange]:
        """Newest first."""
        ...

    async def latest_id(self) -> int:
        """The newest line's id (0 when there is none): the configuration version."""
        ...


class ModelCatalogRepo(Protocol):
    async def list(self) -> list[ModelCatalogRow]:
        """Every stored entry, by alias; one query."""
        ...

    async def get(self, alias: str) -> ModelCatalogRow | None: ...

    async def save(self, row: ModelCatalogRow) -> ModelCatalogRow:
        """Insert or replace the entry (upsert on alias): every field is written, `created_at`
        is kept on an update. Repeating the same save stores the same row."""
        ...

    async def delete(self, alias: str) -> bool:
        """Remove the entry; True when a row was there to remove."""
        ...


# Called while an archive's passages are being stored: (stored so far, total).
StoreProgress = Callable[[int, int], Awaitable[None]]


class ArchiveRepo(Protocol):
    """Users' study archives and the full-text index of their passages.

    Every method takes the owner's `user_id` and touches only that user's rows: an archive id of
    another user is treated as unknown, and search never returns another user's passage.
    """

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
        """Store the archive and index all its passages, atomically: afterwards either all of it
        is searchable or nothing of it is stored. The limits are checked in the same transaction
        (counting what the user keeps, less the archive replaced): past one it raises
        `ArchiveQuotaExceeded`. A name the user already has raises `StorageConflict`, unless
        `replace`, which swaps the old archive for the new one in that transaction."""
        ...

    async def usage(self, user_id: int) -> ArchiveUsage: ...

    async def list(self, user_id: int) -> list[Archive]:
        """The user's archives, oldest first."""
        ...

    async def get(self, user_id: int, archive_id: int) -> Archive | None: ...

    async def set_active(self, user_id: int, archive_id: int, active: bool) -> Archive | None:
        """Search it by default or not; None when the user has no such archive."""
        ...

    async def delete(self, user_id: int, archive_id: int) -> bool:
        """Delete the archive and its passages from the index; False when there was none."""
        ...

    async def search(
        self,
        user_id: int,
        terms: Sequence[str],
        *,
        limit: int = 5,
        archive_ids: Sequence[int] | None = None,
    ) -> builtins.list[PassageHit]:
        """The best `limit` passages for any of `terms` (words; stemmed by the backend), best
        first, from the user's active archives, or from `archive_ids` (of this user) when given.
        Bounded: one indexed query, whatever the user keeps."""
        ...


class AccessRepo(Protocol):
    async def get(self, subject_id: int) -> AccessEntry | None: ...

    async def list(self) -> builtins.list[AccessEntry]:
        """Every row (allowed, pending, blocked, refused), newest change first."""
        ...

    async def create(self, entry: AccessEntry) -> AccessEntry | None:
        """Insert the row unless the subject has one; the new row, or None when it existed
        (so exactly one replica sends a stranger's refusal or asks the admins)."""
        ...

    async def set_status(
        self, subject_id: int, status: AccessStatus, *, decided_by: str, label: str | None = None
    ) -> AccessEntry:
        """Insert or change the subject's status (an admin's decision); clears `notified`,
        keeps a waiting message (answered by the caller once allowed). The row after."""
        ...

    async def decide_pending(
        self, subject_id: int, status: AccessStatus, *, decided_by: str
    ) -> AccessEntry | None:
        """Move a *pending* subject to `status`; the row after (its waiting update kept until
        the caller clears it), or None when it was not pending (another admin decided first)."""
        ...

    async def update(
        self,
        subject_id: int,
        *,
        admin_messages: str | None = None,
        notified: bool | None = None,
        clear_waiting: bool = False,
    ) -> None: ...

    async def claim_notice(self, subject_id: int) -> bool:
        """Mark the row's notice as sent; True only for the one call that changed it."""


class LedgerRepo(Protocol):
    """The call ledger (`bot.observatory`): rows are written in batches, read as aggregates."""

    async def add_many(self, calls: Sequence[LedgerCall]) -> None:
        """Store the calls in one write. Repeating it (the same `call_id`s) stores them once."""
        ...

    async def roll_up(self) -> int:
        """Bring the rollups up to the calls written (off the writes, in bounded steps; every
        few seconds from the writer, and before each read of the figures); how many calls were
        added."""
        ...

    async def prune(self, before: datetime) -> int:
        """Delete calls and ratings older than the day `before` falls in (whole days, with
        their rollups); how many calls went."""
        ...

    async def rate(self, turn_id: int, user_id: int, chat_id: int | None, up: bool) -> None:
        """The user's 👍 (up) or 👎 on a turn; a second vote of the same user replaces the first."""
        ...

    async def stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        exact: bool = False,
    ) -> builtins.list[CallStats]:
        """Per agent (model None) and per agent x model, over calls at `since` <= at < `until`
        (and `versions[0]` <= config_version < `versions[1]` where given). A window holding
        whole hours is read from the rollups (percentiles within 4.4 %, the rest exact:
        `bot/storage/ledger_rollups.py`), unless `exact` or `versions` ask for the raw rows."""
        ...

    async def trial_stats(self, trial_id: int) -> builtins.list[CallStats]:
        """A trial's figures per arm (`model` is `incumbent` or `candidate`). One query."""
        ...

    async def trial_calls(
        self,
        trial_id: int,
        arm: str,
        *,
        limit: int,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> builtins.list[TrialCall]:
        """The arm's last `limit` calls at `since` <= at <= `until`, newest first (raw values
        for the guardrails and the intervals of `/trial`). One bounded query."""
        ...

    async def trial_call_count(self, trial_id: int, arm: str) -> int:
        """How many calls the arm has made."""
        ...

    async def trial_nth_call(self, trial_id: int, arm: str, n: int) -> datetime | None:
        """When the arm's `n`-th call (1-based, in time order) was made; None before it."""
        ...

    async def series(
        self, agent: str, since: datetime, until: datetime, bucket_seconds: int
    ) -> builtins.list[SeriesPoint]:
        """The agent's p95 latency and cost per turn per model in buckets, oldest first. Buckets
        of whole hours come from the hourly rollups and start at the hour `since` falls in."""
        ...

    async def user_cost(self, user_id: int, since: datetime) -> UserCost: ...

    async def claim_report(self, change_id: int, agent: str) -> bool:
        """Take the change report of (change, agent): True for exactly one caller, ever."""
        ...

    async def reported(self, since_change_id: int) -> set[tuple[int, str]]:
        """The (change, agent) reports taken for changes from `since_change_id` on."""
        ...


class TrialRepo(Protocol):
    """Trials (`/trial`): at most one running per agent (`start` raises `StorageConflict`)."""

    async def running(self) -> builtins.list[TrialRow]: ...

    async def get(self, trial_id: int) -> TrialRow | None: ...

    async def ended(self, limit: int) -> builtins.list[TrialRow]:
        """The last `limit` trials that ended (stopped, promoted, guardrail), newest first."""
        ...

    async def start(
        self, agent: str, candidate: str, share: float, min_calls: int, *, started_by: str
    ) -> TrialRow: ...

    async def end(
        self, trial_id: int, status: TrialStatus, *, by: str, reason: str | None = None
    ) -> bool:
        """End a running trial; True only for the one call that ended it."""
        ...


class ReplayRepo(Protocol):
    """Replay inputs (`/replay`): each agent's newest real model inputs and their outputs."""

    async def add_many(self, inputs: Sequence[ReplayInput]) -> None:
        """Store the inputs in one write. Repeating it (the same `input_id`s) stores them once."""
        ...

    async def prune(self, keep: int) -> int:
        """Keep each agent's newest `keep` rows; how many went."""
        ...

    async def recent(self, agent: str, limit: int) -> builtins.list[ReplayInput]:
        """The agent's newest `limit` inputs, oldest first."""
        ...

    async def clear_chat(self, chat_id: int) -> int:
        """Delete the chat's inputs (`/forget`); how many went."""
        ...


class TaskRepo(Protocol):
    """Post-completion tasks (`/task`) and their results."""

    async def list(self) -> builtins.list[TaskRow]: ...

    async def add(self, task: TaskRow) -> TaskRow:
        """Insert the task; `StorageConflict` when one of that name exists."""
        ...

    async def remove(self, name: str) -> bool: ...

    async def add_result(self, result: TaskResult) -> TaskResult: ...

    async def results(self, task: str, limit: int) -> builtins.list[TaskResult]:
        """The task's newest `limit` results, newest first."""
        ...

    async def clear_chat(self, chat_id: int) -> int:
        """Delete the chat's results (`/forget`); how many went."""
        ...

    async def score_stats(
        self,
        since: datetime,
        until: datetime,
        *,
        agent: str | None = None,
        versions: tuple[int | None, int | None] = (None, None),
        trial_id: int | None = None,
    ) -> builtins.list[ScoreStats]:
        """The score tasks' scores credited to every agent x model (x trial arm with
        `trial_id`) that answered in the scored turn (calls at `since` <= at < `until`, and
        `versions[0]` <= config_version < `versions[1]` where given), like the 👍. One query."""
        ...


class BudgetRepo(Protocol):
    async def list(self) -> builtins.list[BudgetLimitRow]:
        """Every limit an admin set (`usd` None: turned off), by scope."""
        ...

    async def set(self, scope: str, usd: float | None, *, set_by: str) -> None: ...


class TurnRepo(Protocol):
    """A turn's reads in one round trip and its writes in another (`bot.storage.turn_models`)."""

    async def context(
        self,
        chat_id: int,
        user_id: int,
        *,
        history_limit: int,
        facts_limit: int,
        facts: bool,
        exercise: bool,
    ) -> TurnContext: ...

    async def write(
        self, messages: Sequence[StoredMessage], calls: Sequence[LedgerCall] = ()
    ) -> TurnWritten:
        """Store `messages` (each once, by its idempotency key; in this order) and `calls` (each
        once, by `call_id`; a call without a turn gets the first user message's id)."""
        ...


class Storage(Protocol):
    """Every repository of one backend, opened and closed together."""

    users: UserRepo
    settings: UserSettingsRepo
    messages: MessageRepo
    summaries: SummaryRepo
    facts: FactRepo
    exercises: ExerciseRepo
    model_config: AgentModelConfigRepo
    model_history: ModelConfigHistoryRepo
    archives: ArchiveRepo
    model_catalog: ModelCatalogRepo
    access: AccessRepo
    ledger: LedgerRepo
    budgets: BudgetRepo
    trials: TrialRepo
    # A turn's reads and writes in one round trip each; None where that saves nothing (SQLite).
    turns: TurnRepo | None
    replay: ReplayRepo
    tasks: TaskRepo

    @property
    def backend(self) -> str:
        """`sqlite` or `insforge`."""
        ...

    @property
    def reads_overlap(self) -> bool:
        """Whether independent reads finish sooner when issued together.

        True where each read is a network round trip (InsForge). False where a read runs to
        completion on the event loop's thread (SQLite): issuing reads together there only adds a
        task per read.
        """
        ...

    async def connect(self) -> None:
        """Open connections; SQLite also creates/migrates its schema here."""
        ...

    async def ping(self) -> None:
        """Raise `StorageError` unless the database answers."""
        ...

    async def close(self) -> None: ...
