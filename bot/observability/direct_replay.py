"""The bot's span records as OTLP spans, written straight to protobuf (decision 0026).

`bot.observability.replay.Replayer` hands each record to the Langfuse SDK, which builds
OpenTelemetry spans, propagates attributes through contexts, serializes values with its
`EventSerializer`, copies every span in its export stage and encodes the batch again: ~0.95 ms
of CPU a span in the export process (py-spy, 2026-12-03). `DirectReplayer` produces the spans that
path sends, attribute for attribute (the tests compare both encodings on the same records),
with each value serialized once and each span's bytes written once, when it ends:

- the same values, from the same functions (`trace_values.run_tags`, `step_metadata`, ...),
  scrubbed the same way before serialization, and every string attribute scrubbed once more
  (the SDK's `mask_otel_spans` safety net, here when the span ends rather than at the batch's
  export): when `Scrubber.may_change` finds a secret or a credential's hint in the span's bytes,
  every attribute is scrubbed and the span encoded again; otherwise the scrub would change
  nothing and is skipped;
- the SDK's propagation: user, session, trace name, version, trace metadata and tags on every
  span of a run; a step's tags merged into its context and set on the span it started under,
  when that is still open; a run's final tags on its root span;
- the SDK's attribute order (an attribute set again moves to the end, as OpenTelemetry's
  `BoundedAttributes` does), types, `is_app_root`, release, environment and ERROR status.

What it does not do: the SDK's media handling (uploading base64 data URIs and replacing them
with references). The bot never puts media in a trace; such a string is exported as text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bot
from bot.observability import otlp_wire as wire
from bot.observability.scrub import Scrubber
from bot.observability.trace_values import (
    PROPAGATED_CHARS,
    RecordApplier,
    error_text,
    generation_fields,
    generation_input,
    propagated_metadata,
    run_metadata,
    run_tags,
    scrubbed_tags,
    step_metadata,
)

# Langfuse's attribute names (`langfuse._client.attributes.LangfuseOtelSpanAttributes`).
USER_ID = "user.id"
SESSION_ID = "session.id"
TRACE_NAME = "langfuse.trace.name"
TRACE_TAGS = "langfuse.trace.tags"
TRACE_METADATA = "langfuse.trace.metadata"
VERSION = "langfuse.version"
RELEASE = "langfuse.release"
ENVIRONMENT = "langfuse.environment"
IS_APP_ROOT = "langfuse.internal.is_app_root"
TYPE = "langfuse.observation.type"
LEVEL = "langfuse.observation.level"
STATUS_MESSAGE = "langfuse.observation.status_message"
INPUT = "langfuse.observation.input"
OUTPUT = "langfuse.observation.output"
METADATA = "langfuse.observation.metadata"
MODEL = "langfuse.observation.model.name"
MODEL_PARAMETERS = "langfuse.observation.model.parameters"
USAGE = "langfuse.observation.usage_details"
COST = "langfuse.observation.cost_details"
COMPLETION_START = "langfuse.observation.completion_start_time"

_MAX_SAFE_INT = 2**53 - 1
# Attributes of values this short are encoded once and remembered (at most _MAX_ENCODED).
_SHORT_VALUE = 64
_MAX_ENCODED = 4096


# --- values as the SDK serializes them ---


def _plain(value: Any) -> bool:
    """True when `json.dumps` writes `value` exactly as the SDK's `EventSerializer` would:
    JSON types only, integers JavaScript can hold, finite floats."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_MAX_SAFE_INT <= value <= _MAX_SAFE_INT)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_plain(v) for v in value)
    return False


def serialized(value: Any) -> str | None:
    """`langfuse._client.attributes._serialize` (input, output, usage, parameters)."""
    if value is None or isinstance(value, str):
        return value
    if _plain(value):
        return json.dumps(value)
    from langfuse._client.attributes import _serialize  # rare: the SDK's own serializer

    return _serialize(value)


_METADATA_TEXTS: dict[str, str] = {}


def metadata_value(value: Any) -> str:
    """`langfuse._client.attributes._serialize_metadata_value`."""
    kind = type(value)
    if kind is str:
        # Metadata repeats a few values (agents, models, sources) on every span.
        text = _METADATA_TEXTS.get(value)
        if text is None:
            text = json.dumps(value, ensure_ascii=False)
            if len(_METADATA_TEXTS) < 4096 and len(value) <= 64:
                _METADATA_TEXTS[value] = text
        return text
    if kind is bool:
        return "true" if value else "false"
    if kind is int and -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
        return str(value)  # what json.dumps writes for an int
    if _plain(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    from langfuse._client.attributes import _serialize_metadata_value  # rare, as above

    return _serialize_metadata_value(value)


def _short(value: Any) -> bool:
    """What the SDK propagates: strings of at most 200 characters."""
    return isinstance(value, str) and len(value) <= PROPAGATED_CHARS


# --- spans and contexts ---


@dataclass(slots=True)
class _Span:
    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start_ns: int
    kind: str  # span, agent or generation
    # key -> (value as set: str, list of str or bool; its encoded KeyValue)
    attributes: dict[str, tuple[Any, bytes]] = field(default_factory=dict)
    status_code: int = wire.STATUS_UNSET
    status_message: str | None = None
    open: bool = True


@dataclass(slots=True)
class _Context:
    """What the SDK's OpenTelemetry context held: the current span, the propagated
    attributes and the trace's app-root claim. Never changed once made: a scope that changes
    it makes a new one, as `propagate_attributes` attaches a new context."""

    span: _Span | None = None
    claimed: bool = False
    user_id: str | None = None
    session_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    version: str | None = None
    tags: list[str] | None = None
    trace_name: str | None = None
    _encoded: list[tuple[str, tuple[Any, bytes]]] | None = None

    def child(self, **changes: Any) -> _Context:
        if "tags" in changes:
            changes["_encoded"] = None  # the propagated attributes changed
        return dataclasses.replace(self, **changes)


@dataclass(slots=True)
class _Scope:
    context: _Context  # what child scopes start from
    span: _Span
    kind: str
    run_context: _Context | None = None  # a run's own context (its finish merges tags there)
    step: dict[str, Any] | None = None


def _merged(existing: list[str] | None, new: list[str]) -> list[str]:
    """`propagate_attributes`' tag merge: the context's tags, then the new ones."""
    merged = list(existing or [])
    merged.extend(tag for tag in new if tag not in merged)
    return merged


class DirectReplayer(RecordApplier):
    """Applies the bot's records (`RecordApplier`: never raises); each span, when it ends,
    goes to `emit` as the bytes of an OTLP `Span`."""

    def __init__(
        self,
        scrubber: Scrubber,
        emit: Callable[[bytes], None],
        *,
        release: str | None,
        environment: str | None = None,
    ) -> None:
        super().__init__(scrubber)
        self._emit = emit
        self._release = release
        self._environment = environment
        self._encoded: dict[tuple[str, str], bytes] = {}
        self.ended = 0

    # --- attributes ---

    def _set(self, span: _Span, key: str, text: str) -> None:
        # Set again, an attribute moves to the end (OpenTelemetry's BoundedAttributes).
        attributes = span.attributes
        attributes.pop(key, None)
        if len(text) > _SHORT_VALUE:
            attributes[key] = (text, wire.string_attribute(key, text))
            return
        # Most short values repeat on every span (types, agents, models, sources, release).
        cache = self._encoded
        encoded = cache.get((key, text))
        if encoded is None:
            if len(cache) >= _MAX_ENCODED:
                cache.clear()
            encoded = cache[(key, text)] = wire.string_attribute(key, text)
        attributes[key] = (text, encoded)

    def _set_tags(self, span: _Span, tags: list[str]) -> None:
        attributes = span.attributes
        attributes.pop(TRACE_TAGS, None)
        attributes[TRACE_TAGS] = (tags, wire.strings_attribute(TRACE_TAGS, tags))

    def _scrubbed(self, key: str, value: Any) -> bytes:
        """An attribute encoded again after the export-time scrub (`Replayer.mask_spans`)."""
        text = self.scrubber.text
        if isinstance(value, str):
            return wire.string_attribute(key, text(value))
        if isinstance(value, list):
            return wire.strings_attribute(key, [text(item) for item in value])
        return wire.bool_attribute(key, bool(value))

    def _set_metadata(self, span: _Span, metadata: Any) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            self._set(span, METADATA, metadata_value(metadata))
            return
        for key, value in metadata.items():
            if value is not None:
                self._set(span, f"{METADATA}.{key}", metadata_value(value))

    def _set_fields(self, span: _Span, *, include_type: bool, **fields: Any) -> None:
        """`create_span_attributes` / `create_generation_attributes`, in their order."""
        if include_type:
            self._set(span, TYPE, span.kind)
        for key, name in (
            (LEVEL, "level"),
            (STATUS_MESSAGE, "status_message"),
        ):
            value = fields.get(name)
            if value is not None:
                self._set(span, key, value)
        for key, name in ((INPUT, "input"), (OUTPUT, "output")):
            text = serialized(fields.get(name))
            if text is not None:
                self._set(span, key, text)
        if span.kind == "generation":
            model = fields.get("model")
            if model is not None:
                self._set(span, MODEL, model)
            for key, name in (
                (USAGE, "usage_details"),
                (COST, "cost_details"),
                (COMPLETION_START, "completion_start_time"),
                (MODEL_PARAMETERS, "model_parameters"),
            ):
                text = serialized(fields.get(name))
                if text is not None:
                    self._set(span, key, text)
        self._set_metadata(span, fields.get("metadata"))
        if fields.get("level") == "ERROR":
            span.status_code = wire.STATUS_ERROR
            span.status_message = fields.get("status_message")

    def _propagated(self, context: _Context) -> list[tuple[str, tuple[Any, bytes]]]:
        """The attributes the SDK's span processor copies from the context onto a new span."""
        if context._encoded is None:
            values: list[tuple[str, Any]] = []
            if context.user_id is not None:
                values.append((USER_ID, context.user_id))
            if context.session_id is not None:
                values.append((SESSION_ID, context.session_id))
            for key, value in context.metadata.items():
                values.append((f"{TRACE_METADATA}.{key}", value))
            if context.version is not None:
                values.append((VERSION, context.version))
            if context.tags:
                values.append((TRACE_TAGS, context.tags))
            if context.trace_name is not None:
                values.append((TRACE_NAME, context.trace_name))
            context._encoded = [
                (
                    key,
                    (
                        value,
                        wire.strings_attribute(key, value)
                        if isinstance(value, list)
                        else wire.string_attribute(key, value),
                    ),
                )
                for key, value in values
            ]
        return context._encoded

    def _start_span(
        self,
        context: _Context,
        *,
        span_id: int,
        trace_id: int | None,
        name: str,
        kind: str,
        start_ns: int,
        **fields: Any,
    ) -> _Span:
        parent = context.span
        span = _Span(
            trace_id=parent.trace_id if parent is not None else trace_id or random.getrandbits(128),
            span_id=span_id,
            parent_id=parent.span_id if parent is not None else None,
            name=name,
            start_ns=start_ns,
            kind=kind,
        )
        attributes = span.attributes
        attributes.update(self._propagated(context))
        # The SDK marks a span app root unless its parent is still open or the trace is
        # claimed in the baggage (a step's or run's context).
        if not context.claimed and (parent is None or not parent.open):
            attributes[IS_APP_ROOT] = (True, wire.bool_attribute(IS_APP_ROOT, True))
        self._set(span, TYPE, kind)
        if self._environment is not None:
            self._set(span, ENVIRONMENT, self._environment)
        if self._release is not None:
            self._set(span, RELEASE, self._release)
        self._set_fields(span, include_type=False, **fields)
        return span

    def _update_span(self, span: _Span, **fields: Any) -> None:
        if span.open:
            self._set_fields(span, include_type=True, **fields)

    def _finish(self, span: _Span, end_ns: int) -> None:
        if not span.open:
            return
        span.open = False
        data = self._encode(span, end_ns, [encoded for _, encoded in span.attributes.values()])
        if self.scrubber.may_change(data):
            scrubbed = [self._scrubbed(key, value) for key, (value, _) in span.attributes.items()]
            data = self._encode(span, end_ns, scrubbed)
        self.ended += 1
        self._emit(data)

    def _encode(self, span: _Span, end_ns: int, attributes: list[bytes]) -> bytes:
        return wire.span(
            trace_id=span.trace_id.to_bytes(16, "big"),
            span_id=span.span_id.to_bytes(8, "big"),
            parent_id=span.parent_id.to_bytes(8, "big") if span.parent_id is not None else None,
            name=span.name,
            start_ns=span.start_ns,
            end_ns=end_ns,
            attributes=attributes,
            status_code=span.status_code,
            status_message=span.status_message,
        )

    def _with_tags(self, context: _Context, tags: list[str]) -> _Context:
        """`propagate_attributes(tags=tags)` entered in `context`: the merged tags go on the
        context's current span (when open) and into the new context."""
        valid = [t for t in tags if _short(t)]
        if not valid:
            return context
        merged = _merged(context.tags, valid)
        if context.span is not None and context.span.open:
            self._set_tags(context.span, merged)
        return context.child(tags=merged)

    # --- starts ---

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
        trace_metadata: dict[str, str] = {}
        for key, value in propagated_metadata(scrub, metadata).items():
            if value is not None:
                text = metadata_value(value)
                if len(text) <= PROPAGATED_CHARS:
                    trace_metadata[key] = text
        user = str(user_id) if user_id is not None else None
        session = str(chat_id) if chat_id is not None else None
        name = scrub.text(pipeline)[:PROPAGATED_CHARS]
        version = bot.__version__
        valid_tags = [t for t in run_tags(scrub, pipeline, tags) if _short(t)]
        context = _Context(
            user_id=user if _short(user) else None,
            session_id=session if _short(session) else None,
            metadata=trace_metadata,
            version=version if _short(version) else None,
            tags=_merged(None, valid_tags) if valid_tags else None,
            trace_name=name if _short(name) else None,
        )
        span = self._start_span(
            context,
            span_id=sid,
            trace_id=trace_id,
            name=scrub.text(pipeline),
            kind="span",
            start_ns=start_ns,
            input=scrub.content(input_text),
            metadata=run_metadata(scrub, pipeline, user_id, chat_id, metadata),
        )
        inner = context.child(span=span, claimed=True)
        self._scopes[sid] = _Scope(inner, span, "run", run_context=context)

    def _parent(self, parent: int | None) -> _Context:
        scope = self._scopes.get(parent) if parent is not None else None
        return scope.context if scope is not None else _Context()

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
        if tags is not None:
            # Re-propagated on each step so that tags added during the run (overrides) reach
            # the step, its generations and the root span if it is still open.
            context = self._with_tags(context, scrubbed_tags(scrub, tags))
        span = self._start_span(
            context,
            span_id=sid,
            trace_id=None,
            name=scrub.text(step["agent"]),
            kind="agent",
            start_ns=start_ns,
            metadata=step_metadata(scrub, step),
        )
        inner = context.child(span=span, claimed=True)
        self._scopes[sid] = _Scope(inner, span, "step", step=step)

    def _start_generation(
        self, sid: int, parent: int | None, start_ns: int, call: dict[str, Any]
    ) -> None:
        scrub = self.scrubber
        scope = self._scopes.get(parent) if parent is not None else None
        # A model call belongs to the step it runs in (the bot's innermost step).
        step = scope.step if scope is not None else None
        name, metadata = generation_fields(scrub, call, step)
        span = self._start_span(
            self._parent(parent),
            span_id=sid,
            trace_id=None,
            name=name,
            kind="generation",
            start_ns=start_ns,
            model=scrub.text(call["model"]),
            model_parameters=scrub.value(call["parameters"]),
            input=generation_input(scrub, call),
            metadata=metadata,
        )
        self._generations[sid] = (span, call["model"])

    # --- updates and ends ---

    def _update(self, sid: int, what: str, payload: Any) -> None:
        if what == "first_token":
            found = self._generations.get(sid)
            if found is not None:
                started = datetime.fromtimestamp(payload / 1e9, UTC)
                # `_serialize` of an aware UTC datetime (the SDK's `serialize_datetime`).
                when = json.dumps(started.isoformat().replace("+00:00", "Z"))
                self._update_span(found[0], completion_start_time=when)
        elif what == "output":  # a run's output
            scope = self._scopes.get(sid)
            if scope is not None:
                self._update_span(scope.span, output=self.scrubber.content(payload))

    def _end_run(self, sid: int, scope: _Scope, end_ns: int, payload: Any) -> None:
        span = scope.span
        raw_tags, failure = payload
        if failure is not None:
            level, error = failure
            self._update_span(span, level=level, status_message=error_text(self.scrubber, error))
        # The run's final tags, merged into its own context's, on its root span.
        valid = [t for t in scrubbed_tags(self.scrubber, raw_tags) if _short(t)]
        if valid and span.open:
            assert scope.run_context is not None
            self._set_tags(span, _merged(scope.run_context.tags, valid))
        self._finish(span, end_ns)
        # Steps may still join (background): the context keeps the ended span's ids.
        self._run_ended(sid)

    def _end_step(self, scope: _Scope, end_ns: int, fields: dict[str, Any]) -> None:
        self._update_span(scope.span, **fields)
        self._finish(scope.span, end_ns)

    def _end_generation(self, span: _Span, end_ns: int, fields: dict[str, Any]) -> None:
        self._update_span(span, **fields)
        self._finish(span, end_ns)
