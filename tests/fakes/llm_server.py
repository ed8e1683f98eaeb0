"""A loopback LLM server that speaks the OpenAI and Anthropic wire formats, for the real SDKs.

Tests, the Telegram end-to-end suite and the benchmarks point the real `openai` / `anthropic`
SDKs (or the whole bot, through `*_BASE_URL`) at it. It is a small HTTP/1.1 server on raw asyncio
streams, so it can do what a framework would hide: drop a socket mid-request, hang forever, send
an HTML error page, or trickle SSE tokens with a delay.

    async with FakeLLMServer() as server:
        server.script("gpt-4o", text="Hello there.", token_delay=0.01)
        server.script("broken", fault=Fault.SERVER_ERROR)
        client = AsyncOpenAI(base_url=server.openai_base_url, api_key="k")
        ...
        assert server.requests[-1].headers["authorization"] == "Bearer k"

Endpoints (any path prefix is accepted, so `/v1/...`, `/api/v1/...` (OpenRouter) and
`/openai/v1/...` (Groq) all work):

- `POST .../chat/completions`: OpenAI chat completions, JSON or SSE (`"stream": true`). SSE
  starts with keep-alive comment lines (`: OPENROUTER PROCESSING`), sends one chunk per token,
  a final chunk with `finish_reason`, a usage chunk with `choices: []` when
  `stream_options.include_usage` is set, then `data: [DONE]`. `usage.cost` is added when the
  script has a `cost` (OpenRouter reports it).
- `POST .../messages`: Anthropic messages, JSON or its SSE event sequence (`message_start`,
  `content_block_start`, `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`
  with usage, `message_stop`).
- `GET .../models`: the catalog in OpenRouter's format, `{"data": server.catalog}`.

Replies are scripted per model name with `server.script(model, ...)`; unknown models get
`server.default` (text `"Hello from <model>."`). A script's `text` may be a function of the
`RecordedRequest`, e.g. to answer differently on a repair attempt. Every request (path, lower-cased
headers including `authorization` / `x-api-key`, parsed JSON body) is appended to
`server.requests` before any fault is applied, so assertions can count attempts.

Fault injection beyond the named faults:

    server.script("m", fault=Fault.STATUS, status=503)      # any status, API-shaped error body
    server.script("m", reject_response_format=True)         # 400 naming `response_format`, as an
                                                            # endpoint without JSON mode answers
    server.script("m", "a b c", fault=Fault.CUT_STREAM)     # ends cleanly, no terminal event
    server.script("m", "a b c", fault=Fault.DROP_MID_STREAM)  # socket aborted mid-answer
    server.script("m", "a b c", fault=Fault.STALL_MID_STREAM)  # silence mid-answer
    server.script("m", "more ", endless=True)             # streams forever, max_tokens or not
    server.script("m", tokens=["a ", "\ud83d", "\ude00"])  # these chunks exactly

`server.connections_opened` and `server.connections_closed` count TCP connections, so a test can
tell a reused keep-alive connection from a new one and see a client hang up.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import http
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from tests.fakes.ports import free_port

__all__ = [
    "FakeLLMServer",
    "Fault",
    "RecordedRequest",
    "Script",
    "split_tokens",
    "unused_port_url",
]


class Fault(enum.Enum):
    """What to do instead of answering (see `Script.fault`)."""

    SERVER_ERROR = "500"  # 500 with a JSON error body
    RATE_LIMITED = "429"  # 429 with `Retry-After: Script.retry_after`
    HANG = "hang"  # accept the request, never answer (until the server closes)
    DROP_CONNECTION = "drop"  # read the request, then close the socket without a response
    HTML_502 = "html502"  # 502 with an HTML page, as a proxy in front of the API would send
    BAD_REQUEST = "400"  # 400 invalid_request_error (must not be retried or fallen back from)
    MID_STREAM_ERROR = "midstream"  # stream `error_after_tokens` tokens, then an error object
    MALFORMED_JSON = "malformed"  # 200 with application/json content that is not JSON
    WRONG_SHAPE = "shape"  # 200 with valid JSON that is not a completion (no choices/content)
    STATUS = "status"  # `Script.status` with an error body in the API's own format
    # Streams only: `error_after_tokens` tokens, then the body ends as if complete but without
    # the terminal event (no finish_reason / `[DONE]`; no message_delta / message_stop).
    CUT_STREAM = "cut"
    # Streams only: `error_after_tokens` tokens, then the socket is aborted.
    DROP_MID_STREAM = "dropmid"
    # Streams only: `error_after_tokens` tokens, then silence (until the server closes).
    STALL_MID_STREAM = "stallmid"


# Faults that change a streamed answer part-way; a non-streamed request is answered normally.
_STREAM_ONLY = frozenset(
    {Fault.MID_STREAM_ERROR, Fault.CUT_STREAM, Fault.DROP_MID_STREAM, Fault.STALL_MID_STREAM}
)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float

    @property
    def api(self) -> str:
        """`openai`, `anthropic`, `models` or `other`: which endpoint was asked."""
        if self.path.endswith("/chat/completions"):
            return "openai"
        if self.path.endswith("/messages"):
            return "anthropic"
        if self.path.endswith("/models"):
            return "models"
        return "other"

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


ReplyText = str | Callable[[RecordedRequest], str]


@dataclass
class Answered:
    """A request the server answered in full: the usage it reported (`server.answers`)."""

    request: RecordedRequest
    model: str  # the model id the answer named
    prompt_tokens: int
    completion_tokens: int
    cost: float | None


@dataclass
class Script:
    """How the server answers one model.

    `fault` applies to the first `fault_times` requests for the model (all of them when None),
    then the model answers normally: `fault_times=1` scripts "fails once, then recovers".
    """

    text: ReplyText = ""
    latency: float = 0.0  # seconds before the response starts
    token_delay: float = 0.0  # seconds between streamed tokens
    fault: Fault | None = None
    fault_times: int | None = None
    retry_after: float = 1.0  # for RATE_LIMITED
    error_after_tokens: int = 2  # for MID_STREAM_ERROR and the other mid-stream faults
    status: int = 500  # for STATUS
    # Answer a request that carries `response_format` with a 400 naming it (a model or endpoint
    # without JSON-schema output); requests without it are answered normally.
    reject_response_format: bool = False
    keepalive_comments: int = 1  # `: OPENROUTER PROCESSING` lines before the first SSE chunk
    cost: float | None = None  # OpenRouter's `usage.cost`, in USD
    # The model id the answer names (OpenRouter answers with the model it routed to, e.g. a
    # dated version); the requested one when None.
    served_model: str | None = None
    finish_reason: str = "stop"
    served: int = 0  # requests seen for this model (counted by the server)
    # Streams only: the exact chunks to send (e.g. an emoji's surrogate halves apart), instead
    # of the text's words.
    tokens: list[str] | None = None
    # Streams only: a model that never stops: the tokens again and again, whatever max_tokens
    # says, until the client hangs up.
    endless: bool = False

    def reply_for(self, request: RecordedRequest) -> str:
        if callable(self.text):
            return self.text(request)
        return self.text or f"Hello from {request.model}."


_TOKEN = re.compile(r"\s*\S+\s*|\s+")


def _streamed(script: Script, text: str) -> Iterator[str]:
    tokens = script.tokens if script.tokens is not None else split_tokens(text)
    if not script.endless:
        yield from tokens
        return
    while tokens:
        yield from tokens


def split_tokens(text: str) -> list[str]:
    """Words with their surrounding spaces: joining the tokens gives `text` back exactly."""
    return _TOKEN.findall(text) or ([text] if text else [])


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _count_prompt_tokens(body: dict[str, Any]) -> int:
    words = 0
    system = body.get("system")
    if system:
        words += len(_content_text(system).split())
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            words += len(_content_text(message.get("content")).split())
    return max(words, 1)


def unused_port_url() -> str:
    """A loopback URL where nothing listens: connecting to it is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


class _Dropped(Exception):
    """The handler closed the connection on purpose."""


class FakeLLMServer:
    """See the module docstring. Start with `async with` (or `await start()` / `await close()`)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.connections_opened = 0
        self.connections_closed = 0
        self._ids = itertools.count(1)
        self.scripts: dict[str, Script] = {}
        self.default = Script()
        self.requests: list[RecordedRequest] = []
        # Every answer given in full, in order, with the usage it reported.
        self.answers: list[Answered] = []
        self.catalog: list[dict[str, Any]] = [
            {"id": "openai/gpt-4o-mini", "name": "OpenAI: GPT-4o-mini", "context_length": 128000},
            {
                "id": "anthropic/claude-sonnet-4.5",
                "name": "Anthropic: Claude Sonnet 4.5",
                "context_length": 200000,
            },
        ]

    # --- lifecycle ---

    async def start(self) -> FakeLLMServer:
        self._server = await asyncio.start_server(self._on_connection, self._host, self._port)
        return self

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- addresses ---

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For `openai:`, `xai:` and `vllm:` (the SDK appends `/chat/completions`)."""
        return f"{self.url}/v1"

    @property
    def openrouter_base_url(self) -> str:
        return f"{self.url}/api/v1"

    @property
    def groq_base_url(self) -> str:
        return f"{self.url}/openai/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For `anthropic:` (the SDK appends `/v1/messages`)."""
        return self.url

    # --- scripting and assertions ---

    def script(self, model: str, text: ReplyText | None = None, **options: Any) -> Script:
        """Set how `model` answers; returns the `Script` (its `served` counts requests)."""
        script = Script(text=text if text is not None else f"Hello from {model}.", **options)
        self.scripts[model] = script
        return script

    def requests_for(self, model: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.model == model]

    def reset(self) -> None:
        self.scripts.clear()
        self.requests.clear()
        self.default = Script()

    def _script_for(self, model: str) -> Script:
        return self.scripts.get(model, self.default)

    # --- HTTP plumbing ---

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_opened += 1
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    break
                keep_alive = await self._dispatch(request, writer)
                if not keep_alive:
                    break
        except (_Dropped, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            self.connections_closed += 1
            with contextlib.suppress(Exception):
                if not writer.is_closing():
                    writer.close()
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        raw = await reader.readexactly(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        path = target.split("?", 1)[0]
        return RecordedRequest(
            method, path, headers, body if isinstance(body, dict) else {}, time.time()
        )

    async def _dispatch(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        self.requests.append(request)
        if request.api == "models" and request.method == "GET":
            await _send_json(writer, 200, {"data": self.catalog, "object": "list"})
            return True
        if request.api not in ("openai", "anthropic") or request.method != "POST":
            await _send_json(writer, 404, {"error": {"message": f"no route {request.path}"}})
            return True

        script = self._script_for(request.model)
        script.served += 1
        if script.latency:
            await asyncio.sleep(script.latency)

        faulty = script.fault is not None and (
            script.fault_times is None or script.served <= script.fault_times
        )
        fault = script.fault if faulty else None
        if fault is not None and fault not in _STREAM_ONLY:
            return await self._send_fault(request, writer, fault, script)
        if script.reject_response_format and "response_format" in request.body:
            await _send_json(writer, 400, _response_format_rejection(request))
            return True

        text = script.reply_for(request)
        if request.api == "openai":
            if request.stream:
                await self._openai_stream(request, writer, script, text, fault)
            else:
                await _send_json(writer, 200, self._openai_completion(request, script, text))
        elif request.stream:
            await self._anthropic_stream(request, writer, script, text, fault)
        else:
            message = self._anthropic_message(request, script, text)
            await _send_json(writer, 200, message)
            self._answered_anthropic(request, script, message["usage"])
        return True

    async def _send_fault(
        self, request: RecordedRequest, writer: asyncio.StreamWriter, fault: Fault, script: Script
    ) -> bool:
        anthropic = request.api == "anthropic"
        if fault is Fault.HANG:
            await asyncio.Event().wait()  # until the client gives up or the server closes
        if fault is Fault.DROP_CONNECTION:
            writer.transport.abort()
            raise _Dropped
        if fault is Fault.SERVER_ERROR:
            body = (
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": "Internal server error"},
                }
                if anthropic
                else {
                    "error": {
                        "message": "Internal server error",
                        "type": "server_error",
                        "code": 500,
                    }
                }
            )
            await _send_json(writer, 500, body)
        elif fault is Fault.RATE_LIMITED:
            body = (
                {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}}
                if anthropic
                else {
                    "error": {"message": "Rate limit exceeded", "type": "rate_limit", "code": 429}
                }
            )
            retry_after = f"{script.retry_after:g}"
            await _send_json(writer, 429, body, headers={"retry-after": retry_after})
        elif fault is Fault.HTML_502:
            page = (
                "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
                "<body><h1>502 Bad Gateway</h1><p>cloudflare</p></body></html>"
            )
            await _send(writer, 502, page.encode(), content_type="text/html; charset=utf-8")
        elif fault is Fault.BAD_REQUEST:
            body = (
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "messages: bad request"},
                }
                if anthropic
                else {
                    "error": {
                        "message": "Invalid request: bad messages",
                        "type": "invalid_request_error",
                        "code": 400,
                    }
                }
            )
            await _send_json(writer, 400, body)
        elif fault is Fault.MALFORMED_JSON:
            await _send(writer, 200, b'{"id": "x", "choices": [', content_type="application/json")
        elif fault is Fault.WRONG_SHAPE:
            shape = {"type": "message", "content": None} if anthropic else {"choices": []}
            await _send_json(writer, 200, {"id": "x", **shape})
        elif fault is Fault.STATUS:
            await _send_json(
                writer, script.status, _status_error(script.status, anthropic=anthropic)
            )
        return True

    # --- OpenAI format ---

    def _openai_usage(self, request: RecordedRequest, script: Script, text: str) -> dict[str, Any]:
        prompt = _count_prompt_tokens(request.body)
        completion = len(split_tokens(text))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if script.cost is not None:
            usage["cost"] = script.cost
        self.answers.append(
            Answered(request, script.served_model or request.model, prompt, completion, script.cost)
        )
        return usage

    def _openai_completion(
        self, request: RecordedRequest, script: Script, text: str
    ) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": script.served_model or request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": script.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": self._openai_usage(request, script, text),
        }

    async def _openai_stream(
        self,
        request: RecordedRequest,
        writer: asyncio.StreamWriter,
        script: Script,
        text: str,
        fault: Fault | None,
    ) -> None:
        ident = f"chatcmpl-{next(self._ids)}"
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": script.served_model or request.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        stream = await _SSE.open(writer)
        for _ in range(script.keepalive_comments):
            await stream.comment("OPENROUTER PROCESSING")
        await stream.data(chunk({"role": "assistant", "content": ""}))
        for i, token in enumerate(_streamed(script, text)):
            if i == script.error_after_tokens and await stream.cut(fault):
                return
            if fault is Fault.MID_STREAM_ERROR and i == script.error_after_tokens:
                await stream.data(
                    {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": request.model,
                        "error": {"code": 502, "message": "Upstream provider error mid-stream"},
                        "choices": [
                            {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
                        ],
                    }
                )
                await stream.end()
                return
            if script.token_delay:
                await asyncio.sleep(script.token_delay)
            await stream.data(chunk({"content": token}))
        await stream.data(chunk({}, script.finish_reason))
        options = request.body.get("stream_options") or {}
        if options.get("include_usage"):
            await stream.data(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": script.served_model or request.model,
                    "choices": [],
                    "usage": self._openai_usage(request, script, text),
                }
            )
        await stream.raw("data: [DONE]\n\n")
        await stream.end()

    # --- Anthropic format ---

    def _anthropic_message(
        self, request: RecordedRequest, script: Script, text: str
    ) -> dict[str, Any]:
        return {
            "id": f"msg_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": script.served_model or request.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn" if script.finish_reason == "stop" else script.finish_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _count_prompt_tokens(request.body),
                "output_tokens": len(split_tokens(text)),
            },
        }

    async def _anthropic_stream(
        self,
        request: RecordedRequest,
        writer: asyncio.StreamWriter,
        script: Script,
        text: str,
        fault: Fault | None,
    ) -> None:
        message = self._anthropic_message(request, script, text)
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": usage["input_tokens"], "output_tokens": 1}
        stream = await _SSE.open(writer)
        await stream.event("message_start", {"type": "message_start", "message": start})
        await stream.event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        await stream.event("ping", {"type": "ping"})
        for i, token in enumerate(_streamed(script, text)):
            if i == script.error_after_tokens and await stream.cut(fault):
                return
            if fault is Fault.MID_STREAM_ERROR and i == script.error_after_tokens:
                await stream.event(
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                )
                await stream.end()
                return
            if script.token_delay:
                await asyncio.sleep(script.token_delay)
            await stream.event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": token},
                },
            )
        await stream.event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await stream.event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        )
        await stream.event("message_stop", {"type": "message_stop"})
        await stream.end()
        self._answered_anthropic(request, script, usage)

    def _answered_anthropic(
        self, request: RecordedRequest, script: Script, usage: dict[str, Any]
    ) -> None:
        self.answers.append(
            Answered(
                request,
                script.served_model or request.model,
                int(usage["input_tokens"]),
                int(usage["output_tokens"]),
                None,
            )
        )


def _status_error(status: int, *, anthropic: bool) -> dict[str, Any]:
    """The error body each API sends with `status` (types as their documentation names them)."""
    reason = _reason(status)
    if anthropic:
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        kind = kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": f"{status} {reason}"}}
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": f"{status} {reason}", "type": kind, "code": status}}


def _response_format_rejection(request: RecordedRequest) -> dict[str, Any]:
    """What OpenAI answers a model without JSON-schema output (its real wording)."""
    kind = (request.body.get("response_format") or {}).get("type", "json_schema")
    return {
        "error": {
            "message": (
                f"Invalid parameter: 'response_format' of type '{kind}' is not supported with "
                "this model."
            ),
            "type": "invalid_request_error",
            "param": "response_format",
            "code": None,
        }
    }


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _send(
    writer: asyncio.StreamWriter,
    status: int,
    payload: bytes,
    *,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    lines = [
        f"HTTP/1.1 {status} {_reason(status)}",
        f"content-type: {content_type}",
        f"content-length: {len(payload)}",
        "connection: keep-alive",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()


async def _send_json(
    writer: asyncio.StreamWriter,
    status: int,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
) -> None:
    await _send(
        writer, status, json.dumps(body).encode(), content_type="application/json", headers=headers
    )


class _SSE:
    """A chunked `text/event-stream` response (chunked, so the connection can be reused)."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    @classmethod
    async def open(cls, writer: asyncio.StreamWriter) -> _SSE:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "content-type: text/event-stream\r\n"
            "cache-control: no-cache\r\n"
            "transfer-encoding: chunked\r\n"
            "connection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode("latin-1"))
        await writer.drain()
        return cls(writer)

    async def raw(self, text: str) -> None:
        data = text.encode()
        self._writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self._writer.drain()

    async def comment(self, text: str) -> None:
        await self.raw(f": {text}\n\n")

    async def data(self, payload: dict[str, Any]) -> None:
        await self.raw(f"data: {json.dumps(payload)}\n\n")

    async def event(self, name: str, payload: dict[str, Any]) -> None:
        await self.raw(f"event: {name}\ndata: {json.dumps(payload)}\n\n")

    async def end(self) -> None:
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def cut(self, fault: Fault | None) -> bool:
        """Apply a mid-stream fault (other than MID_STREAM_ERROR); whether the answer stops."""
        if fault is Fault.STALL_MID_STREAM:
            await asyncio.Event().wait()  # until the client gives up or the server closes
        if fault is Fault.CUT_STREAM:
            await self.end()
            return True
        if fault is Fault.DROP_MID_STREAM:
            self._writer.transport.abort()
            raise _Dropped
        return False
