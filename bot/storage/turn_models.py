"""What one conversation turn reads and writes in a single round trip each (`TurnRepo`).

A backend where every read is a network round trip (InsForge) implements `TurnRepo`: the turn's
context in one request (`insforge/migrations/020`, `turn_context`) and its messages and ledger
rows in one (`turn_write`). SQLite reads and writes on the loop's thread, where a request costs
nothing to save, so it has none (`Storage.turns` is None) and the turn uses the repositories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.storage.models import ChatSummary, Exercise, StoredMessage, UserSettings


@dataclass(slots=True)
class TurnContext:
    """Everything a turn's context is built from; the same values the separate reads give."""

    history: list[StoredMessage] = field(default_factory=list)  # oldest first
    summary: ChatSummary | None = None
    facts: list[str] = field(default_factory=list)  # oldest first
    settings: UserSettings | None = None
    exercise: Exercise | None = None
    # Whether the user has an active archive (what `ArchiveService.has_active` answers).
    archives: bool = False


@dataclass(slots=True)
class TurnWritten:
    """The stored messages, in the order given, and the chat's message count after the write."""

    messages: list[StoredMessage]
    count: int
