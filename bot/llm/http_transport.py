"""The HTTP client under the `openai` and `anthropic` SDKs: httpx2's API on aiohttp's connections.

    client = AsyncOpenAI(..., http_client=make_sdk_http_client())

Why not the SDKs' default (httpx2 on httpcore2): measured under load (`tests/bench/e2e_load.py`,
`.planning/decisions/0004-hot-path.md`), httpcore2's pool walks every pooled connection, with a
readability syscall for each, whenever a request is queued or a response closed. Its CPU cost per
request grows with the number of requests in flight; at a few hundred concurrent model calls it
was the bot's largest single cost. aiohttp's connector hands out idle connections from a per-host
queue, in constant time.

Why not the SDKs' own aiohttp option (`DefaultAioHttpClient`): it maps every dropped connection
to a *connect timeout*, so a reset would be reported (and traced) as a timeout. Here aiohttp's
errors map to httpx2's, which the SDKs turn into their own, exactly:

    aiohttp.ConnectionTimeoutError          -> httpx2.ConnectTimeout   -> APITimeoutError
    aiohttp.SocketTimeoutError, other
      timeouts (asyncio.TimeoutError)       -> httpx2.ReadTimeout      -> APITimeoutError
    aiohttp.ClientConnectorError (refused,
      DNS, TLS handshake)                   -> httpx2.ConnectError     -> APIConnectionError
    aiohttp.ServerDisconnectedError,
      ClientResponseError (bad HTTP)        -> httpx2.RemoteProtocolError -> APIConnectionError
    aiohttp.ClientPayloadError, ClientOSError
      (reset, truncated body)               -> httpx2.ReadError        -> APIConnectionError
    aiohttp.InvalidURL                      -> httpx2.UnsupportedProtocol
    any other aiohttp.ClientError           -> httpx2.NetworkError

Timeouts keep httpx2's meaning: `connect` bounds opening a connection, `read` each wait for
bytes (so a stream that goes silent times out, a long stream that keeps talking does not), `pool`
the wait for a free connection.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import httpx2
from multidict import CIMultiDict

from bot.proxy_env import proxy_configured

__all__ = ["AiohttpTransport", "make_sdk_http_client"]

# As many connections as the SDKs' own default pool allows.
MAX_CONNECTIONS = 1000
# Idle connections are kept this long (aiohttp's default); the providers keep theirs longer.
KEEPALIVE_SECONDS = 15.0


@contextlib.contextmanager
def _mapped_errors(request: httpx2.Request | None) -> Iterator[None]:
    try:
        yield
    except httpx2.HTTPError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx2.ConnectTimeout(str(exc) or "connect timed out", request=request) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx2.ReadTimeout(str(exc) or "read timed out", request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as exc:
        raise httpx2.RemoteProtocolError(
            str(exc) or "server disconnected", request=request
        ) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise httpx2.ReadError(str(exc) or "connection lost", request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx2.NetworkError(str(exc) or type(exc).__name__, request=request) from exc


class _ResponseStream(httpx2.AsyncByteStream):
    """The body of one aiohttp response, as httpx2 reads it; bytes are handed on as they come."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A body read to the end gives its connection back to the pool; one abandoned halfway
        # (a cancelled stream) must not be reused, so it is closed.
        AiohttpTransport.finish(self._response)


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport that sends requests with one shared `aiohttp.ClientSession`.

    The session is opened on first use, inside the running event loop, and closed by `aclose`.
    """

    def __init__(
        self, *, max_connections: int = MAX_CONNECTIONS, keepalive: float = KEEPALIVE_SECONDS
    ) -> None:
        self._max_connections = max_connections
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(connector=connector, trust_env=proxy_configured())
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        body = await request.aread()
        session = self._get_session()
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=CIMultiDict(request.headers.multi_items()),
                data=body or None,
                allow_redirects=False,
                # httpx2 decodes the body itself, by Content-Encoding.
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            request=request,
            extensions=extensions,
        )

    async def post(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float
    ) -> aiohttp.ClientResponse:
        """POST `body`, with no httpx2 objects on the way (a model call's lean path,
        `bot.llm.openai_wire`): the response, its body unread (`read_body`, `body_chunks`; then
        `finish`). The timeout is each phase's, as the SDKs set it; errors are httpx2's, as for
        every request here. The body is decoded as its Content-Encoding says."""
        session = self._get_session()
        with _mapped_errors(None):
            return await session.post(
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=timeout, sock_connect=timeout, sock_read=timeout
                ),
            )

    @staticmethod
    async def read_body(response: aiohttp.ClientResponse) -> bytes:
        """The whole body of a response from `post`; its connection goes back to the pool."""
        try:
            with _mapped_errors(None):
                return await response.read()
        finally:
            AiohttpTransport.finish(response)

    @staticmethod
    async def body_chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body of a response from `post`, as it comes."""
        with _mapped_errors(None):
            async for chunk in response.content.iter_any():
                yield chunk

    @staticmethod
    def finish(response: aiohttp.ClientResponse) -> None:
        """Done with a response from `post`: as `_ResponseStream.aclose` (reuse the connection
        of a body read to the end, close one abandoned halfway)."""
        if response.content.at_eof():
            response.release()
        else:
            response.close()

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


# Distinct URLs kept per client: the SDKs use a handful of paths; ids in paths (files, batches)
# could make more, and then the cache starts over rather than grow.
URL_CACHE_SIZE = 64


def cached_url(owner: Any, url: str, merge: Callable[[str], httpx2.URL]) -> httpx2.URL:
    """`merge(url)`, remembered per `owner` and its current `base_url` (httpx2.URL is immutable).

    The SDKs resolve the same few relative paths against the base URL on every request, and
    httpx2 parses the resulting absolute URL again: ~10 % of a model call's CPU, for the same
    answer each time.
    """
    base = owner.base_url
    state: tuple[httpx2.URL, dict[str, httpx2.URL]] | None = owner.__dict__.get("_bot_url_cache")
    if state is None or state[0] is not base:
        state = (base, {})
        owner.__dict__["_bot_url_cache"] = state
    cache = state[1]
    merged = cache.get(url)
    if merged is None:
        merged = merge(url)
        if len(cache) >= URL_CACHE_SIZE:
            cache.clear()
        cache[url] = merged
    return merged


class _SdkHttpClient(httpx2.AsyncClient):
    def _merge_url(self, url: httpx2.URL | str) -> httpx2.URL:
        if isinstance(url, str):
            return cached_url(self, url, super()._merge_url)
        return super()._merge_url(url)


def make_sdk_http_client(transport: AiohttpTransport | None = None) -> httpx2.AsyncClient:
    """An `httpx2.AsyncClient` for `AsyncOpenAI(http_client=...)` / `AsyncAnthropic(...)`, on
    `transport` (a new one by default).

    Redirects are followed, as the SDKs' own default client does; the SDKs set each request's
    timeout themselves.
    """
    return _SdkHttpClient(transport=transport or AiohttpTransport(), follow_redirects=True)
