"""The Anthropic messages adapter, on the `anthropic` SDK (`anthropic:` specs).

The only module that imports `anthropic`. What differs from the OpenAI format:

- system messages go to the `system=` parameter (all of them, joined), never into `messages`;
- `messages` must alternate user/assistant and start with a user turn: consecutive messages of
  one role are merged, and a conversation that opens with the assistant gets a short user turn
  in front;
- `max_tokens` is required (`DEFAULT_MAX_TOKENS` when the caller gives none);
- `messages.create` in anthropic 2.x takes no `temperature` or `top_p` (checked in the installed
  SDK's source), so `temperature` is accepted for the common surface and ignored here;
- structured output is instructions plus tolerant parsing (`native=False`), with one repair turn;
- the SDK's own OpenTelemetry spans are off (`open_telemetry=False`): tracing wraps providers,
  and a second span per call would double every generation in Langfuse.

Errors are mapped at one boundary, `_map_error`, the same way as the OpenAI adapter (see
`bot.llm.errors`); an `error` event in the middle of a stream, or a stream that ends without its
`message_stop` event (cut off mid-answer), is a `MalformedResponse`. The SDK hands on transport
errors raised while a stream is read as they are (httpx2's), so those are mapped here too: a
read timeout is a `ProviderTimeout`, a dropped or reset connection a `ProviderConnectionError`.
Retries
follow the same deliberate policy (see `bot.llm.openai_compat`): `max_retries` quick retries on
the same model, never a long `Retry-After` sleep (anthropic 2.x would otherwise wait for any
`Retry-After` the server names, without a cap).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import httpx2
from anthropic import (
    AnthropicError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncAnthropic,
    omit,
)
from anthropic.types import Message, MessageParam
from pydantic import BaseModel

from bot.llm.errors import (
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
    is_retryable_status,
)
from bot.llm.fallback import single_attempt
from bot.llm.http_transport import cached_url, make_sdk_http_client
from bot.llm.structured import complete_structured
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicProvider", "make_anthropic_client", "to_anthropic"]

DEFAULT_MAX_TOKENS = 4096
# Same reasoning and value as bot.llm.openai_compat.MAX_SAME_MODEL_WAIT.
MAX_SAME_MODEL_WAIT = 5.0
_MESSAGE_LIMIT = 300
_OPENING_TURN = "(The conversation so far follows.)"
_EMPTY_TURN = "Begin."
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class _Client(AsyncAnthropic):
    """AsyncAnthropic that will not sleep long on the same model."""

    def _should_retry(self, response: httpx2.Response) -> bool:
        wait = self._parse_retry_after_header(response.headers)
        if wait is not None and wait > MAX_SAME_MODEL_WAIT:
            return False
        return super()._should_retry(response)

    @property
    def user_agent(self) -> str:
        # The SDK names itself after its class; this subclass is still the Anthropic SDK.
        return f"AsyncAnthropic/Python {self._version}"

    def platform_headers(self) -> dict[str, str]:
        # The SDK's X-Stainless-* telemetry (OS, CPU, runtime and package versions): no provider
        # needs it (see `bot.llm.openai_compat._Client.platform_headers`).
        return {}

    def _prepare_url(self, url: str) -> httpx2.URL:
        # The same path resolved against the same base URL on every request (see `cached_url`).
        return cached_url(self, url, super()._prepare_url)


def make_anthropic_client(
    *, base_url: str, api_key: str, timeout: float, max_retries: int
) -> AsyncAnthropic:
    """One SDK client per (key, base URL), shared between models by the registry."""
    return _Client(
        api_key=api_key,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        open_telemetry=False,
        http_client=make_sdk_http_client(),
    )


def to_anthropic(messages: Sequence[ChatMessage]) -> tuple[str | None, list[MessageParam]]:
    """(system, messages) in the shape the Messages API accepts (see the module docstring)."""
    system_parts = [m.content for m in messages if m.role == "system"]
    turns: list[dict[str, str]] = []
    for message in messages:
        if message.role == "system":
            continue
        if turns and turns[-1]["role"] == message.role:
            turns[-1]["content"] = f"{turns[-1]['content']}\n\n{message.content}"
        else:
            turns.append({"role": message.role, "content": message.content})
    if not turns:
        turns.append({"role": "user", "content": _EMPTY_TURN})
    elif turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": _OPENING_TURN})
    system = "\n\n".join(system_parts) if system_parts else None
    return system, [cast(MessageParam, turn) for turn in turns]


class AnthropicProvider:
    """A Claude model through the Messages API. The registry owns and closes the shared client."""

    provider = "anthropic"

    def __init__(
        self,
        *,
        model: str,
        client: AsyncAnthropic,
        timeout: float = 60.0,
        max_retries: int = 0,
        owns_client: bool = False,
    ) -> None:
        self.model = model
        self._client = client
        self._timeout = timeout
        self._max_retries = max_retries
        self._owns_client = owns_client

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"AnthropicProvider({self.spec!r})"

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        if schema is None:
            return await self._complete(messages, max_tokens, timeout)

        async def call(msgs: Sequence[ChatMessage]) -> LLMResponse:
            return await self._complete(msgs, max_tokens, timeout)

        return await complete_structured(call, messages, schema, native=False, spec=self.spec)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        started, wall = time.perf_counter(), time.time()
        per_attempt = timeout or self._timeout
        deadline = asyncio.get_running_loop().time() + self._deadline(per_attempt)
        system, turns = to_anthropic(messages)
        parts: list[str] = []
        prompt_tokens = completion_tokens = 0
        finish: str | None = None
        saw_start = saw_stop = False
        sdk_stream = None
        try:
            async with asyncio.timeout_at(deadline):
                sdk_stream = await self._sdk().messages.create(
                    model=self.model,
                    messages=turns,
                    system=system if system is not None else omit,
                    max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                    stream=True,
                    timeout=per_attempt,
                )
            while True:
                try:
                    if parts:
                        event = await sdk_stream.__anext__()
                    else:
                        async with asyncio.timeout_at(deadline):
                            event = await sdk_stream.__anext__()
                except StopAsyncIteration:
                    break
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    saw_start = True
                    usage = event.message.usage  # type: ignore[union-attr]
                    prompt_tokens = _prompt_tokens(usage)
                    completion_tokens = int(usage.output_tokens or 0)
                elif kind == "content_block_delta":
                    delta = event.delta  # type: ignore[union-attr]
                    is_text = getattr(delta, "type", None) == "text_delta"
                    text = getattr(delta, "text", None) if is_text else None
                    if text:
                        parts.append(text)
                        yield StreamChunk(delta=text)
                elif kind == "message_delta":
                    finish = _finish(event.delta.stop_reason)  # type: ignore[union-attr]
                    out = event.usage  # type: ignore[union-attr]
                    completion_tokens = int(out.output_tokens or completion_tokens)
                    if out.input_tokens is not None:
                        prompt_tokens = _prompt_tokens(out)
                elif kind == "message_stop":
                    saw_stop = True
        except TimeoutError:
            raise ProviderTimeout(
                f"no reply within {self._deadline(per_attempt):g}s",
                provider=self.provider,
                model=self.model,
            ) from None
        except AnthropicError as exc:
            raise self._map_error(exc) from exc
        except httpx2.TimeoutException as exc:
            raise ProviderTimeout(
                "stream read timed out", provider=self.provider, model=self.model
            ) from exc
        except httpx2.TransportError as exc:
            raise ProviderConnectionError(
                f"connection failed mid-stream: {type(exc).__name__}",
                provider=self.provider,
                model=self.model,
            ) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            raise MalformedResponse(
                f"unreadable stream: {type(exc).__name__}", provider=self.provider, model=self.model
            ) from exc
        finally:
            if sdk_stream is not None:
                await sdk_stream.close()
        if not saw_start:
            raise MalformedResponse(
                "the stream ended without a message_start event",
                provider=self.provider,
                model=self.model,
            )
        if not saw_stop:
            # The body ended before the answer did: what was streamed is a fragment. The text
            # already shown stays shown; the fallback wrapper raises this rather than switching.
            raise MalformedResponse(
                f"the stream ended before the answer finished (no message_stop after "
                f"{len(parts)} text chunks)",
                provider=self.provider,
                model=self.model,
            )
        usage_out = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        yield StreamChunk(
            response=self._response("".join(parts), usage_out, finish, started, wall, raw=None)
        )

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    # --- internals ---

    def _sdk(self) -> AsyncAnthropic:
        if single_attempt():
            # A last resort of a failing chain: one attempt, no back-off (`bot.llm.fallback`).
            return self._client.with_options(max_retries=0)
        return self._client

    def _deadline(self, per_attempt: float) -> float:
        retries = self._max_retries
        return per_attempt * (retries + 1) + MAX_SAME_MODEL_WAIT * retries

    async def _complete(
        self, messages: Sequence[ChatMessage], max_tokens: int | None, timeout: float | None
    ) -> LLMResponse:
        started, wall = time.perf_counter(), time.time()
        per_attempt = timeout or self._timeout
        system, turns = to_anthropic(messages)
        try:
            async with asyncio.timeout(self._deadline(per_attempt)):
                message = await self._sdk().messages.create(
                    model=self.model,
                    messages=turns,
                    system=system if system is not None else omit,
                    max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
                    timeout=per_attempt,
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"no reply within {self._deadline(per_attempt):g}s",
                provider=self.provider,
                model=self.model,
            ) from None
        except AnthropicError as exc:
            raise self._map_error(exc) from exc
        except ValueError as exc:
            raise MalformedResponse(
                "response body is not valid JSON", provider=self.provider, model=self.model
            ) from exc
        return self._normalize(message, started, wall)

    def _normalize(self, message: object, started: float, wall: float) -> LLMResponse:
        try:
            assert isinstance(message, Message)
            text = "".join(
                str(getattr(block, "text", "")) for block in message.content if block.type == "text"
            )
            usage = Usage(
                prompt_tokens=_prompt_tokens(message.usage),
                completion_tokens=int(message.usage.output_tokens or 0),
            )
            finish = _finish(message.stop_reason)
            raw = message.model_dump(mode="json", exclude_none=True)
        except (AssertionError, AttributeError, TypeError, ValueError) as exc:
            raise MalformedResponse(
                f"response is not a message ({type(exc).__name__})",
                provider=self.provider,
                model=self.model,
            ) from exc
        response = self._response(text, usage, finish, started, wall, raw=raw)
        served = raw.get("model")
        response.served_model = served if isinstance(served, str) and served else None
        return response

    def _response(
        self,
        text: str,
        usage: Usage,
        finish: str | None,
        started: float,
        wall: float,
        *,
        raw: dict[str, Any] | None,
    ) -> LLMResponse:
        latency_ms = (time.perf_counter() - started) * 1000
        return LLMResponse(
            text=text,
            model=self.model,
            provider=self.provider,
            usage=usage,
            latency_ms=latency_ms,
            finish_reason=finish,
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
            raw=raw,
        )

    def _map_error(self, exc: AnthropicError) -> ProviderError:
        where: dict[str, Any] = {"provider": self.provider, "model": self.model}
        if isinstance(exc, APITimeoutError):
            return ProviderTimeout("request timed out", **where)
        if isinstance(exc, APIConnectionError):
            cause = type(exc.__cause__).__name__ if exc.__cause__ else "unknown"
            return ProviderConnectionError(f"connection failed: {cause}", **where)
        if isinstance(exc, APIStatusError):
            status = exc.status_code
            if _is_html(exc.response, exc.body):
                return MalformedResponse(
                    "returned an HTML error page instead of JSON", status=status, **where
                )
            message = _api_message(exc)
            if status < 400:
                # An `error` event inside a 200 event stream (e.g. overloaded_error mid-answer).
                return MalformedResponse(f"error in the response stream: {message}", **where)
            if status == 429:
                return RateLimited(
                    f"rate limited: {message}",
                    retry_after=_retry_after(exc.response.headers),
                    status=status,
                    **where,
                )
            if is_retryable_status(status):
                return ProviderServerError(f"server error: {message}", status=status, **where)
            return RequestRejected(f"request rejected: {message}", status=status, **where)
        if isinstance(exc, APIError):
            return MalformedResponse(f"unexpected response: {_api_message(exc)}", **where)
        return MalformedResponse(f"{type(exc).__name__}: {str(exc)[:_MESSAGE_LIMIT]}", **where)


def _prompt_tokens(usage: Any) -> int:
    # Cached prompt tokens are reported apart from `input_tokens`; all of them were read.
    return (
        int(getattr(usage, "input_tokens", 0) or 0)
        + int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + int(getattr(usage, "cache_read_input_tokens", 0) or 0)
    )


def _finish(stop_reason: str | None) -> str | None:
    if stop_reason is None:
        return None
    return _STOP_REASONS.get(stop_reason, stop_reason)


def _is_html(response: httpx2.Response, body: object) -> bool:
    if "text/html" in response.headers.get("content-type", ""):
        return True
    return isinstance(body, str) and body.lstrip()[:100].lower().startswith(
        ("<!doctype html", "<html")
    )


def _api_message(exc: APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            kind = inner.get("type")
            text = str(inner["message"])
            return (f"{kind}: {text}" if kind else text)[:_MESSAGE_LIMIT]
    return str(exc.message)[:_MESSAGE_LIMIT]


def _retry_after(headers: httpx2.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None
