"""The Langfuse side of tracing: what the export process does with the bot's span records.

The bot (`bot.observability.tracing`) records a run, a step or a model call as a few tuples
and hands them over a pipe; this module turns them into Langfuse observations with the real SDK,
the calls and arguments the bot used to make itself: `propagate_attributes` around a run and each
step, the same span types (span, agent, generation), the same input, output, metadata, levels,
usage and costs, every value scrubbed (`Scrubber`) before the SDK sees it. The SDK then does what
it always did: propagates user, session, tags and metadata onto every span, serializes the
attributes, runs the export-time mask (our scrubber again), the OTLP encoding, gzip and HTTP.

Span ids, trace ids and times come from the bot (`_PresetIds`, `start_time`/`end_time`), so a
trace id the bot gave a user (`/trace`, scores) is the one Langfuse shows.

Each open run or step is a "scope": the OpenTelemetry context it set (propagated attributes and
the current span), kept in a `contextvars.Context` of its own, exactly as the bot's task kept it.
A child scope starts from a copy of its parent's, as a task copies its creator's context. A run's
scope outlives the run for `RUN_SCOPE_TTL` seconds (its background steps join it after the reply),
holding only the span's ids by then.
"""

from __future__ import annotations

import contextvars
import logging
import random
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from langfuse import Langfuse, propagate_attributes
from langfuse._client.propagation import _set_langfuse_trace_id_in_baggage
from langfuse.types import MaskOtelSpansParams, MaskOtelSpansResult, OtelSpanPatch
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import NonRecordingSpan

import bot
from bot.observability.scrub import Scrubber
from bot.observability.trace_values import (
    RecordApplier,
    error_text,
    generation_fields,
    generation_input,
    propagated_metadata,
    run_metadata,
    run_tags,
    scrubbed_tags,
    short_text,
    step_metadata,
)

log = logging.getLogger(__name__)

Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]


class PresetIds(IdGenerator):
    """Span and trace ids as the bot chose them; random ones when none is set."""

    def __init__(self) -> None:
        self.span_id: int | None = None
        self.trace_id: int | None = None

    def generate_span_id(self) -> int:
        value, self.span_id = self.span_id, None
        return value if value is not None else random.getrandbits(64)

    def generate_trace_id(self) -> int:
        value, self.trace_id = self.trace_id, None
        return value if value is not None else random.getrandbits(128)


@dataclass(slots=True)
class _Scope:
    context: contextvars.Context  # where the scope's stack is entered and closed
    inner: contextvars.Context  # a snapshot taken inside: what child scopes start from
    observation: Any
    stack: ExitStack
    kind: str
    step: dict[str, Any] | None = None


class Replayer(RecordApplier):
    """Applies the bot's records to a Langfuse client (`RecordApplier`: never raises)."""

    def __init__(self, client: Langfuse, scrubber: Scrubber, ids: PresetIds) -> None:
        super().__init__(scrubber)
        self.client = client
        self.ids = ids

    # --- starts ---

    def _start_current(
        self, stack: ExitStack, *, name: str, as_type: str, start_ns: int, **fields: Any
    ) -> Any:
        """`client.start_as_current_observation(...)`, begun at `start_ns`: the SDK's own
        steps (an OpenTelemetry span made current, the app-root claim in the baggage, the
        observation wrapper), since its public call always starts now."""
        client = self.client
        span = client._otel_tracer.start_span(name=name, start_time=start_ns)
        stack.enter_context(otel_trace.use_span(span, end_on_exit=False))
        if span.is_recording():
            claim = _set_langfuse_trace_id_in_baggage(
                trace_id=client._get_otel_trace_id(span), context=otel_context.get_current()
            )
            token = otel_context.attach(claim)
            stack.callback(otel_context.detach, token)
        return client._create_observation_from_otel_span(
            otel_span=span,
            as_type=as_type,  # type: ignore[arg-type]
            **fields,
        )

    def _start_run(
        self,
        sid: int,
        trace_id: int,
        start_ns: int,
        pipeline: str,
        tags: list[str],
        user_id: int | None,
        chat_id: int | None,
        input_text: str,
        metadata: dict[str, Any],
    ) -> None:
        scrub = self.scrubber
        tags = run_tags(scrub, pipeline, tags)
        trace_metadata = propagated_metadata(scrub, metadata)
        context = contextvars.Context()
        stack = ExitStack()

        def enter() -> Any:
            stack.enter_context(
                propagate_attributes(
                    user_id=str(user_id) if user_id is not None else None,
                    session_id=str(chat_id) if chat_id is not None else None,
                    tags=tags,
                    trace_name=short_text(scrub.text(pipeline)),
                    metadata=trace_metadata,
                    version=bot.__version__,
                )
            )
            self.ids.trace_id, self.ids.span_id = trace_id, sid
            return self._start_current(
                stack,
                name=scrub.text(pipeline),
                as_type="span",
                start_ns=start_ns,
                input=scrub.content(input_text),
                metadata=run_metadata(scrub, pipeline, user_id, chat_id, metadata),
            )

        observation = self._enter(context, stack, enter)
        self._scopes[sid] = _Scope(
            context, context.run(contextvars.copy_context), observation, stack, "run"
        )

    def _enter(self, context: contextvars.Context, stack: ExitStack, enter: Any) -> Any:
        try:
            return context.run(enter)
        except BaseException:
            context.run(stack.close)
            raise

    def _parent(self, parent: int | None) -> contextvars.Context:
        scope = self._scopes.get(parent) if parent is not None else None
        return scope.inner.copy() if scope is not None else contextvars.Context()

    def _start_step(
        self,
        sid: int,
        parent: int | None,
        start_ns: int,
        step: dict[str, Any],
        tags: list[str] | None,
    ) -> None:
        scrub = self.scrubber
        context = self._parent(parent)
        stack = ExitStack()

        def enter() -> Any:
            if tags is not None:
                # Re-propagated on each step so that tags added during the run (overrides)
                # reach the step, its generations and the root span if it is still open.
                stack.enter_context(propagate_attributes(tags=scrubbed_tags(scrub, tags)))
            self.ids.span_id = sid
            return self._start_current(
                stack,
                name=scrub.text(step["agent"]),
                as_type="agent",
                start_ns=start_ns,
                metadata=step_metadata(scrub, step),
            )

        observation = self._enter(context, stack, enter)
        self._scopes[sid] = _Scope(
            context, context.run(contextvars.copy_context), observation, stack, "step", step
        )

    def _start_generation(
        self,
        sid: int,
        parent: int | None,
        start_ns: int,
        call: dict[str, Any],
    ) -> None:
        scrub = self.scrubber
        scope = self._scopes.get(parent) if parent is not None else None
        # A model call belongs to the step it runs in (the bot's innermost step).
        step = scope.step if scope is not None else None
        name, metadata = generation_fields(scrub, call, step)
        context = self._parent(parent)

        def start() -> Any:
            self.ids.span_id = sid
            span = self.client._otel_tracer.start_span(name=name, start_time=start_ns)
            return self.client._create_observation_from_otel_span(
                otel_span=span,
                as_type="generation",
                model=scrub.text(call["model"]),
                model_parameters=scrub.value(call["parameters"]),
                input=generation_input(scrub, call),
                metadata=metadata,
            )

        self._generations[sid] = (context.run(start), call["model"])

    # --- updates and ends ---

    def _update(self, sid: int, what: str, payload: Any) -> None:
        if what == "first_token":
            found = self._generations.get(sid)
            if found is not None:
                found[0].update(completion_start_time=datetime.fromtimestamp(payload / 1e9, UTC))
        elif what == "output":  # a run's output
            scope = self._scopes.get(sid)
            if scope is not None:
                scope.observation.update(output=self.scrubber.content(payload))

    def _end_run(self, sid: int, scope: _Scope, end_ns: int, payload: Any) -> None:
        observation = scope.observation
        raw_tags, failure = payload
        if failure is not None:
            level, error = failure
            observation.update(level=level, status_message=self._error_text(error))
        tags = scrubbed_tags(self.scrubber, raw_tags)

        def finish() -> None:
            # The root span is current here: this puts the tags added during the run on it.
            with propagate_attributes(tags=tags):
                pass
            observation.end(end_time=end_ns)
            scope.stack.close()

        scope.context.run(finish)
        # Steps may still join (background): they need the span's ids and the propagated
        # attributes, not the span itself.
        light = scope.inner.copy()
        span_context = observation._otel_span.get_span_context()
        # Inside `light`: the span replaced in the context the run left (its propagation kept).
        light.run(
            lambda: otel_context.attach(
                otel_trace.set_span_in_context(NonRecordingSpan(span_context))
            )
        )
        scope.inner = light
        scope.observation = None
        self._run_ended(sid)

    def _end_step(self, scope: _Scope, end_ns: int, fields: dict[str, Any]) -> None:
        observation = scope.observation
        if fields:
            observation.update(**fields)
        observation.end(end_time=end_ns)
        scope.context.run(scope.stack.close)

    def _end_generation(self, span: Any, end_ns: int, fields: dict[str, Any]) -> None:
        if fields:
            span.update(**fields)
        span.end(end_time=end_ns)

    # --- helpers ---

    def _error_text(self, error: Sequence[Any] | None) -> str | None:
        return error_text(self.scrubber, error)

    def mask_spans(self, *, params: MaskOtelSpansParams) -> MaskOtelSpansResult | None:
        """Export-stage safety net: scrub every string attribute of every span once more."""
        scrub = self.scrubber.text
        patches: dict[Any, OtelSpanPatch | None] = {}
        for identifier, span in params.spans.items():
            updates: dict[str, Any] = {}
            for key, value in span.attributes.items():
                if isinstance(value, str):
                    cleaned = scrub(value)
                    if cleaned != value:
                        updates[key] = cleaned
                elif isinstance(value, Sequence) and any(isinstance(v, str) for v in value):
                    items = [scrub(v) if isinstance(v, str) else v for v in value]
                    if items != list(value):
                        updates[key] = items
            if updates:
                patches[identifier] = OtelSpanPatch(set_attributes=updates)
        return MaskOtelSpansResult(span_patches=patches) if patches else None
