"""The span exporter to Langfuse's OTLP endpoint, which shutdown can cut short.

The SDK would build the same OTLP/HTTP exporter itself (gzip protobuf to
`<base_url>/api/public/otel/v1/traces`, basic auth with the key pair, its `x-langfuse-*`
headers); we build it so that we hold it. When Langfuse hangs, each batch waits for its request
timeout, and a backlog of batches would keep the SDK's shutdown busy long after the bot's
deadline. `abort()` makes every later export fail at once, so the shutdown thread ends promptly.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import importlib.metadata
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.common import http as otlp_http
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

log = logging.getLogger(__name__)

TRACES_PATH = "/api/public/otel/v1/traces"
# gzip's level for requests encoded by `bot.observability.direct_replay`: the OTLP client
# compresses at 9, which costs ~3x the CPU of 1 for a few percent of a loopback or LAN request.
GZIP_LEVEL = 1


def _sdk_version() -> str:
    try:
        return importlib.metadata.version("langfuse")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed with the bot
        return "unknown"


class LangfuseSpanExporter(SpanExporter):
    def __init__(self, *, base_url: str, public_key: str, secret_key: str, timeout: float) -> None:
        credentials = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
        self._exporter = OTLPSpanExporter(
            endpoint=base_url.rstrip("/") + TRACES_PATH,
            headers={
                "Authorization": f"Basic {credentials}",
                "x-langfuse-sdk-name": "python",
                "x-langfuse-sdk-version": _sdk_version(),
                "x-langfuse-public-key": public_key,
                # Langfuse v4 ingestion: spans are processed as they arrive.
                "x-langfuse-ingestion-version": "4",
            },
            timeout=timeout,
            compression=Compression.Gzip,
        )
        # The same transport, endpoint, headers (gzip named) and retries, for requests that
        # arrive encoded and compressed (`export_encoded`). Relies on the client's private
        # fields (decision 0026).
        inner: Any = self._exporter._client
        self._encoded = otlp_http._OTLPHTTPClient(
            transport=inner._transport,
            endpoint=inner._endpoint,
            kind="spans",
            timeout=inner._timeout,
            compression=otlp_http.Compression.NONE,
            headers=inner._headers,
            logger=log,
        )
        self._aborted = False
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._aborted:
            return SpanExportResult.FAILURE
        return self._exporter.export(spans)

    def export_encoded(self, data: bytes) -> bool:
        """Send an encoded `ExportTraceServiceRequest`; True when Langfuse took it."""
        if self._aborted:
            return False
        body = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        return self._encoded.export(body).success

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # nothing is buffered here; the batch processor holds the spans

    def abort(self) -> None:
        """Give up: drop what is left and end any request in flight."""
        if not self._aborted:
            self._aborted = True
            log.warning("tracing: giving up on the spans Langfuse has not taken")
            self.shutdown()

    def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            # Ends any retry of an encoded request; the shared transport closes below.
            self._encoded._shutdown_event.set()
            with contextlib.suppress(Exception):
                # unused-ignore: a newer opentelemetry-sdk may type shutdown().
                self._exporter.shutdown()  # type: ignore[no-untyped-call, unused-ignore]
