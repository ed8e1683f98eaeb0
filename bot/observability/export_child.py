"""The export process's main loop (`python -m bot.observability.export_process`).

Builds the Langfuse client the bot used to build in-process (our own TracerProvider with the
bot's resource attributes, `LangfuseSpanExporter`, the export-time mask, the same batching),
with one difference: span and trace ids come from the bot's records (`PresetIds`). Then it applies
records as they arrive; `("flush", n)` flushes the SDK and answers `n` on stdout; EOF exports
what is left (bounded by the export timeout per batch) and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable
from typing import IO, Any

from langfuse import Langfuse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from bot.observability import export_stage
from bot.observability.exporter import LangfuseSpanExporter
from bot.observability.logs import install_log_scrubbing
from bot.observability.replay import PresetIds, Replayer
from bot.observability.scrub import Scrubber

log = logging.getLogger("bot.observability.export")

NICENESS = 10


def build_client(config: dict[str, Any], scrubber: Scrubber) -> tuple[Langfuse, Replayer]:
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
        client, replayer = build_client(config, scrubber)
    except Exception as exc:
        log.error("tracing: the export process could not start Langfuse (%s)", type(exc).__name__)
        return 1
    for record in iterator:
        if record and record[0] == "flush":
            try:
                client.flush()
            except Exception as exc:
                log.warning("tracing: flush failed (%s)", type(exc).__name__)
            out.write(f"{record[1]}\n".encode())
            out.flush()
            continue
        replayer.apply(record)
    try:
        client.shutdown()  # flushes spans and scores, stops the SDK's threads
        tracer_provider = getattr(client._resources, "tracer_provider", None)
        if tracer_provider is not None:
            tracer_provider.shutdown()
    except Exception as exc:
        log.warning("tracing: shutdown failed (%s)", type(exc).__name__)
    out.flush()
    # The SDK's daemon threads hold nothing more; do not wait for them.
    os._exit(0)
