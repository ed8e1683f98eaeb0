"""A chat completion's POST sent straight on the SDK client's aiohttp session.

    answer = await post_json(client, transport, body, timeout=30.0, max_retries=1)
    events = await open_stream(client, transport, body, timeout=30.0, max_retries=1)

Why: through the openai SDK a request passes `FinalRequestOptions` (a pydantic model, copied per
attempt), the SDK's header merge and request build, httpx2's `Request`, `Headers` (each value
normalised again and again) and client send, then the SDK's response processing. Profiled
(`python -m tests.bench.client_calls`, cProfile by CPU time), those layers were ~70 % of a
completion's CPU and the HTTP exchange itself (aiohttp) ~20 %; a production message makes ~3.5
completions and one stream (decision 0024).

What the SDK would do is kept, by using its own parts: the headers are the client's own
(`default_headers` and `auth_headers`, worked out once per client and key, minus the per-request
telemetry the bot omits anyway), the URL its `_prepare_url`, the body its JSON encoding, a
stream's events its SSE decoder. An error status becomes the SDK's own exception
(`_make_status_error_from_response`) unless its `_should_retry` (with the bot's override) says
to try again, after its back-off; a timeout or a transport error becomes `APITimeoutError` /
`APIConnectionError`, retried the same way; an error object inside a stream becomes `APIError`,
as in `openai._streaming.AsyncStream`; a redirect is left to the SDK's client, which follows it.
Retries count as the SDK counts them (`max_retries`; none in a fallback chain's last resort).
`tests/llm/test_openai_wire.py` sends each case both ways and compares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import httpx2
from openai import APIConnectionError, APIError, APITimeoutError, AsyncOpenAI

from bot.llm.http_transport import AiohttpTransport

__all__ = ["EventStream", "Redirected", "open_stream", "post_json"]

log = logging.getLogger(__name__)

CHAT_PATH = "/chat/completions"
# The SDK's back-off (openai._constants): the first retry after ~0.5 s, doubling, at most 8 s;
# a server's Retry-After is honoured up to two minutes (120 s; ours stops at MAX_SAME_MODEL_WAIT
# before that, in `_Client._should_retry`).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0
# Headers the SDK adds per request that the bot omits (`openai_compat._SDK_TELEMETRY`).
_OMITTED = frozenset({"x-stainless-retry-count", "x-stainless-read-timeout"})


class Redirected(Exception):
    """The server answered with a redirect: the caller sends the request through the SDK."""


def request_headers(client: AsyncOpenAI) -> dict[str, str]:
    """What the SDK sends on every request of `client`: its defaults, then the key."""
    cached: tuple[str, dict[str, str]] | None = client.__dict__.get("_bot_wire_headers")
    if cached is not None and cached[0] == client.api_key:
        return cached[1]
    merged: dict[str, Any] = {**client.auth_headers, **client.default_headers}
    headers = {
        name: value
        for name, value in merged.items()
        if isinstance(value, str) and name.lower() not in _OMITTED
    }
    client.__dict__["_bot_wire_headers"] = (client.api_key, headers)
    return headers


def dumps(body: Any) -> bytes:
    """The body as the SDK encodes it (openai._utils._json.openapi_dumps, for plain data)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def post_json(
    client: AsyncOpenAI,
    transport: AiohttpTransport,
    body: dict[str, Any],
    *,
    timeout: float,
    max_retries: int,
) -> object:
    """POST `body` to the chat completions path; the answer's JSON (or its text, when it is
    not JSON, as the SDK hands it back). Raises what the SDK would raise; `Redirected` for a
    3xx."""
    response = await _open(client, transport, body, timeout, max_retries)
    content = await transport.read_body(response)
    return _parse(response.headers.get("content-type", ""), content)


async def open_stream(
    client: AsyncOpenAI,
    transport: AiohttpTransport,
    body: dict[str, Any],
    *,
    timeout: float,
    max_retries: int,
) -> EventStream:
    """POST a streamed `body`; its events, as the SDK's `AsyncStream[object]` yields them."""
    response = await _open(client, transport, body, timeout, max_retries)
    return EventStream(client, transport, response)


class EventStream:
    """The JSON of each server-sent event of a chat completion stream, read by the SDK's own
    decoder, with its handling of `[DONE]` and of an error object inside the stream
    (`openai._streaming.AsyncStream`); `close` hangs up on a stream left before its end."""

    def __init__(
        self, client: AsyncOpenAI, transport: AiohttpTransport, response: aiohttp.ClientResponse
    ) -> None:
        self._transport = transport
        self._response = response
        self._url = str(response.url)
        self._iterator = self._events(client)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Any:
        return await self._iterator.__anext__()

    async def _events(self, client: AsyncOpenAI) -> AsyncIterator[Any]:
        decoder = client._make_sse_decoder()
        try:
            async for sse in decoder.aiter_bytes(self._chunks()):
                if sse.data.startswith("[DONE]"):
                    async for _ in self._chunks():  # the rest, so the connection is reused
                        pass
                    break
                data = sse.json()
                if isinstance(data, Mapping) and data.get("error"):
                    error = data.get("error")
                    message = error.get("message") if isinstance(error, Mapping) else None
                    if not message or not isinstance(message, str):
                        message = "An error occurred during streaming"
                    request = httpx2.Request("POST", self._url)
                    raise APIError(message=message, request=request, body=data["error"])
                yield data
        finally:
            await self.close()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._transport.body_chunks(self._response):
                yield chunk
        except httpx2.RequestError as exc:
            raise _sdk_error(exc, self._url) from exc

    async def close(self) -> None:
        self._transport.finish(self._response)


async def _open(
    client: AsyncOpenAI,
    transport: AiohttpTransport,
    body: dict[str, Any],
    timeout: float,
    max_retries: int,
) -> aiohttp.ClientResponse:
    """Send until a 2xx answers (its body unread), as the SDK's `request` loop would."""
    url = str(client._prepare_url(CHAT_PATH))
    headers = request_headers(client)
    data = dumps(body)
    retries_taken = 0
    while True:
        remaining = max_retries - retries_taken
        try:
            response = await transport.post(url, headers, data, timeout)
        except httpx2.RequestError as exc:  # timeouts included
            if remaining > 0:
                await _sleep(client, retries_taken, None)
                retries_taken += 1
                continue
            raise _sdk_error(exc, url) from exc
        status = response.status
        if 200 <= status < 300:
            return response
        content = await transport.read_body(response)
        if 300 <= status < 400:
            raise Redirected(status)
        error = httpx2.Response(
            status,
            # The body is decoded already.
            headers=[(k, v) for k, v in response.raw_headers if k.lower() != b"content-encoding"],
            content=content,
            request=httpx2.Request("POST", url),
        )
        if remaining > 0 and client._should_retry(error):
            await _sleep(client, retries_taken, error.headers)
            retries_taken += 1
            continue
        raise client._make_status_error_from_response(error) from None


def _sdk_error(exc: httpx2.RequestError, url: str) -> APIConnectionError:
    """What the SDK raises for a request that got no answer (APITimeoutError is one)."""
    request = httpx2.Request("POST", url)
    if isinstance(exc, httpx2.TimeoutException):
        return APITimeoutError(request=request)
    return APIConnectionError(request=request)


def _parse(content_type: str, content: bytes) -> object:
    """The SDK's reading of an answer asked as `object`: JSON when the type says JSON, else
    the text (`openai._response.BaseAPIResponse._parse`)."""
    kind = (content_type or "*").split(";")[0]
    if not kind.endswith("json"):
        return content.decode("utf-8", "replace")
    return json.loads(content)  # ValueError when it does not parse, as httpx2's .json()


async def _sleep(client: AsyncOpenAI, retries_taken: int, headers: httpx2.Headers | None) -> None:
    delay = _retry_delay(client, retries_taken, headers)
    log.info("Retrying request in %f seconds (retry %i)", delay, retries_taken + 1)
    await asyncio.sleep(delay)


def _retry_delay(client: AsyncOpenAI, retries_taken: int, headers: httpx2.Headers | None) -> float:
    """The SDK's `_calculate_retry_timeout`: the server's Retry-After (read by the SDK) when it
    is sensible, else exponential back-off with up to 25 % jitter."""
    retry_after = client._parse_retry_after_header(headers)
    sensible = retry_after is not None and math.isfinite(retry_after)
    if sensible and retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER:
        return retry_after
    sleep = min(INITIAL_RETRY_DELAY * pow(2.0, min(retries_taken, 1000)), MAX_RETRY_DELAY)
    return max(sleep * (1 - 0.25 * random.random()), 0.0)
