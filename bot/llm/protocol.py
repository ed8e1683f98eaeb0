"""The one surface every provider offers; wrappers (fallback, tracing) offer it too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from bot.llm.types import ChatMessage, LLMResponse, StreamChunk

T = TypeVar("T", bound=BaseModel)


@runtime_checkable
class LLMProvider(Protocol):
    """A model you can ask. `provider` and `model` name it; `spec` is `provider:model`."""

    provider: str
    model: str

    @property
    def spec(self) -> str: ...

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        """One reply. With `schema`, `response.parsed` is a validated instance of it."""
        ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        """Text deltas as they come; the last chunk carries the full `LLMResponse`."""
        ...

    async def close(self) -> None: ...
