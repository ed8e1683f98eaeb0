"""Timestamps as both backends store them: timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    """Fixed-width ISO 8601 in UTC (`2025-01-02T03:04:05.000006+00:00`): sorts as text."""
    return as_utc(value).isoformat(timespec="microseconds")
