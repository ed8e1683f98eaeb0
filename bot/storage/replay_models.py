"""Replay inputs (`/replay`), as storage keeps them (`ReplayRepo`): one row per agent call.

A row is what one agent sent its model in a real turn, exactly (the messages, the structured
output schema, `max_tokens`, `temperature`, streamed or not), and what came back (the text, the
latency, tokens and cost), so the same input can be run on a candidate model and the two answers
shown side by side. Each agent keeps its newest REPLAY_KEEP rows (`prune`); none are kept with
STORE_PROMPTS=false. Rows carry the chat and the user: `/forget` and `/deleteme` erase them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(slots=True)
class ReplayInput:
    at: datetime
    agent: str
    pipeline: str
    chat_id: int | None
    user_id: int | None
    turn_id: int | None
    # The user's `/prefer` the call was resolved under: a `local` user's input never goes to a
    # cloud candidate.
    preference: str
    # The agent's resolved model, and the provider and model that answered.
    spec: str
    provider: str
    model: str
    # [{"role": ..., "content": ...}, ...] as the agent sent them.
    messages: list[dict[str, str]]
    # The structured output schema as `module:QualName` (a class under `bot.`), or None.
    schema: str | None
    temperature: float | None
    max_tokens: int | None
    streamed: bool
    output: str
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    # What the provider said it cost (None: priced when shown, or unpriced).
    cost_usd: float | None
    # Made at capture: a write repeated after a lost answer stores the row once.
    input_id: str = ""
    id: int | None = None
