"""The prompt budget: the history and the notes (summary, facts) an agent sees fit in a number of
tokens, however long the chat's messages are.

    memory = fit_memory(summary, facts, history, budget=3000)
    memory.notes        # "Summary of the conversation so far: ...", within its share
    memory.history      # the newest messages that fit, oldest first, a long one cut short

The history window counted messages, not size: after a runaway model's 200 KB reply, every later
prompt carried it (~203 KB each, issue 19). Now the notes take at most `NOTES_SHARE` of the
budget (the summary first, then the newest facts that fit), the history the rest, newest message
first; a message longer than what is left is cut (its start kept, then "…"), and older ones are
left to the summary. Sizes use the output bounds' estimate (`bot.llm.bounds.estimate_tokens`),
so `PROMPT_BUDGET_TOKENS` and `max_tokens` are in one unit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.llm.bounds import clip_to_tokens, estimate_tokens
from bot.pipeline.context import DEFAULT_PROMPT_BUDGET
from bot.storage.models import StoredMessage

__all__ = ["DEFAULT_PROMPT_BUDGET", "NOTES_SHARE", "Memory", "fit_memory", "fit_text"]

NOTES_SHARE = 0.4
# A message cut to fewer tokens than this says too little to be worth its place.
MIN_PIECE = 16
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class Memory:
    notes: str
    history: list[StoredMessage]

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.notes) + sum(estimate_tokens(m.text) for m in self.history)


def fit_text(text: str, tokens: int) -> str:
    """`text` within `tokens`: itself, or its start and an ellipsis."""
    if estimate_tokens(text) <= tokens:
        return text
    return clip_to_tokens(text, max(tokens - 1, 0)) + ELLIPSIS


def _notes(summary: str | None, facts: Sequence[str], budget: int) -> str:
    parts: list[str] = []
    left = budget
    if summary:
        head = "Summary of the conversation so far:\n"
        text = head + fit_text(summary, left - estimate_tokens(head))
        parts.append(text)
        left -= estimate_tokens(text) + 1
    if facts:
        head = "Known facts about the user:"
        kept: list[str] = []
        left -= estimate_tokens(head) + 1
        for fact in reversed(facts):  # the newest first
            line = f"- {fact}"
            cost = estimate_tokens(line) + 1
            if cost > left:
                break
            kept.append(line)
            left -= cost
        if kept:
            parts.append("\n".join([head, *reversed(kept)]))
    return "\n\n".join(parts)


def fit_memory(
    summary: str | None,
    facts: Sequence[str],
    history: Sequence[StoredMessage],
    *,
    budget: int = DEFAULT_PROMPT_BUDGET,
    window: int | None = None,
) -> Memory:
    """The notes and the newest `window` messages of `history`, within `budget` tokens."""
    notes = _notes(summary, facts, int(budget * NOTES_SHARE))
    left = budget - estimate_tokens(notes)
    recent = list(history)[-window:] if window else ([] if window == 0 else list(history))
    kept: list[StoredMessage] = []
    for message in reversed(recent):
        cost = estimate_tokens(message.text)
        if cost > left:
            if left >= MIN_PIECE:
                kept.append(message.model_copy(update={"text": fit_text(message.text, left)}))
            break
        kept.append(message)
        left -= cost
    kept.reverse()
    return Memory(notes, kept)
