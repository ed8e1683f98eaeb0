"""The export process's main loop (`python -m bot.observability.export_process`).

Two ways to make the spans, chosen by LANGFUSE_EXPORT (the config's "export"):
- `direct` (default, decision 0026): `DirectReplayer` writes each span's OTLP bytes when it
  ends, and `SpanBatches` sends them through `LangfuseSpanExporter` (gzip, retries, timeout);
- `sdk`: the Langfuse client the bot used to build in-process (our own TracerProvider with the
  bot's resource attributes, `LangfuseSpanExporter`, the export-time mask, the same batching),
  with span and trace ids from the bot's records (`PresetIds`), fed by `Replayer`.
Records are applied as they arrive; `("flush", n)` sends what was made and answers `n` on
stdout; EOF exports what is left (bounded by the export timeout per batch) and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource

from bot.observability import otlp_wire as wire
from bot.observability.direct_replay import DirectReplayer
from bot.observability.exporter import LangfuseSpanExporter, _sdk_version
from bot.observability.logs import install_log_scrubbing
from bot.observability.scrub import Scrubber
from bot.observability.span_batches import SpanBatches

if TYPE_CHECKING:
    from langfuse import Langfuse

    from bot.observability.replay import Replayer

log = logging.getLogger("bot.observability.export")

NICENESS = 10
# The SDK's scope name (`langfuse._client.constants.LANGFUSE_TRACER_NAME`): Langfuse reads it.
TRACER_NAME = "langfuse-sdk"
# What a flush waits for at most (the SDK's force_flush default); the bot has its own deadline.
FLUSH_TIMEOUT = 30.0


def build_client(config: dict[str, Any], scrubber: Scrubber) -> tuple[Langfuse, Replayer]:
    # Imported here: the direct export (the default) runs without the SDK (~0.4 s of CPU to
    # import, a quarter of the export process's CPU over a bench run).
    from langfuse import Langfuse
    from opentelemetry.sdk.trace import TracerProvider

    from bot.observability import export_stage
    from bot.observability.replay import PresetIds, Replayer

    ids = PresetIds()
    provider = TracerProvider(
        resource=Resource.create(config["resource"]),
        shutdown_on_exit=False,
        id_generator=ids,
    )
    timeout = float(config["export_timeout"])
    exporter = LangfuseSpanExporter(
        base_url=config["base_url"],
        public_key=config["public_key"],
        secret_key=config["secret_key"],
        timeout=timeout,
    )
    replayer: Replayer | None = None

    def mask(**kwargs: Any) -> Any:
        assert replayer is not None
        return replayer.mask_spans(**kwargs)

    client = Langfuse(
        public_key=config["public_key"],
        secret_key=config["secret_key"],
        base_url=config["base_url"],
        timeout=max(1, round(timeout)),
        span_exporter=exporter,
        flush_at=config["flush_at"],
        flush_interval=config["flush_interval"],
        release=config["release"],
        tracer_provider=provider,
        mask_otel_spans=mask,
        media_upload_thread_count=1,
    )
    replayer = Replayer(client, scrubber, ids)
    # The SDK's export stage copies and clones every span; most batches need none of it.
    export_stage.install(provider, exporter, scrubber.text)
    return client, replayer


class DirectExport:
    """`DirectReplayer` into `SpanBatches` into `LangfuseSpanExporter.export_encoded`."""

    def __init__(self, config: dict[str, Any], scrubber: Scrubber) -> None:
        self.exporter = LangfuseSpanExporter(
            base_url=config["base_url"],
            public_key=config["public_key"],
            secret_key=config["secret_key"],
            timeout=float(config["export_timeout"]),
        )
        resource = Resource.create(config["resource"])
        resource_attributes = [
            wire.key_value(key, wire.any_value(value)) for key, value in resource.attributes.items()
        ]
        scope = wire.scope(
            TRACER_NAME,
            _sdk_version(),
            [wire.string_attribute("public_key", config["public_key"])],
        )

        def send(spans: list[bytes]) -> bool:
            return self.exporter.export_encoded(wire.request(resource_attributes, scope, spans))

        # The SDK's defaults and variables for its batching.
        flush_at = config["flush_at"] or int(os.environ.get("LANGFUSE_FLUSH_AT", "512"))
        interval = config["flush_interval"] or float(os.environ.get("LANGFUSE_FLUSH_INTERVAL", "5"))
        self.batches = SpanBatches(send, flush_at=flush_at, flush_interval=interval)
        self._flush_at = max(1, flush_at)
        self.replayer = DirectReplayer(
            scrubber,
            self.batches.add,
            release=config["release"] or os.environ.get("LANGFUSE_RELEASE"),
            environment=os.environ.get("LANGFUSE_TRACING_ENVIRONMENT") or None,
        )
        self._export_timeout = float(config["export_timeout"])

    def apply(self, record: Any) -> None:
        self.replayer.apply(record)

    def flush(self) -> None:
        self.batches.flush(FLUSH_TIMEOUT)

    def shutdown(self) -> None:
        # Each batch left may take the export timeout; the bot kills us at its own deadline.
        batches = 1 + self.batches.pending // self._flush_at
        self.batches.shutdown(self._export_timeout * batches + 1.0)
        self.exporter.shutdown()


class SdkExport:
    """`Replayer` into the Langfuse SDK (LANGFUSE_EXPORT=sdk)."""

    def __init__(self, config: dict[str, Any], scrubber: Scrubber) -> None:
        self.client, self.replayer = build_client(config, scrubber)

    def apply(self, record: Any) -> None:
        self.replayer.apply(record)

    def flush(self) -> None:
        self.client.flush()

    def shutdown(self) -> None:
        self.client.shutdown()  # flushes spans and scores, stops the SDK's threads
        tracer_provider = getattr(self.client._resources, "tracer_provider", None)
        if tracer_provider is not None:
            tracer_provider.shutdown()


def run(frames: Iterable[Any], out: IO[bytes]) -> int:
    iterator = iter(frames)
    try:
        config = next(iterator)
    except StopIteration:
        return 0
    scrubber = Scrubber(config["secrets"], redact_content=config["redact_content"])
    install_log_scrubbing(scrubber, level="WARNING")
    # Exporting can wait; the bot's replies cannot. When both want the CPU, the bot wins.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    try:
        export: DirectExport | SdkExport = (
            SdkExport(config, scrubber)
            if config.get("export") == "sdk"
            else DirectExport(config, scrubber)
        )
    except Exception as exc:
        log.error("tracing: the export process could not start Langfuse (%s)", type(exc).__name__)
        return 1
    for record in iterator:
        if record and record[0] == "flush":
            try:
                export.flush()
            except Exception as exc:
                log.warning("tracing: flush failed (%s)", type(exc).__name__)
            out.write(f"{record[1]}\n".encode())
            out.flush()
            continue
        export.apply(record)
    try:
        export.shutdown()
    except Exception as exc:
        log.warning("tracing: shutdown failed (%s)", type(exc).__name__)
    out.flush()
    # The SDK's daemon threads hold nothing more; do not wait for them.
    os._exit(0)
