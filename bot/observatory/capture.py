"""Capture: every model call attempt made during a turn becomes one `LedgerCall`.

    with turn_scope(Turn("support", chat_id, user_id)) as turn:   # ConversationService
        turn.turn_id = stored_user_message.id
        ... the pipeline runs; the runner sets CURRENT_STEP around each agent ...
    # each leaf provider is wrapped: LedgerProvider(leaf, writer) records one row per call

The wrapper sits on each leaf (the registry's `wrap`), inside the fallback chain, so every
attempt of a chain is its own row, with `CURRENT_ATTEMPT`'s index; a structured call the leaf
repaired is one row per model call (the first `invalid_output`), from the leaf's own `attempts`.
It needs no tracing: the turn and the step travel in contextvars (a background step's task
copies them when the runner starts it). A call outside a turn (none is made today) is not
recorded. Recording is an append to the writer's memory; pricing and the write happen later, in
the writer's task, off the reply's path.

With an input sink (`bot.replay.ReplayKeeper`, STORE_PROMPTS on), each call that answered also
hands over what the agent sent (the messages, the schema, `max_tokens`, `temperature`) and what
came back, for `/replay`. Calls of the `replay` pipeline itself are not kept.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from pydantic import BaseModel

from bot.llm.errors import LLMError
from bot.llm.fallback import CURRENT_ATTEMPT
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage
from bot.pipeline.observer import CURRENT_STEP, StepInfo
from bot.services.model_levels import AGENT_ROLES
from bot.storage.ledger_models import LedgerCall
from bot.storage.replay_models import ReplayInput

# The outcome of a call whose reply did not validate, answered by a repair turn after it.
INVALID_OUTPUT = "invalid_output"
# The pipeline name of `/replay`'s own calls: in the ledger (real money), never a user's turn,
# and never kept as an input to replay.
REPLAY_PIPELINE = "replay"


@dataclass(slots=True)
class Turn:
    """One user message and everything the bot did for it. `turn_id` is the stored message's
    id, set once it is stored (before any agent runs, or with the reply when the turn's writes
    are one request).

    `held`: while a list, the calls are kept here instead of going to the writer, so they are
    stored with the turn's messages in one request (`bot.storage.turn_models`), with the turn's
    id; the conversation hands them to the writer if that request is not made."""

    pipeline: str
    chat_id: int | None
    user_id: int | None
    turn_id: int | None = None
    held: list[LedgerCall] | None = None


CURRENT_TURN: ContextVar[Turn | None] = ContextVar("CURRENT_TURN", default=None)


@contextlib.contextmanager
def turn_scope(turn: Turn) -> Iterator[Turn]:
    token = CURRENT_TURN.set(turn)
    try:
        yield turn
    finally:
        CURRENT_TURN.reset(token)


class CallSink(Protocol):
    def record(self, call: LedgerCall) -> None: ...


class TurnLedger(CallSink, Protocol):
    """What a turn that stores its own calls needs of the writer (`LedgerWriter`)."""

    def stamp(self, batch: list[LedgerCall]) -> None:
        """Give each call its id and price, as the writer's own batches get them."""
        ...


class CapturedInput(NamedTuple):
    """One answered call as the capture saw it, by reference: the keeper holds the newest few
    per agent and builds the stored row (`to_input`) only for those it writes (building it for
    every call cost ~12 us: tests/bench/replay_capture.py)."""

    wall: float
    latency_ms: float
    turn: Turn
    step: StepInfo
    provider: str
    model: str
    messages: Sequence[ChatMessage]
    schema: type[BaseModel] | None
    temperature: float | None
    max_tokens: int | None
    streamed: bool
    response: LLMResponse

    @property
    def agent(self) -> str:
        return self.step.agent

    def to_input(self) -> ReplayInput:
        turn, step, response, schema = self.turn, self.step, self.response, self.schema
        usage = response.usage
        return ReplayInput(
            at=datetime.fromtimestamp(self.wall, UTC),
            agent=step.agent,
            pipeline=turn.pipeline,
            chat_id=turn.chat_id,
            user_id=turn.user_id,
            turn_id=turn.turn_id,
            preference=step.preference,
            spec=step.model,
            provider=self.provider,
            model=response.served_model or self.model,
            messages=[{"role": m.role, "content": m.content} for m in self.messages],
            schema=f"{schema.__module__}:{schema.__qualname__}" if schema else None,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            streamed=self.streamed,
            output=response.text,
            latency_ms=self.latency_ms,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost,
        )


class InputSink(Protocol):
    def keep_captured(self, call: CapturedInput) -> None: ...


class LedgerProvider:
    """Offers the wrapped leaf's surface; records each call it makes inside a turn."""

    def __init__(self, inner: LLMProvider, sink: CallSink, inputs: InputSink | None = None) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model
        self._sink = sink
        self._inputs = inputs

    @property
    def spec(self) -> str:
        return self.inner.spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"LedgerProvider({self.inner.provider}:{self.inner.model})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        turn = CURRENT_TURN.get()
        if turn is None:
            return await self.inner.complete(
                messages,
                schema=schema,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout=timeout,
            )
        wall, started = time.time(), time.perf_counter()
        try:
            response = await self.inner.complete(
                messages,
                schema=schema,
                temperature=temperature,
                max_tokens=max_tokens,
                timeout=timeout,
            )
        except LLMError as exc:
            self._record(turn, wall, (time.perf_counter() - started) * 1000, type(exc).__name__)
            raise
        calls = self._own_calls(response)
        if len(calls) > 1:
            *earlier, last = calls
            for call in earlier:
                self._record(
                    turn, call.started_at or wall, call.latency_ms, INVALID_OUTPUT, usage=call.usage
                )
            self._record(
                turn,
                last.started_at or wall,
                last.latency_ms,
                "ok",
                usage=last.usage,
                served=response.served_model,
            )
        else:
            self._record(
                turn,
                wall,
                (time.perf_counter() - started) * 1000,
                "ok",
                usage=response.usage,
                served=response.served_model,
            )
        if self._inputs is not None and turn.pipeline != REPLAY_PIPELINE:
            self._keep(
                turn, wall, started, messages, schema, temperature, max_tokens, False, response
            )
        return response

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        turn = CURRENT_TURN.get()
        chunks = self.inner.stream(
            messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
        )
        wall, started = time.time(), time.perf_counter()
        ttft: float | None = None
        try:
            async for chunk in chunks:
                if ttft is None and chunk.delta:
                    ttft = (time.perf_counter() - started) * 1000
                if chunk.response is not None and turn is not None:
                    response = chunk.response
                    self._record(
                        turn,
                        wall,
                        (time.perf_counter() - started) * 1000,
                        "ok",
                        usage=response.usage,
                        served=response.served_model,
                        ttft=ttft,
                    )
                    if self._inputs is not None and turn.pipeline != REPLAY_PIPELINE:
                        self._keep(
                            turn,
                            wall,
                            started,
                            messages,
                            None,
                            temperature,
                            max_tokens,
                            True,
                            response,
                        )
                yield chunk
        except LLMError as exc:
            if turn is not None:
                elapsed = (time.perf_counter() - started) * 1000
                self._record(turn, wall, elapsed, type(exc).__name__, ttft=ttft)
            raise
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()

    async def close(self) -> None:
        await self.inner.close()

    def _own_calls(self, response: LLMResponse) -> list[Attempt]:
        calls = response.attempts
        if all(a.provider == self.provider and a.model == self.model for a in calls):
            return calls
        return []

    def _keep(
        self,
        turn: Turn,
        wall: float,
        started: float,
        messages: Sequence[ChatMessage],
        schema: type[BaseModel] | None,
        temperature: float | None,
        max_tokens: int | None,
        streamed: bool,
        response: LLMResponse,
    ) -> None:
        step = CURRENT_STEP.get()
        if step is None or self._inputs is None:
            return
        # References only: the row is built when (and if) the keeper writes it.
        self._inputs.keep_captured(
            CapturedInput(
                wall,
                (time.perf_counter() - started) * 1000,
                turn,
                step,
                self.provider,
                self.model,
                messages,
                schema,
                temperature,
                max_tokens,
                streamed,
                response,
            )
        )

    def _record(
        self,
        turn: Turn,
        wall: float,
        latency_ms: float,
        outcome: str,
        *,
        usage: Usage | None = None,
        served: str | None = None,
        ttft: float | None = None,
    ) -> None:
        step = CURRENT_STEP.get()
        attempt = CURRENT_ATTEMPT.get()
        index = attempt.index if attempt is not None else 0
        agent = step.agent if step is not None else "(none)"
        cost = usage.cost if usage is not None else None
        call = LedgerCall(
            at=datetime.fromtimestamp(wall, UTC),
            turn_id=turn.turn_id,
            chat_id=turn.chat_id,
            user_id=turn.user_id,
            pipeline=turn.pipeline,
            agent=agent,
            role=AGENT_ROLES.get(agent),
            level=step.source if step is not None else None,
            spec=step.model if step is not None else self.inner.spec,
            model=served or self.model,
            provider=self.provider,
            attempt=index,
            fallback=index > 0,
            outcome=outcome,
            latency_ms=latency_ms,
            ttft_ms=ttft,
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            completion_tokens=usage.completion_tokens if usage is not None else 0,
            cost_usd=cost,
            cost_source="provider" if cost is not None else "unpriced",
            config_version=step.config_version if step is not None else None,
            trial_id=step.trial_id if step is not None else None,
            trial_arm=step.trial_arm if step is not None else None,
        )
        if turn.held is not None:
            turn.held.append(call)
        else:
            self._sink.record(call)
