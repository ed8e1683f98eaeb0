"""What the admin commands' answers share: how a change reached the replicas, when, and the
fixed sentences for a database that did not answer."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from bot.config import Settings

STORAGE_PROBLEM = "Not changed: the database did not answer. Please try again in a minute."
READ_PROBLEM = "The database did not answer. Please try again in a minute."
HISTORY_PROBLEM = (
    "Changed, but the history could not be written (the database failed): /modelhistory will "
    "not list this change, and /rollback cannot undo it."
)


class Announced(Protocol):
    """A change as the model configuration reports it (`OverrideChange`, `CatalogChange`)."""

    @property
    def history_written(self) -> bool: ...

    @property
    def replicas_notified(self) -> bool | None: ...


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def propagation_note(settings: Settings, change: Announced) -> str:
    """When the change reaches every replica (this one: at once)."""
    ttl = f"{settings.model_config_ttl:g} s"
    if change.replicas_notified:
        return "Effective now, here and on every other replica."
    if change.replicas_notified is False:
        return (
            f"Effective now here; within {ttl} on other replicas (they could not be told "
            "at once: the Redis announcement failed)."
        )
    return f"Effective now here; within {ttl} on other replicas (at once with Redis)."


def outcome_notes(settings: Settings, change: Announced) -> list[str]:
    lines = []
    if not change.history_written:
        lines.append(HISTORY_PROBLEM)
    lines.append(propagation_note(settings, change))
    return lines
