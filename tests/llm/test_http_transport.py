"""The aiohttp-backed httpx2 transport under both SDKs: connection reuse, abandoned streams, and
aiohttp's errors mapped to the httpx2 errors the SDKs understand.

Connections are counted where they cannot be faked: at the loopback server's accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
import pytest

from bot.llm.http_transport import make_sdk_http_client
from tests.fakes.llm_server import FakeLLMServer, Fault, split_tokens, unused_port_url

LONG = " ".join(f"word{n}" for n in range(40))
WAIT = 5.0


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with make_sdk_http_client() as client:
        yield client


def body(model: str, *, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def completions(server: FakeLLMServer) -> str:
    return f"{server.openai_base_url}/chat/completions"


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def stream_into(
    received: list[bytes],
    client: httpx2.AsyncClient,
    url: str,
    *,
    model: str = "m",
    read_timeout: float = WAIT,
) -> None:
    """Stream a completion, keeping every piece of the body that arrived before any error."""
    timeout = httpx2.Timeout(WAIT, read=read_timeout)
    async with client.stream("POST", url, json=body(model, stream=True), timeout=timeout) as r:
        async for chunk in r.aiter_bytes():
            received.append(chunk)


def streamed_text(raw: bytes) -> str:
    """The content deltas of an OpenAI SSE body."""
    text = []
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: ") :])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


# --- connection reuse ---------------------------------------------------------------------------


async def test_sequential_requests_share_one_connection(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("m", "a short reply")

    for _ in range(3):
        reply = await client.post(completions(llm_server), json=body("m"))
        assert reply.status_code == 200
        assert reply.json()["choices"][0]["message"]["content"] == "a short reply"
    async with client.stream("POST", completions(llm_server), json=body("m", stream=True)) as r:
        assert streamed_text(await r.aread()) == "a short reply"
    error = await client.post(f"{llm_server.openai_base_url}/nowhere", json={})

    assert error.status_code == 404
    assert len(llm_server.requests) == 5
    assert llm_server.connections_opened == 1, "every request should reuse the first connection"
    assert llm_server.connections_closed == 0


async def test_concurrent_requests_open_their_own_connections(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("m", latency=0.1)

    replies = await asyncio.gather(
        *(client.post(completions(llm_server), json=body("m")) for _ in range(3))
    )
    again = await asyncio.gather(
        *(client.post(completions(llm_server), json=body("m")) for _ in range(3))
    )

    assert [r.status_code for r in (*replies, *again)] == [200] * 6
    assert llm_server.connections_opened == 3, "the second round reuses the pooled three"


# --- abandoned streams --------------------------------------------------------------------------


async def read_some_then_leave(client: httpx2.AsyncClient, url: str) -> bytes:
    async with client.stream("POST", url, json=body("slow", stream=True)) as response:
        async for chunk in response.aiter_bytes():
            if b'"content": "word' in chunk:
                return chunk  # leaving the block closes the response halfway
    raise AssertionError("the stream ended before any word")


async def test_a_stream_abandoned_halfway_closes_its_connection(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("slow", LONG, token_delay=0.02)
    llm_server.script("m", "next one")

    await read_some_then_leave(client, completions(llm_server))

    # Not returned to the pool with half a body still to come: closed, and the server sees it.
    await wait_until(lambda: llm_server.connections_closed == 1, "the connection to close")
    reply = await client.post(completions(llm_server), json=body("m"))
    assert reply.json()["choices"][0]["message"]["content"] == "next one"
    assert llm_server.connections_opened == 2


async def test_a_cancelled_stream_closes_its_connection(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("slow", LONG, token_delay=0.02)
    llm_server.script("m", "next one")
    first_word = asyncio.Event()

    async def consume() -> None:
        async with client.stream(
            "POST", completions(llm_server), json=body("slow", stream=True)
        ) as response:
            async for chunk in response.aiter_bytes():
                if b'"content": "word' in chunk:
                    first_word.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_word.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await wait_until(lambda: llm_server.connections_closed == 1, "the connection to close")
    streamed: list[bytes] = []
    await stream_into(streamed, client, completions(llm_server))
    assert streamed_text(b"".join(streamed)) == "next one"
    assert llm_server.connections_opened == 2


async def test_a_stream_read_to_the_end_goes_back_to_the_pool(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """The other half of the rule above: a finished body keeps its connection alive."""
    llm_server.script("m", LONG)

    for _ in range(2):
        async with client.stream(
            "POST", completions(llm_server), json=body("m", stream=True)
        ) as response:
            words = streamed_text(await response.aread())
        assert split_tokens(words) == split_tokens(LONG)

    assert llm_server.connections_opened == 1
    assert llm_server.connections_closed == 0


# --- error mapping ------------------------------------------------------------------------------


async def test_refused_connection_is_a_connect_error(client: httpx2.AsyncClient) -> None:
    with pytest.raises(httpx2.ConnectError) as info:
        await client.post(f"{unused_port_url()}/v1/chat/completions", json=body("m"))

    assert info.value.request.method == "POST"


async def test_connection_dropped_before_an_answer_is_a_remote_protocol_error(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("m", fault=Fault.DROP_CONNECTION)

    with pytest.raises(httpx2.RemoteProtocolError):
        await client.post(completions(llm_server), json=body("m"))


async def test_connection_dropped_mid_body_is_a_read_error(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("m", LONG, fault=Fault.DROP_MID_STREAM)

    received: list[bytes] = []

    with pytest.raises(httpx2.ReadError):
        await stream_into(received, client, completions(llm_server))

    assert received, "the body broke after its first bytes, not before"


async def test_a_server_that_never_answers_is_a_read_timeout(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    llm_server.script("m", fault=Fault.HANG)
    started = time.monotonic()

    with pytest.raises(httpx2.ReadTimeout):
        await client.post(
            completions(llm_server), json=body("m"), timeout=httpx2.Timeout(WAIT, read=0.2)
        )

    assert time.monotonic() - started < WAIT / 2


async def test_a_stream_that_goes_silent_is_a_read_timeout(
    llm_server: FakeLLMServer, client: httpx2.AsyncClient
) -> None:
    """`read` bounds each wait for bytes, not the whole body."""
    llm_server.script("m", LONG, fault=Fault.STALL_MID_STREAM, error_after_tokens=3)
    received: list[bytes] = []

    with pytest.raises(httpx2.ReadTimeout):
        await stream_into(received, client, completions(llm_server), read_timeout=0.2)

    assert streamed_text(b"".join(received)) == "".join(split_tokens(LONG)[:3])


@contextlib.contextmanager
def full_listen_queue() -> Iterator[str]:
    """A loopback address whose listen queue is full: the kernel drops further SYNs, so a connect
    hangs instead of being refused (how an unreachable host looks, without leaving 127.0.0.1)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_a_connect_that_hangs_is_a_connect_timeout(client: httpx2.AsyncClient) -> None:
    with full_listen_queue() as url:
        await asyncio.sleep(0.05)  # let the fillers' handshakes land in the queue
        started = time.monotonic()
        with pytest.raises(httpx2.ConnectTimeout):
            await client.post(
                f"{url}/v1/chat/completions",
                json=body("m"),
                timeout=httpx2.Timeout(WAIT, connect=0.2),
            )

    assert time.monotonic() - started < WAIT / 2


# --------------------------------------------------------------------------- resolved URLs


async def test_sdk_clients_follow_a_changed_base_url_despite_the_url_cache() -> None:
    """Both SDKs resolve each path once per base URL (`cached_url`); a new base URL wins."""
    from bot.llm.anthropic_provider import make_anthropic_client
    from bot.llm.openai_compat import make_openai_client

    async with FakeLLMServer() as first, FakeLLMServer() as second:
        openai_client = make_openai_client(
            provider="openai",
            base_url=first.openai_base_url,
            api_key="sk-test",
            timeout=WAIT,
            max_retries=0,
        )
        anthropic_client = make_anthropic_client(
            base_url=first.anthropic_base_url, api_key="sk-ant-test", timeout=WAIT, max_retries=0
        )
        try:
            for _ in range(2):  # the second call is served from the cache
                await openai_client.chat.completions.create(
                    model="m-openai", messages=[{"role": "user", "content": "hi"}]
                )
                await anthropic_client.messages.create(
                    model="m-anthropic",
                    max_tokens=16,
                    messages=[{"role": "user", "content": "hi"}],
                )
            openai_client.base_url = second.openai_base_url  # type: ignore[assignment]
            anthropic_client.base_url = second.anthropic_base_url  # type: ignore[assignment]
            await openai_client.chat.completions.create(
                model="m-openai", messages=[{"role": "user", "content": "hi"}]
            )
            await anthropic_client.messages.create(
                model="m-anthropic", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
        finally:
            await openai_client.close()
            await anthropic_client.close()

    assert [(r.api, r.model) for r in first.requests] == [
        ("openai", "m-openai"),
        ("anthropic", "m-anthropic"),
    ] * 2
    assert [(r.api, r.model) for r in second.requests] == [
        ("openai", "m-openai"),
        ("anthropic", "m-anthropic"),
    ]


def test_the_url_cache_is_bounded_and_keyed_by_path() -> None:
    from bot.llm.http_transport import URL_CACHE_SIZE, cached_url

    class Owner:
        base_url = httpx2.URL("http://127.0.0.1:1/v1/")

    owner = Owner()
    merges: list[str] = []

    def merge(path: str) -> httpx2.URL:
        merges.append(path)
        return owner.base_url.join(path.lstrip("/"))

    assert str(cached_url(owner, "/a", merge)) == "http://127.0.0.1:1/v1/a"
    assert str(cached_url(owner, "/b", merge)) == "http://127.0.0.1:1/v1/b"
    assert cached_url(owner, "/a", merge) is cached_url(owner, "/a", merge)
    assert merges == ["/a", "/b"]
    for n in range(3 * URL_CACHE_SIZE):
        cached_url(owner, f"/files/{n}", merge)
    assert len(owner.__dict__["_bot_url_cache"][1]) <= URL_CACHE_SIZE
