"""What an answer shows of a user's own words: at most a short, quoted piece.

    quoted("strategist")        -> "'strategist'"
    quoted("x" * 4000)          -> "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' (4000 characters)"

Answers that repeat what the user typed (an unknown command, target, alias or option) must fit
in one Telegram message (4096 characters) whatever the user sent: an answer quoting a 4,060
character argument was refused by Telegram, and the user got the generic error instead
(issue 19). So the quote is cut, and says how long the original was.
"""

from __future__ import annotations

__all__ = ["QUOTE_LIMIT", "clipped", "quoted"]

QUOTE_LIMIT = 40


def clipped(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`value` itself when short, else its first `limit` characters and an ellipsis."""
    if len(value) <= limit:
        return value
    return value[:limit] + "…"


def quoted(value: str, limit: int = QUOTE_LIMIT) -> str:
    """`repr(value)` when short; else the clipped value, quoted, with the original's length."""
    if len(value) <= limit:
        return repr(value)
    return f"{clipped(value, limit)!r} ({len(value)} characters)"
