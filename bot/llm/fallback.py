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

With a `ModelHealth` (`bot.llm.health`, shared by the registry's chains), a model whose breaker is
open (it failed several times in a row just now) is skipped and the next one asked at once; the
skip is recorded as an attempt. A chain whose every model is cooling down still tries them all, in
order, rather than fail untried, but each once: such a last-resort call makes no same-model
retries (`single_attempt()`), so in a total outage the user hears back in a moment instead of
after every model's retry back-off (4.7 s at p50 in the fault suite), and a model that has
recovered is still found by the next message.

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
from bot.llm.health import ModelHealth
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk

__all__ = [
    "CURRENT_ATTEMPT",
    "AttemptContext",
    "FallbackProvider",
    "should_fall_back",
    "single_attempt",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """Which attempt of a fallback chain is running: 0 is the chosen model, >0 a fallback."""

    index: int
    previous_error: str | None = None
    # A model whose breaker is open, asked only because every other model failed as well.
    last_resort: bool = False

    @property
    def is_fallback(self) -> bool:
        return self.index > 0


CURRENT_ATTEMPT: ContextVar[AttemptContext | None] = ContextVar("CURRENT_ATTEMPT", default=None)


def single_attempt() -> bool:
    """Whether the provider running now should make one attempt, without retries of its own."""
    context = CURRENT_ATTEMPT.get()
    return context is not None and context.last_resort


def should_fall_back(error: BaseException) -> bool:
    """Whether another model should be tried after `error` (see the module docstring)."""
    if isinstance(error, ProviderError):
        return error.retryable
    return isinstance(error, StructuredOutputError)


@contextlib.contextmanager
def _attempt_scope(
    index: int, previous_error: str | None, last_resort: bool = False
) -> Iterator[None]:
    token = CURRENT_ATTEMPT.set(AttemptContext(index, previous_error, last_resort))
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

    def __init__(
        self, providers: Sequence[LLMProvider], *, health: ModelHealth | None = None
    ) -> None:
        if not providers:
            raise ValueError("FallbackProvider needs at least one provider")
        self.providers: tuple[LLMProvider, ...] = tuple(providers)
        self.health = health
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
        previous: list[str | None] = [None]
        for index, provider, last_resort in self._candidates(attempts, previous):
            started, wall = time.perf_counter(), time.time()
            try:
                with _attempt_scope(index, previous[0], last_resort):
                    response = await provider.complete(
                        messages,
                        schema=schema,
                        temperature=temperature,
                        max_tokens=max_tokens,
                        timeout=timeout,
                    )
            except LLMError as exc:
                self._failed(provider, exc)
                attempts.append(_failed(provider, index, exc, started, wall))
                errors.append(exc)
                previous[0] = _describe(exc)
                self._check(exc, attempts, index)
                continue
            except BaseException:
                self._released(provider)
                raise
            self._succeeded(provider)
            attempts.append(_succeeded(provider, index, response, started, wall))
            response.attempts = attempts
            return response
        raise AllModelsFailed(_tried(attempts), errors)

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
        previous: list[str | None] = [None]
        for index, provider, last_resort in self._candidates(attempts, previous):
            started, wall = time.perf_counter(), time.time()
            yielded = False
            inner = provider.stream(
                messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
            )
            try:
                while True:
                    # Set only while the inner provider runs, not while our caller holds a chunk.
                    with _attempt_scope(index, previous[0], last_resort):
                        try:
                            chunk = await anext(inner)
                        except StopAsyncIteration:
                            break
                    if chunk.response is not None:
                        self._succeeded(provider)
                        attempts.append(_succeeded(provider, index, chunk.response, started, wall))
                        chunk.response.attempts = attempts
                    else:
                        yielded = yielded or bool(chunk.delta)
                    yield chunk
            except LLMError as exc:
                self._failed(provider, exc)
                attempts.append(_failed(provider, index, exc, started, wall))
                errors.append(exc)
                previous[0] = _describe(exc)
                if yielded:
                    exc.add_note(f"failed after streaming began; attempts: {_summary(attempts)}")
                    raise
                self._check(exc, attempts, index)
                continue
            except BaseException:
                self._released(provider)
                raise
            finally:
                aclose = getattr(inner, "aclose", None)
                if aclose is not None:
                    await aclose()
            # Frees the probe slot if the stream ended without a verdict on the model.
            self._released(provider)
            return
        raise AllModelsFailed(_tried(attempts), errors)

    async def close(self) -> None:
        for provider in self.providers:
            await provider.close()

    def _candidates(
        self, attempts: list[Attempt], previous: list[str | None]
    ) -> Iterator[tuple[int, LLMProvider, bool]]:
        """The models to try, in order: cooling-down ones skipped (and recorded as attempts),
        then, if the others all failed, the skipped ones after all, as last resorts."""
        skipped: list[tuple[int, LLMProvider, bool]] = []
        for index, provider in enumerate(self.providers):
            if self.health is not None and not self.health.admit(provider):
                reason = f"skipped: {self.health.skipped_because(provider)}"
                attempts.append(_skip(provider, index, reason))
                skipped.append((index, provider, True))
                previous[0] = reason
                continue
            yield index, provider, False
        yield from skipped

    def _succeeded(self, provider: LLMProvider) -> None:
        if self.health is not None:
            self.health.succeeded(provider)

    def _failed(self, provider: LLMProvider, exc: BaseException) -> None:
        if self.health is not None:
            self.health.failed(provider, exc)

    def _released(self, provider: LLMProvider) -> None:
        if self.health is not None:
            self.health.released(provider)

    def _check(self, exc: LLMError, attempts: list[Attempt], index: int) -> None:
        """Re-raise `exc` unless the next model should be tried."""
        if not should_fall_back(exc):
            if len(attempts) > 1:
                exc.add_note(f"attempts: {_summary(attempts)}")
            raise exc
        log.warning(
            "model %s failed (%s); trying the next one", self.providers[index].spec, _describe(exc)
        )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _summary(attempts: Sequence[Attempt]) -> str:
    return "; ".join(
        f"#{a.index} {a.provider}:{a.model} {'ok' if a.ok else a.error}" for a in attempts
    )


def _tried(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The attempts that called a model (not the skips of cooling-down ones)."""
    return [a for a in attempts if not (a.error or "").startswith("skipped:")]


def _skip(provider: LLMProvider, index: int, reason: str) -> Attempt:
    return Attempt(
        provider.provider,
        provider.model,
        ok=False,
        latency_ms=0.0,
        error=reason,
        index=index,
        started_at=time.time(),
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
