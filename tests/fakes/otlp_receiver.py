"""A loopback stand-in for the Langfuse server, for the real Langfuse SDK to export to.

It answers what the SDK (v5) calls:

- `POST /api/public/otel/v1/traces`: OTLP/HTTP protobuf (gzip unless the client says otherwise),
  decoded with opentelemetry-proto's `ExportTraceServiceRequest` into `ReceivedSpan`s;
- `POST /api/public/scores`: a JSON list of scores (the SDK's score consumer thread);
- `GET /api/public/projects`: the project lookup behind `Langfuse.get_trace_url`.

Every request is kept whole (method, path, headers, raw and decoded body) so a test can search
every byte the SDK sent. Modes: `normal`; `hang` (reads the request, never answers until the
receiver closes); `unreachable` (nothing listens on the port: connections are refused).

    with OtlpReceiver() as receiver:
        settings = Settings(langfuse_base_url=receiver.base_url, ...)
        ...
        receiver.wait_until(lambda r: len(r.spans()) >= 3)

The server runs in its own threads, never on the test's event loop, so a hanging mode cannot
stall the code under test through the loop.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

Mode = Literal["normal", "hang", "unreachable"]

TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
PROJECTS_PATH = "/api/public/projects"
PROJECT_ID = "proj-loopback"


@dataclass(slots=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    raw: bytes  # the body as sent (possibly gzip)
    body: bytes  # the body after content decoding


@dataclass(slots=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: dict[str, Any]
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    scope: str
    resource: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def observation_type(self) -> str | None:
        value = self.attributes.get("langfuse.observation.type")
        return value if isinstance(value, str) else None

    def json_attr(self, key: str) -> Any:
        """A Langfuse attribute that the SDK stores JSON-encoded (input, output, metadata...)."""
        value = self.attributes.get(key)
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    def metadata(self, key: str) -> Any:
        return self.json_attr(f"langfuse.observation.metadata.{key}")


def _any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind is None:
        return None
    return getattr(value, kind)


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _any_value(kv.value) for kv in items}


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex() or None,
                        attributes=_attributes(span.attributes),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=span.status.code,
                        status_message=span.status.message,
                        scope=scope_spans.scope.name,
                        resource=resource,
                        events=[
                            {"name": event.name, **_attributes(event.attributes)}
                            for event in span.events
                        ],
                    )
                )
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _read_body(self) -> tuple[bytes, bytes]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            body = gzip.decompress(raw)
        elif encoding == "deflate":
            body = zlib.decompress(raw)
        else:
            body = raw
        return raw, body

    def _handle(self) -> None:
        raw, body = self._read_body()
        path = self.path.split("?", 1)[0]
        received = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers={key.lower(): value for key, value in self.headers.items()},
            raw=raw,
            body=body,
        )
        owner = self.server.owner
        owner._record(received)
        if owner.mode == "hang":
            # Hold the connection open, answer nothing; released when the receiver closes.
            owner._release.wait()
            self.close_connection = True
            return
        if self.command == "POST" and path == TRACES_PATH:
            try:
                owner._add_spans(decode_spans(body))
            except Exception as exc:
                self._reply(400, b"bad otlp payload: " + str(exc).encode(), "text/plain")
                return
            payload = ExportTraceServiceResponse().SerializeToString()
            self._reply(200, payload, "application/x-protobuf")
        elif self.command == "POST" and path == SCORES_PATH:
            items = json.loads(body or b"[]")
            owner._add_scores(items if isinstance(items, list) else [items])
            self._reply(202, b'{"message":"Accepted"}', "application/json")
        elif self.command == "GET" and path == PROJECTS_PATH:
            project = {
                "id": PROJECT_ID,
                "name": "loopback",
                "organization": {"id": "org-loopback", "name": "loopback"},
                "metadata": {},
            }
            self._reply(200, json.dumps({"data": [project]}).encode(), "application/json")
        else:
            self._reply(404, b'{"message":"not found"}', "application/json")

    def _reply(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_PATCH = _handle
    do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class OtlpReceiver:
    def __init__(self, mode: Mode = "normal") -> None:
        self.mode: Mode = mode
        self._lock = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._scores: list[dict[str, Any]] = []
        self._release = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        if mode == "unreachable":
            self.port = _closed_port()
        else:
            self._server = _Server(self)
            self.port = self._server.server_address[1]
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="otlp-receiver",
                daemon=True,
            )
            self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- recording (server threads) ---

    def _record(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _add_spans(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self._lock.notify_all()

    def _add_scores(self, scores: list[dict[str, Any]]) -> None:
        with self._lock:
            self._scores.extend(scores)
            self._lock.notify_all()

    # --- what tests read ---

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def scores(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._scores)

    def all_bytes(self) -> list[bytes]:
        """Every byte received: raw and decoded bodies, and each request's header block."""
        chunks: list[bytes] = []
        for request in self.requests():
            head = "\n".join(f"{k}: {v}" for k, v in request.headers.items())
            chunks += [f"{request.method} {request.path}\n{head}".encode(), request.raw]
            chunks.append(request.body)
        return chunks

    def wait_until(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10.0) -> bool:
        """Block (in the calling thread) until `predicate(self)` holds or `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 0.1))
        return True

    async def wait_until_async(
        self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10.0
    ) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def close(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
