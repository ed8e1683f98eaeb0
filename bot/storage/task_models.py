"""Post-completion tasks (`/task`), as storage keeps them (`TaskRepo`).

A task is an admin's background step after each reply of a pipeline (or of every pipeline), for a
sampled share of turns: its instruction is the admin's text, its input the turn (the user's
message, the reply, the helpers' outputs). `kind` `score` answers a score between 0 and 1 with a
reason; `note` answers text. Each answer is a `TaskResult` stored against the turn; rows carry
the chat and the user, so `/forget` and `/deleteme` erase them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from bot.storage.models import Row, utcnow

TaskKind = Literal["note", "score"]


class TaskRow(Row):
    name: str
    # The model text it was added with (its override row is the model it runs on).
    model: str
    # None: every pipeline.
    pipeline: str | None = None
    # Percent of the pipeline's turns it runs on (0 < sample <= 100).
    sample: float = 100.0
    kind: TaskKind = "note"
    instruction: str
    created_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class TaskResult(Row):
    id: int | None = None
    task: str
    kind: TaskKind
    at: datetime = Field(default_factory=utcnow)
    turn_id: int | None = None
    chat_id: int | None = None
    user_id: int | None = None
    pipeline: str
    # The model that answered (the resolved spec).
    model: str
    # kind=score: 0..1; None for a note.
    score: float | None = None
    # The reason (score) or the note itself.
    text: str
    trace_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScoreStats:
    """A score task's scores of the turns an agent (x model, or x trial arm) served."""

    task: str
    agent: str
    # The model, or the trial arm (`incumbent`, `candidate`) for a trial's figures.
    group: str
    n: int
    mean: float
    # The mean of the squared scores (for the spread).
    mean_square: float

    def interval(self) -> tuple[float, float] | None:
        """The mean's 95 % interval (normal approximation, within 0..1); None below 2 scores."""
        if self.n < 2:
            return None
        variance = max(self.mean_square - self.mean**2, 0.0) * self.n / (self.n - 1)
        half = 1.96 * math.sqrt(variance / self.n)
        return max(self.mean - half, 0.0), min(self.mean + half, 1.0)

    def text(self) -> str:
        """`0.62 (0.55-0.69, n=40)`."""
        found = self.interval()
        spread = f"{found[0]:.2f}-{found[1]:.2f}, " if found is not None else ""
        return f"{self.mean:.2f} ({spread}n={self.n})"
