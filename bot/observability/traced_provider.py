"""`TracedProvider`: a wrapper that records one generation per call of a leaf provider.

The registry wraps every leaf provider (`ProviderRegistry(settings, wrap=tracing.wrap_provider)`),
so inside a fallback chain each attempt is its own generation; the chain publishes which attempt
this is in `bot.llm.fallback.CURRENT_ATTEMPT`, and a fallback attempt's generation says so and
names the error that caused it.

This module knows nothing about Langfuse: it talks to a `GenerationRecorder`
(`bot.observability.tracing.Tracing`), which turns calls into Langfuse generations. A recorder
must never raise; the wrapper never changes what the wrapped provider returns or raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from bot.llm.fallback import CURRENT_ATTEMPT
from bot.llm.protocol import LLMProvider
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk


@dataclass(slots=True)
class GenerationCall:
    provider: str
    model: str
    messages: Sequence[ChatMessage]
    parameters: dict[str, Any] = field(default_factory=dict)
    streaming: bool = False
    # 0 is the chosen model; >0 a fallback attempt, started because of `previous_error`.
    attempt: int = 0
    previous_error: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.attempt > 0


class GenerationHandle(Protocol):
    def first_token(self) -> None: ...

    def succeed(self, response: LLMResponse) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def abandon(self, reason: str) -> None: ...


class GenerationRecorder(Protocol):
    def start_generation(self, call: GenerationCall) -> GenerationHandle: ...


def current_attempt() -> tuple[int, str | None]:
    """(index, error that caused it) of the fallback attempt running now; (0, None) outside."""
    context = CURRENT_ATTEMPT.get()
    if context is None:
        return 0, None
    return context.index, context.previous_error


class TracedProvider:
    """Offers the wrapped provider's surface; every call becomes one generation."""

    def __init__(self, inner: LLMProvider, recorder: GenerationRecorder) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model
        self._recorder = recorder

    @property
    def spec(self) -> str:
        return self.inner.spec

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller may look at (e.g. a provider's own flags) is the inner one's.
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"TracedProvider({self.inner.provider}:{self.inner.model})"

    def _call(
        self,
        messages: Sequence[ChatMessage],
        parameters: dict[str, Any],
        *,
        streaming: bool,
    ) -> GenerationCall:
        attempt, previous = current_attempt()
        return GenerationCall(
            provider=self.inner.provider,
            model=self.inner.model,
            messages=list(messages),
            parameters={key: value for key, value in parameters.items() if value is not None},
            streaming=streaming,
            attempt=attempt,
            previous_error=previous,
        )

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        parameters = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "schema": schema.__name__ if schema is not None else None,
        }
        generation = self._recorder.start_generation(
            self._call(messages, parameters, streaming=False)
        )
        try:
            response = await self.inner.complete(
                messages,
                schema=schema,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout=timeout,
            )
        except Exception as exc:
            generation.fail(exc)
            raise
        except BaseException:
            generation.abandon("cancelled")
            raise
        generation.succeed(response)
        return response

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        parameters = {"temperature": temperature, "max_tokens": max_tokens}
        generation = self._recorder.start_generation(
            self._call(messages, parameters, streaming=True)
        )
        chunks = self.inner.stream(
            messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
        )
        finished = False
        first = True
        try:
            async for chunk in chunks:
                if first and chunk.delta:
                    first = False
                    generation.first_token()
                if chunk.response is not None:
                    finished = True
                    generation.succeed(chunk.response)
                yield chunk
        except Exception as exc:
            if not finished:
                finished = True
                generation.fail(exc)
            raise
        finally:
            if not finished:
                # Cancelled, or the caller stopped reading before the last chunk.
                generation.abandon("stream closed before the end")
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def close(self) -> None:
        await self.inner.close()
