"""`TracedProvider`: a wrapper that records one generation per call of a leaf provider.

The registry wraps every leaf provider (`ProviderRegistry(settings, wrap=tracing.wrap_provider)`),
so inside a fallback chain each attempt is its own generation; the chain publishes which attempt
this is in `bot.llm.fallback.CURRENT_ATTEMPT`, and a fallback attempt's generation says so and
names the error that caused it.

A structured call (`complete(..., schema=...)`) may be two model calls inside the leaf: when the
first reply does not validate, `bot.llm.structured` sends one repair turn. The leaf's response
lists every call it made in `attempts` (each with its own start, latency and usage), so a repaired
call becomes two generations: the first, ended when its call ended, marked as a reply that did not
validate; then the repair turn, with the final output. What the wrapper cannot see is the invalid
reply's text and the exact repair messages (they stay inside the leaf): the first generation has
no output and the repair generation shows the original messages as its input.

This module knows nothing about Langfuse: it talks to a `GenerationRecorder`
(`bot.observability.tracing.Tracing`), which turns calls into Langfuse generations. A recorder
must never raise; the wrapper never changes what the wrapped provider returns or raises.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from bot.llm.fallback import CURRENT_ATTEMPT
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage


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
    # 0 is the call as asked; >0 a structured-output repair turn the provider made after it.
    turn: int = 0

    @property
    def is_fallback(self) -> bool:
        return self.attempt > 0

    @property
    def is_repair(self) -> bool:
        return self.turn > 0


class GenerationHandle(Protocol):
    def first_token(self) -> None: ...

    def succeed(self, response: LLMResponse) -> None: ...

    def fail(self, error: BaseException) -> None: ...

    def abandon(self, reason: str) -> None: ...

    def superseded(self, call: Attempt, reason: str) -> None:
        """The call (`call`: its timing and usage) was answered, but its reply was not used:
        the provider made another call after it (a structured-output repair turn)."""
        ...


class GenerationRecorder(Protocol):
    def start_generation(
        self, call: GenerationCall, *, started_at: float | None = None
    ) -> GenerationHandle:
        """Start recording a call; `started_at` (time.time()) when it began earlier than now."""
        ...


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
        turns = self._own_calls(response)
        if schema is None or len(turns) < 2:
            generation.succeed(response)
            return response
        # The provider sent repair turns after replies that did not validate: one generation
        # per call, each with its own timing and usage; the last one has the answer.
        call = self._call(messages, parameters, streaming=False)
        *earlier, last = turns
        for index, turn in enumerate(earlier):
            generation.superseded(
                turn,
                f"the reply did not validate against {schema.__name__}; "
                "the provider asked again (repair turn)",
            )
            generation = self._recorder.start_generation(
                dataclasses.replace(call, turn=index + 1), started_at=turns[index + 1].started_at
            )
        generation.succeed(_one_call(response, last))
        return response

    def _own_calls(self, response: LLMResponse) -> list[Attempt]:
        """The model calls the wrapped leaf made for this response, oldest first."""
        calls = response.attempts
        if all(a.provider == self.inner.provider and a.model == self.inner.model for a in calls):
            return list(calls)
        return []  # not a leaf's own list (e.g. a wrapped chain): one generation, as before

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


def _one_call(response: LLMResponse, call: Attempt) -> LLMResponse:
    """`response` as the last of its calls alone: that call's usage and latency."""
    return dataclasses.replace(
        response, usage=call.usage or Usage(), latency_ms=call.latency_ms, attempts=[call]
    )
