"""Normalized types every provider speaks, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


def system(content: str) -> ChatMessage:
    return ChatMessage("system", content)


def user(content: str) -> ChatMessage:
    return ChatMessage("user", content)


def assistant(content: str) -> ChatMessage:
    return ChatMessage("assistant", content)


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # In USD, when the provider reports it (OpenRouter's `usage.cost`) or we can price it.
    cost: float | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Attempt:
    """One call to one model, kept on the response whether it succeeded or not."""

    provider: str
    model: str
    ok: bool
    latency_ms: float
    error: str | None = None
    # Index in the fallback chain: 0 is the chosen model, >0 a fallback.
    index: int = 0
    started_at: float = 0.0  # time.time() when the attempt began
    usage: Usage | None = None

    @property
    def is_fallback(self) -> bool:
        return self.index > 0


@dataclass(slots=True)
class LLMResponse:
    text: str
    model: str
    provider: str
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    finish_reason: str | None = None
    # A validated instance of the schema passed to `complete(..., schema=...)`.
    parsed: BaseModel | None = None
    attempts: list[Attempt] = field(default_factory=list)
    raw: dict[str, Any] | None = None
    # The model id the answer itself names (OpenRouter names the model it routed to, often a
    # dated version); None when the wire does not say. The call ledger records it.
    served_model: str | None = None


@dataclass(slots=True)
class StreamChunk:
    """A piece of a streamed reply. The last chunk carries the whole `response` (usage etc.)."""

    delta: str = ""
    response: LLMResponse | None = None

    @property
    def is_final(self) -> bool:
        return self.response is not None
