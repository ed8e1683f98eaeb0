"""The call ledger's rows: one `LedgerCall` per model call attempt, and what `/stats` reads back.

Written by `bot.observatory.writer.LedgerWriter`, read by `bot.observatory.stats`; both backends
store them (`ledger_calls`, `ledger_ratings`: SQLite step 7, insforge/migrations/011).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

CostSource = Literal["provider", "price_table", "local", "unpriced"]


@dataclass(slots=True)
class LedgerCall:
    """One call of one model. `model` is the model that answered (the response's own id), or the
    model asked when the call failed; `spec` is the agent's resolved model (the chain's primary).
    `outcome` is `ok` or the error's kind (`ProviderTimeout`, `RateLimited`, `invalid_output`...).
    `cost_usd` is None exactly when `cost_source` is `unpriced`."""

    at: datetime
    turn_id: int | None
    chat_id: int | None
    user_id: int | None
    pipeline: str
    agent: str
    role: str | None
    level: str | None
    spec: str
    model: str
    provider: str
    attempt: int
    fallback: bool
    outcome: str
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    cost_source: CostSource
    config_version: int | None
    # The running trial (`/trial`) this call's user and agent are in, and the user's arm.
    trial_id: int | None = None
    trial_arm: str | None = None
    # Set by the writer once per batch (`<batch>-<n>`): a repeated InsForge write stores it once.
    call_id: str = ""


@dataclass(slots=True)
class CallStats:
    """The figures of one agent (model None: all its models) or one agent x model over a window.

    Latency percentiles are over the calls that answered (nearest rank; from the rollups'
    log buckets within 4.4 %, decision 0016); `cost_usd` sums the
    priced calls only, `unpriced` says how many answered calls it lacks (a failed call
    reported no usage, so there is nothing to price). `ratings_up` of `ratings` are 👍: the
    ratings of the turns this agent (x model) answered in."""

    agent: str
    model: str | None
    calls: int
    turns: int
    errors: int
    fallbacks: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced: int
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None
    ratings_up: int
    ratings: int


@dataclass(slots=True)
class SeriesPoint:
    """One model of one agent in one time bucket (the `/stats <agent>` chart)."""

    bucket: datetime
    model: str
    p95_ms: float | None
    cost_usd: float
    turns: int


@dataclass(slots=True)
class UserCost:
    """What a user's turns cost in a window (`/usage`)."""

    cost_usd: float
    calls: int
    unpriced: int


@dataclass(slots=True)
class TrialCall:
    """One call of a trial's arm, as the guardrails and `/trial`'s intervals read it back."""

    at: datetime
    turn_id: int | None
    outcome: str
    latency_ms: float
    cost_usd: float | None
    # Whose call it was: the guardrails treat a user's calls as one cluster (arms are per user).
    user_id: int | None = None
