"""The OpenAI chat-completions adapter, on the `openai` SDK.

`openrouter:`, `openai:`, `groq:`, `xai:` and `vllm:` specs all speak this one wire format; only
the key, the base URL and a few headers differ.

With `bot.llm.openai_wire` (a request's lean path, which raises the SDK's own exceptions), the
only module that imports `openai`. SDK exceptions become `bot.llm.errors` in `_map_error`,
the one boundary:

    APITimeoutError / our overall deadline  -> ProviderTimeout
    APIConnectionError (refused, reset)     -> ProviderConnectionError
    429                                     -> RateLimited(retry_after=Retry-After)
    408, 409, 5xx                           -> ProviderServerError
    HTML page instead of JSON (any status)  -> MalformedResponse
    other 4xx                               -> RequestRejected (never retried elsewhere)
    broken JSON, missing choices,
    an error object in the middle of a stream,
    a stream that ends before a choice's
      `finish_reason` (cut off mid-answer)  -> MalformedResponse

Structured output, the way pydantic-ai's `NativeOutput` / `PromptedOutput` split it: a schema
goes out as a JSON-schema `response_format` (the endpoint enforces it). Not every model or
endpoint behind these specs offers that (older or small models, some vLLM and OpenRouter routes):
when one answers 400/422 naming `response_format`, `json_schema` or structured outputs, the same
call is retried once with the schema as instructions plus tolerant parsing, and the model is
remembered for the rest of the process (per base URL and model), so later calls ask the right way
at once. Any other 400 is the caller's mistake and is raised as it is. A model that accepts
`response_format` but ignores it is caught by the repair turn, which restates the schema
(`bot.llm.structured`).

Retries, decided deliberately: the SDK retries the *same* model `settings.llm_max_retries` times
(default 1) with its short backoff, which absorbs a dropped connection or a single 502 without
switching models. Anything longer is the fallback chain's job, so a 429 whose `Retry-After`
exceeds `MAX_SAME_MODEL_WAIT` seconds is not retried here (the SDK would sleep up to two
minutes): it fails at once with `RateLimited` and the next model answers. `timeout` applies to
each HTTP attempt (connect and every read), and an overall deadline of
`timeout * (retries + 1) + MAX_SAME_MODEL_WAIT * retries` bounds a whole call, including a stream
that only ever sends keep-alive comments before its first token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import httpx2
from openai import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenAI,
    AsyncStream,
    OpenAIError,
    omit,
)
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
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
from bot.llm.http_transport import AiohttpTransport, cached_url, make_sdk_http_client
from bot.llm.openai_wire import Redirected, open_stream, post_json
from bot.llm.structured import complete_structured, response_format_for
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage

__all__ = ["MAX_SAME_MODEL_WAIT", "OpenAICompatibleProvider", "make_openai_client"]

log = logging.getLogger(__name__)

# Longest Retry-After (seconds) worth waiting for on the same model before falling back.
MAX_SAME_MODEL_WAIT = 5.0
# The SDK insists on a key; a keyless vLLM server ignores whatever we send.
_NO_KEY = "not-needed"
_MESSAGE_LIMIT = 300
# What an endpoint says when it cannot do JSON-schema output (OpenAI names the parameter in
# `param`, vLLM and OpenRouter in the message).
_RESPONSE_FORMAT_WORDS = re.compile(
    r"response[_ ]format|json[_ ]schema|json[_ ]mode|structured[_ ]outputs?", re.IGNORECASE
)
_RESPONSE_FORMAT_STATUSES = frozenset({400, 422})
# (base URL, model) pairs that rejected `response_format`, oldest first; bounded so that a stream
# of made-up model names cannot grow it without end.
_PROMPTED_ONLY: dict[tuple[str, str], None] = {}
_PROMPTED_ONLY_LIMIT = 1024
# Per-request telemetry headers the SDK adds unless a request's own headers name them.
_SDK_TELEMETRY: dict[str, Any] = {
    "X-Stainless-Retry-Count": omit,
    "X-Stainless-Read-Timeout": omit,
}


def _request_options(per_attempt: float) -> Any:
    """The SDK's per-request options (its `RequestOptions` type lives in a private module)."""
    options: dict[str, Any] = {"timeout": per_attempt, "headers": _SDK_TELEMETRY}
    if single_attempt():
        options["max_retries"] = 0  # a last resort of a failing chain: no back-off (fallback.py)
    return options


class _Client(AsyncOpenAI):
    """AsyncOpenAI that will not sleep long on the same model (see the module docstring).

    `wire`: the aiohttp transport under its httpx2 client, on which a completion's POST goes
    straight (`bot.llm.openai_wire`); None sends everything through the SDK."""

    wire: AiohttpTransport | None = None

    def _should_retry(self, response: httpx2.Response) -> bool:
        wait = self._parse_retry_after_header(response.headers)
        if wait is not None and wait > MAX_SAME_MODEL_WAIT:
            return False
        return super()._should_retry(response)

    @property
    def user_agent(self) -> str:
        # The SDK names itself after its class; this subclass is still the OpenAI SDK.
        return f"AsyncOpenAI/Python {self._version}"

    def platform_headers(self) -> dict[str, str]:
        # The SDK's X-Stainless-* telemetry (OS, CPU, runtime and package versions). No provider
        # needs it, and every header is normalised several times over per request by the SDK and
        # httpx2: with the two per-request ones (`_SDK_TELEMETRY`) it was ~8 % of a call's CPU.
        return {}

    def _prepare_url(self, url: str) -> httpx2.URL:
        # The SDK parses "/chat/completions" and joins it to the base URL on every request (~5 %
        # of a call's CPU); the answer only changes with the base URL, and httpx2.URL is immutable.
        return cached_url(self, url, super()._prepare_url)


def make_openai_client(
    *,
    provider: str,
    base_url: str,
    api_key: str | None,
    timeout: float,
    max_retries: int,
    app_url: str | None = None,
    app_title: str | None = None,
) -> AsyncOpenAI:
    """One SDK client per (provider, key, base URL); the registry shares it between models.

    OpenRouter gets its attribution headers (`HTTP-Referer`, `X-Title`) on every request.
    """
    headers: dict[str, str] = {}
    if provider == "openrouter":
        if app_url:
            headers["HTTP-Referer"] = app_url
        if app_title:
            headers["X-Title"] = app_title
    transport = AiohttpTransport()
    client = _Client(
        api_key=api_key or _NO_KEY,
        base_url=base_url,
        timeout=timeout,
        max_retries=max_retries,
        default_headers=headers or None,
        http_client=make_sdk_http_client(transport),
    )
    client.wire = transport
    return client


class OpenAICompatibleProvider:
    """A model behind an OpenAI-compatible chat-completions endpoint.

    The client is shared (the registry owns and closes it) unless `owns_client=True`.
    """

    def __init__(
        self,
        *,
        provider: str,
        model: str,
        client: AsyncOpenAI,
        timeout: float = 60.0,
        max_retries: int = 0,
        owns_client: bool = False,
    ) -> None:
        self.provider = provider
        self.model = model
        self._client = client
        self._timeout = timeout
        self._max_retries = max_retries
        self._owns_client = owns_client
        # OpenRouter only reports `usage.cost` when asked for it.
        self._extra_body: dict[str, Any] | None = (
            {"usage": {"include": True}} if provider == "openrouter" else None
        )

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider({self.spec!r})"

    # --- public surface ---

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
            return await self._complete(messages, temperature, max_tokens, timeout, None)

        async def prompted(msgs: Sequence[ChatMessage]) -> LLMResponse:
            return await self._complete(msgs, temperature, max_tokens, timeout, None)

        if self._format_key() not in _PROMPTED_ONLY:
            response_format = response_format_for(schema)

            async def native(msgs: Sequence[ChatMessage]) -> LLMResponse:
                return await self._complete(msgs, temperature, max_tokens, timeout, response_format)

            try:
                return await complete_structured(
                    native, messages, schema, native=True, spec=self.spec
                )
            except RequestRejected as exc:
                if not _rejects_response_format(exc):
                    raise
                self._remember_prompted_only(exc)
        return await complete_structured(prompted, messages, schema, native=False, spec=self.spec)

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
        loop = asyncio.get_running_loop()
        # Until the first token arrives the overall deadline applies; after it, the SDK's read
        # timeout catches a stalled stream (a long answer may legitimately take a while).
        first_token_deadline = loop.time() + self._deadline(per_attempt)
        parts: list[str] = []
        usage = Usage()
        finish: str | None = None
        received_any = False
        served: object = None
        sdk_stream = None
        try:
            async with asyncio.timeout_at(first_token_deadline):
                sdk_stream = await self._post_chat(
                    self._body(messages, temperature, max_tokens, None, stream=True),
                    per_attempt,
                    stream=True,
                )
            while True:
                try:
                    if parts:
                        chunk = await sdk_stream.__anext__()
                    else:
                        async with asyncio.timeout_at(first_token_deadline):
                            chunk = await sdk_stream.__anext__()
                except StopAsyncIteration:
                    break
                received_any = True
                # Chunks stay plain JSON objects: building a `ChatCompletionChunk` model per token
                # cost ~0.4 ms of CPU each (9 ms for a short reply) in the load benchmark.
                if not isinstance(chunk, dict):
                    raise MalformedResponse(
                        "stream sent something that is not a chat completion chunk",
                        provider=self.provider,
                        model=self.model,
                    )
                if served is None:
                    served = chunk.get("model")
                if chunk.get("usage") is not None:
                    usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or ():
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        parts.append(delta)
                        yield StreamChunk(delta=delta)
        except TimeoutError:
            raise ProviderTimeout(
                f"no reply within {self._deadline(per_attempt):g}s",
                provider=self.provider,
                model=self.model,
            ) from None
        except OpenAIError as exc:
            raise self._map_error(exc) from exc
        except httpx2.TimeoutException as exc:  # the SDK maps these; kept in case it does not
            raise ProviderTimeout("stream read timed out", **self._where()) from exc
        except httpx2.TransportError as exc:
            raise ProviderConnectionError(
                f"connection failed mid-stream: {type(exc).__name__}", **self._where()
            ) from exc
        except (ValueError, AttributeError, TypeError) as exc:
            raise MalformedResponse(
                f"unreadable stream: {type(exc).__name__}", provider=self.provider, model=self.model
            ) from exc
        finally:
            if sdk_stream is not None:
                await sdk_stream.close()
        if not received_any:
            # A 200 that is not an event stream (a JSON body, a proxy page) yields no events.
            raise MalformedResponse(
                "the stream ended without a single chunk", provider=self.provider, model=self.model
            )
        if finish is None:
            # The body ended (a proxy or the provider closed it) before the answer did: what was
            # streamed is a fragment, not a reply. The text already shown stays shown; the
            # fallback wrapper does not switch models after that, it raises this.
            raise MalformedResponse(
                f"the stream ended before the answer finished (no finish_reason after "
                f"{len(parts)} text chunks)",
                **self._where(),
            )
        if finish == "error":
            # OpenRouter's normalized finish reason for a generation that failed upstream.
            raise MalformedResponse("the answer ended with finish_reason 'error'", **self._where())
        response = self._response("".join(parts), usage, finish, started, wall, raw=None)
        response.served_model = served if isinstance(served, str) and served else None
        yield StreamChunk(response=response)

    async def close(self) -> None:
        if self._owns_client:
            await self._client.close()

    # --- internals ---

    def _body(
        self,
        messages: Sequence[ChatMessage],
        temperature: float | None,
        max_tokens: int | None,
        response_format: dict[str, Any] | None,
        *,
        stream: bool,
    ) -> dict[str, Any]:
        """The request body, exactly as `chat.completions.create` would send it."""
        body: dict[str, Any] = {"model": self.model, "messages": _to_openai(messages)}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if temperature is not None:
            body["temperature"] = temperature
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if response_format:
            body["response_format"] = response_format
        if self._extra_body:
            body.update(self._extra_body)
        return body

    async def _post_chat(self, body: dict[str, Any], per_attempt: float, *, stream: bool) -> Any:
        """`POST /chat/completions`: straight on the client's aiohttp session, the SDK's parts
        kept (`bot.llm.openai_wire`), or else through the SDK's client (its retries, errors,
        parsing), without `chat.completions.create`'s request transform.

        The transform walks every message against the SDK's TypedDict unions: ~0.3 ms of CPU per
        message dict, 4-5 ms for a reply with its history, and a no-op for our bodies (plain
        role/content strings, no aliased fields). The load benchmark measured it as the largest
        single CPU cost per user message.
        """
        wire = getattr(self._client, "wire", None)
        if wire is not None:
            retries = 0 if single_attempt() else self._client.max_retries
            send = open_stream if stream else post_json
            with contextlib.suppress(Redirected):  # the SDK's client follows it
                return await send(
                    self._client, wire, body, timeout=per_attempt, max_retries=retries
                )
        if stream:
            return await self._client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body=body,
                options=_request_options(per_attempt),
                stream=True,
                stream_cls=AsyncStream[object],
            )
        # `cast_to=object`: the SDK hands back the JSON as is. Building its `ChatCompletion`
        # model costs ~75 us per reply (a tenth of the call's CPU) for fields we then read once.
        return await self._client.post(
            "/chat/completions",
            cast_to=object,
            body=body,
            options=_request_options(per_attempt),
        )

    def _format_key(self) -> tuple[str, str]:
        return (str(self._client.base_url), self.model)

    def _remember_prompted_only(self, exc: RequestRejected) -> None:
        key = self._format_key()
        if len(_PROMPTED_ONLY) >= _PROMPTED_ONLY_LIMIT:
            del _PROMPTED_ONLY[next(iter(_PROMPTED_ONLY))]
        _PROMPTED_ONLY[key] = None
        log.warning(
            "%s rejected the JSON-schema response_format (%s); structured output for this model "
            "uses instructions from now on",
            self.spec,
            exc,
        )

    def _where(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model}

    def _deadline(self, per_attempt: float) -> float:
        retries = self._max_retries
        return per_attempt * (retries + 1) + MAX_SAME_MODEL_WAIT * retries

    async def _complete(
        self,
        messages: Sequence[ChatMessage],
        temperature: float | None,
        max_tokens: int | None,
        timeout: float | None,
        response_format: dict[str, Any] | None,
    ) -> LLMResponse:
        started, wall = time.perf_counter(), time.time()
        per_attempt = timeout or self._timeout
        try:
            async with asyncio.timeout(self._deadline(per_attempt)):
                completion = await self._post_chat(
                    self._body(messages, temperature, max_tokens, response_format, stream=False),
                    per_attempt,
                    stream=False,
                )
        except TimeoutError:
            raise ProviderTimeout(
                f"no reply within {self._deadline(per_attempt):g}s",
                provider=self.provider,
                model=self.model,
            ) from None
        except OpenAIError as exc:
            raise self._map_error(exc) from exc
        except ValueError as exc:  # a 200 whose JSON body does not parse
            raise MalformedResponse(
                "response body is not valid JSON", provider=self.provider, model=self.model
            ) from exc
        return self._normalize(completion, started, wall)

    def _normalize(self, completion: object, started: float, wall: float) -> LLMResponse:
        if isinstance(completion, str):
            what = "an HTML page" if _looks_like_html(completion) else "non-JSON text"
            raise MalformedResponse(
                f"returned {what} instead of a chat completion",
                provider=self.provider,
                model=self.model,
            )
        try:
            if not isinstance(completion, dict):
                raise TypeError(type(completion).__name__)
            choice = completion["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not text")
            usage = _usage(completion["usage"]) if completion.get("usage") else Usage()
            finish = choice.get("finish_reason")
            raw = completion
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(
                f"response is not a chat completion ({type(exc).__name__})",
                provider=self.provider,
                model=self.model,
            ) from exc
        response = self._response(text, usage, finish, started, wall, raw=raw)
        served = completion.get("model")
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

    def _map_error(self, exc: OpenAIError) -> ProviderError:
        where: dict[str, Any] = {"provider": self.provider, "model": self.model}
        if isinstance(exc, APITimeoutError):
            return ProviderTimeout("request timed out", **where)
        if isinstance(exc, APIConnectionError):
            return ProviderConnectionError(f"connection failed: {_cause(exc)}", **where)
        if isinstance(exc, APIStatusError):
            status = exc.status_code
            if _is_html(exc.response):
                return MalformedResponse(
                    "returned an HTML error page instead of JSON", status=status, **where
                )
            message = _api_message(exc)
            if status == 429:
                return RateLimited(
                    f"rate limited: {message}",
                    retry_after=_retry_after(exc.response.headers),
                    status=status,
                    **where,
                )
            if is_retryable_status(status):
                return ProviderServerError(f"server error: {message}", status=status, **where)
            if 400 <= status < 500:
                return RequestRejected(f"request rejected: {message}", status=status, **where)
            return MalformedResponse(f"unexpected response: {message}", status=status, **where)
        if isinstance(exc, APIError):
            # An error object inside a 200 stream (OpenRouter: `data: {"error": {...}}`).
            return MalformedResponse(f"error in the response stream: {_api_message(exc)}", **where)
        return MalformedResponse(f"{type(exc).__name__}: {str(exc)[:_MESSAGE_LIMIT]}", **where)


def _rejects_response_format(exc: RequestRejected) -> bool:
    """Whether a rejection is about `response_format` rather than the rest of the request."""
    if exc.status not in _RESPONSE_FORMAT_STATUSES:
        return False
    cause = exc.__cause__
    body = cause.body if isinstance(cause, APIStatusError) else None
    text = f"{exc} {json.dumps(body, default=str) if body is not None else ''}"
    return _RESPONSE_FORMAT_WORDS.search(text) is not None


def _to_openai(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [
        cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content}) for m in messages
    ]


def _usage(raw: Any) -> Usage:
    """Usage from the SDK's model (complete) or the plain JSON object (stream chunks)."""
    if isinstance(raw, dict):
        fields = raw
        cost = raw.get("cost")
    else:
        fields = {
            "prompt_tokens": getattr(raw, "prompt_tokens", 0),
            "completion_tokens": getattr(raw, "completion_tokens", 0),
        }
        cost = (getattr(raw, "model_extra", None) or {}).get("cost")
    return Usage(
        prompt_tokens=int(fields.get("prompt_tokens") or 0),
        completion_tokens=int(fields.get("completion_tokens") or 0),
        cost=float(cost) if isinstance(cost, int | float) else None,
    )


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:100].lower()
    return head.startswith(("<!doctype html", "<html"))


def _is_html(response: httpx2.Response) -> bool:
    if "text/html" in response.headers.get("content-type", ""):
        return True
    try:
        return _looks_like_html(response.text)
    except Exception:
        return False


def _api_message(exc: APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:_MESSAGE_LIMIT]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:_MESSAGE_LIMIT]
        return json.dumps(body)[:_MESSAGE_LIMIT]
    return str(exc.message)[:_MESSAGE_LIMIT]


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(cause).__name__ if cause is not None else "unknown"


def _retry_after(headers: httpx2.Headers) -> float | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return float(value) * scale
            except ValueError:
                continue
    return None
