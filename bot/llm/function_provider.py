"""An in-process provider backed by a Python function: the test double that ships with the code.

    async def reply(messages, info): return "hello"
    llm = FunctionProvider(reply, model="echo", latency=0.05)

The function gets the messages and a `CallInfo` (schema, streaming or not) and returns the text
(for a schema: JSON text) or raises any `ProviderError` to simulate a failure. Used by pipeline
unit tests and benchmarks where a wire format would only add noise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from bot.llm.errors import StructuredOutputError
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage


@dataclass(frozen=True, slots=True)
class CallInfo:
    provider: str
    model: str
    schema: type[BaseModel] | None
    streaming: bool


ReplyFunction = Callable[[Sequence[ChatMessage], CallInfo], Awaitable[str] | str]


class FunctionProvider:
    def __init__(
        self,
        function: ReplyFunction,
        *,
        provider: str = "function",
        model: str = "function",
        latency: float = 0.0,
        chunk_size: int = 8,
    ) -> None:
        self.provider = provider
        self.model = model
        self._function = function
        self._latency = latency
        self._chunk_size = chunk_size
        self.calls: list[tuple[Sequence[ChatMessage], CallInfo]] = []
        self.closed = False

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    async def _call(self, messages: Sequence[ChatMessage], info: CallInfo) -> str:
        self.calls.append((list(messages), info))
        if self._latency:
            await asyncio.sleep(self._latency)
        result = self._function(messages, info)
        if isinstance(result, str):
            return result
        return await result

    def _response(self, text: str, started: float, wall: float) -> LLMResponse:
        latency_ms = (time.perf_counter() - started) * 1000
        usage = Usage(
            prompt_tokens=0,
            completion_tokens=len(text.split()),
            cost=0.0,
        )
        return LLMResponse(
            text=text,
            model=self.model,
            provider=self.provider,
            usage=usage,
            latency_ms=latency_ms,
            finish_reason="stop",
            attempts=[
                Attempt(
                    self.provider,
                    self.model,
                    ok=True,
                    latency_ms=latency_ms,
                    started_at=wall,
                    usage=usage,
                )
            ],
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
        started, wall = time.perf_counter(), time.time()
        text = await self._call(messages, CallInfo(self.provider, self.model, schema, False))
        response = self._response(text, started, wall)
        if schema is not None:
            try:
                response.parsed = schema.model_validate_json(text)
            except ValidationError as exc:
                raise StructuredOutputError(
                    f"{self.spec} returned output that does not match {schema.__name__}: {exc}"
                ) from exc
        return response

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        started, wall = time.perf_counter(), time.time()
        text = await self._call(messages, CallInfo(self.provider, self.model, None, True))
        for i in range(0, len(text), self._chunk_size):
            yield StreamChunk(delta=text[i : i + self._chunk_size])
        yield StreamChunk(response=self._response(text, started, wall))

    async def close(self) -> None:
        self.closed = True
