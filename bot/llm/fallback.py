"""Fallback: a chain of providers tried in order, as one provider.

    llm = FallbackProvider([primary, backup1, backup2])
    response = await llm.complete(messages)   # response.attempts lists every model tried

When to move on to the next model:

- a `ProviderError` whose `retryable` is true: timeout, connection error, 408, 409, 429, 5xx,
  malformed response (HTML page, broken JSON, an error in the middle of a stream);
- `StructuredOutputError`: the model could not produce valid JSON for the schema even after its
  repair turn. Another model often can, and the caller (an agent step) has no better option than
  failing, so it is worth one more model;
- never on `RequestRejected` (a 4xx caused by the request itself: it would be rejected again) nor
  on anything that is not an `LLMError` (a configuration mistake or a bug must surface as is).

A non-retryable error is raised unchanged (with a note listing the attempts before it). When every
model fails retryably, one `AllModelsFailed` carries every attempt and its error.

Streaming falls back only until the first delta has been yielded: after that the caller has shown
text to the user, and switching models would splice two different answers together, so the error
is raised as is.

Around each inner call `CURRENT_ATTEMPT` holds the attempt's index and the previous model's error,
so a tracing wrapper around a leaf provider can mark a generation as a fallback and say why.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from pydantic import BaseModel

from bot.llm.errors import AllModelsFailed, LLMError, ProviderError, StructuredOutputError
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk

__all__ = ["CURRENT_ATTEMPT", "AttemptContext", "FallbackProvider", "should_fall_back"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """Which attempt of a fallback chain is running: 0 is the chosen model, >0 a fallback."""

    index: int
    previous_error: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.index > 0


CURRENT_ATTEMPT: ContextVar[AttemptContext | None] = ContextVar("CURRENT_ATTEMPT", default=None)


def should_fall_back(error: BaseException) -> bool:
    """Whether another model should be tried after `error` (see the module docstring)."""
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, StructuredOutputError)


@contextlib.contextmanager
def _attempt_scope(index: int, previous_error: str | None) -> Iterator[None]:
    token = CURRENT_ATTEMPT.set(AttemptContext(index, previous_error))
    try:
        yield
    finally:
        # A stream may be resumed from another context than the one that set the token.
        with contextlib.suppress(ValueError):
            CURRENT_ATTEMPT.reset(token)


class FallbackProvider:
    """`providers[0]` first, then the others in order (see the module docstring).

    `provider`, `model` and `spec` name the primary; the response names the model that answered.
    """

    def __init__(self, providers: Sequence[LLMProvider]) -> None:
        if not providers:
            raise ValueError("FallbackProvider needs at least one provider")
        self.providers: tuple[LLMProvider, ...] = tuple(providers)
        self.provider = self.providers[0].provider
        self.model = self.providers[0].model

    @property
    def spec(self) -> str:
        return self.providers[0].spec

    def __repr__(self) -> str:
        return f"FallbackProvider({[p.spec for p in self.providers]!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        attempts: list[Attempt] = []
        errors: list[BaseException] = []
        previous: str | None = None
        for index, provider in enumerate(self.providers):
            started, wall = time.perf_counter(), time.time()
            try:
                with _attempt_scope(index, previous):
                    response = await provider.complete(
                        messages,
                        schema=schema,
                        temperature=temperature,
                        max_tokens=max_tokens,
                        timeout=timeout,
                    )
            except LLMError as exc:
                attempts.append(_failed(provider, index, exc, started, wall))
                errors.append(exc)
                previous = _describe(exc)
                self._check(exc, attempts, index)
                continue
            attempts.append(_succeeded(provider, index, response, started, wall))
            response.attempts = attempts
            return response
        raise AllModelsFailed(attempts, errors)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        attempts: list[Attempt] = []
        errors: list[BaseException] = []
        previous: str | None = None
        for index, provider in enumerate(self.providers):
            started, wall = time.perf_counter(), time.time()
            yielded = False
            inner = provider.stream(
                messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
            )
            try:
                while True:
                    # Set only while the inner provider runs, not while our caller holds a chunk.
                    with _attempt_scope(index, previous):
                        try:
                            chunk = await anext(inner)
                        except StopAsyncIteration:
                            break
                    if chunk.response is not None:
                        attempts.append(_succeeded(provider, index, chunk.response, started, wall))
                        chunk.response.attempts = attempts
                    else:
                        yielded = yielded or bool(chunk.delta)
                    yield chunk
            except LLMError as exc:
                attempts.append(_failed(provider, index, exc, started, wall))
                errors.append(exc)
                previous = _describe(exc)
                if yielded:
                    exc.add_note(f"failed after streaming began; attempts: {_summary(attempts)}")
                    raise
                self._check(exc, attempts, index)
                continue
            finally:
                aclose = getattr(inner, "aclose", None)
                if aclose is not None:
                    await aclose()
            return
        raise AllModelsFailed(attempts, errors)

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()

    def _check(self, exc: LLMError, attempts: list[Attempt], index: int) -> None:
        """Re-raise `exc` unless the next model should be tried."""
        if not should_fall_back(exc):
            if len(attempts) > 1:
                exc.add_note(f"attempts: {_summary(attempts)}")
            raise exc
        if index + 1 < len(self.providers):
            log.warning(
                "model %s failed (%s); falling back to %s",
                self.providers[index].spec,
                _describe(exc),
                self.providers[index + 1].spec,
            )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _summary(attempts: Sequence[Attempt]) -> str:
    return "; ".join(
        f"#{a.index} {a.provider}:{a.model} {'ok' if a.ok else a.error}" for a in attempts
    )


def _failed(
    provider: LLMProvider, index: int, exc: BaseException, started: float, wall: float
) -> Attempt:
    return Attempt(
        provider.provider,
        provider.model,
        ok=False,
        latency_ms=(time.perf_counter() - started) * 1000,
        error=_describe(exc),
        index=index,
        started_at=wall,
    )


def _succeeded(
    provider: LLMProvider, index: int, response: LLMResponse, started: float, wall: float
) -> Attempt:
    return Attempt(
        response.provider or provider.provider,
        response.model or provider.model,
        ok=True,
        latency_ms=(time.perf_counter() - started) * 1000,
        index=index,
        started_at=wall,
        usage=response.usage,
    )
