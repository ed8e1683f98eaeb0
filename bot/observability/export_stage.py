"""Langfuse's export stage, with the common batch made cheap.

The SDK wraps the span exporter in `LangfuseTransformingSpanExporter` whenever a media manager
exists (always): for every span it copies the attributes into a dict, scans each string for
media, copies them again for `mask_otel_spans`, builds a read-only view per span and clones
every span, whether anything changed or not (about a tenth of the export process's CPU).

`CheapExportStage` takes its place in the batch processor. A batch in which no string attribute
can hold media (none contains any marker the SDK's media scan looks for) and the export-time
scrub changes nothing is exported as it stands: exactly what the SDK's stage would have sent,
since its media scan and its mask would both have left every attribute as it was. Any other
batch goes to the SDK's stage whole, which does what it always did (uploads the media, applies
the patches). Either way every span of the batch is exported once.

Relies on SDK internals (decision 0022): the markers of `_may_contain_serialized_media`, and the
batch processor's `_exporter` attribute where the stage is swapped in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

# Every string the SDK's media scan can change contains one of these (`data:` for a data URI,
# plain or JSON-quoted; the rest for serialized media parts): see
# `langfuse._client.span_exporter._process_media_string`.
_MEDIA_MARKERS = ("data:", "inline_data", "inlineData", '"media_type"', '"mime_type"', '"mimeType"')


def _may_hold_media(value: str) -> bool:
    return any(marker in value for marker in _MEDIA_MARKERS)


class CheapExportStage(SpanExporter):
    """`export(batch)`: straight to `exporter` when the SDK's stage would change nothing,
    else through `sdk_stage`."""

    def __init__(
        self, *, sdk_stage: SpanExporter, exporter: SpanExporter, scrub: Callable[[str], str]
    ) -> None:
        self.sdk_stage = sdk_stage
        self._exporter = exporter
        self._scrub = scrub
        self.passed = 0  # batches exported as they stood
        self.transformed = 0  # batches handed to the SDK's stage

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        plain = self._unchanged(spans)
        if plain is None:
            self.transformed += 1
            return self.sdk_stage.export(spans)
        self.passed += 1
        if not plain:
            return SpanExportResult.SUCCESS
        return self._exporter.export(plain)

    def _unchanged(self, spans: Sequence[ReadableSpan]) -> list[ReadableSpan] | None:
        """The spans the SDK's stage would export, if it would change none of them; else None."""
        scrub = self._scrub
        # As the SDK's stage: a span without a valid context is dropped, and of two spans with
        # the same ids the later one is kept, in the later one's place.
        kept: dict[tuple[int, int], ReadableSpan] = {}
        for span in spans:
            context = span.context
            if context is None or not context.is_valid:
                return None  # the SDK logs and drops it: let it
            for value in (span.attributes or {}).values():
                if isinstance(value, str):
                    if _may_hold_media(value) or scrub(value) != value:
                        return None
                elif isinstance(value, Sequence) and not isinstance(value, bytes):
                    for item in value:
                        if isinstance(item, str) and (_may_hold_media(item) or scrub(item) != item):
                            return None
            key = (context.trace_id, context.span_id)
            kept.pop(key, None)
            kept[key] = span
        return list(kept.values())

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.sdk_stage.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.sdk_stage.shutdown()


def install(provider: TracerProvider, exporter: SpanExporter, scrub: Callable[[str], str]) -> int:
    """Put a `CheapExportStage` in front of every SDK stage that wraps `exporter` in
    `provider`'s batch processors; how many were replaced."""
    replaced = 0
    processors: Any = provider._active_span_processor._span_processors
    for processor in processors:
        if not isinstance(processor, BatchSpanProcessor):
            continue
        batch: Any = processor._batch_processor
        stage = batch._exporter
        if getattr(stage, "_exporter", None) is exporter and not isinstance(
            stage, CheapExportStage
        ):
            batch._exporter = CheapExportStage(sdk_stage=stage, exporter=exporter, scrub=scrub)
            replaced += 1
    return replaced
