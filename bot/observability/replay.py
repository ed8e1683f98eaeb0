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
import time
from collections import OrderedDict
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
from bot.observability.scrub import REDACTED, Scrubber, truncate

log = logging.getLogger(__name__)

Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]

# A step's output is a summary, not a copy of everything the agent produced.
OUTPUT_SUMMARY_CHARS = 2000
ERROR_CHARS = 1000
# Langfuse drops propagated values longer than 200 characters (user id, tags, metadata...).
PROPAGATED_CHARS = 200
# How long a finished run still takes steps (its background steps start after the reply).
RUN_SCOPE_TTL = 120.0
MAX_ENDED_RUNS = 20_000


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
    ended_at: float | None = None


class Replayer:
    """Applies the bot's records to a Langfuse client. Never raises: a record it cannot apply
    is logged (its type only) and skipped."""

    def __init__(self, client: Langfuse, scrubber: Scrubber, ids: PresetIds) -> None:
        self.client = client
        self.scrubber = scrubber
        self.ids = ids
        self._scopes: dict[int, _Scope] = {}
        self._ended_runs: OrderedDict[int, float] = OrderedDict()
        self._generations: dict[int, tuple[Any, str]] = {}
        self.applied = 0

    # --- dispatch ---

    def apply(self, record: Sequence[Any]) -> None:
        try:
            kind = record[0]
            if kind == "run":
                self._start_run(*record[1:])
            elif kind == "step":
                self._start_step(*record[1:])
            elif kind == "gen":
                self._start_generation(*record[1:])
            elif kind == "end":
                self._end(*record[1:])
            elif kind == "upd":
                self._update(*record[1:])
            elif kind == "secret":
                self.scrubber.add_secret(record[1])
            self.applied += 1
        except Exception as exc:
            _log_problem(f"could not apply a {record[0] if record else 'blank'} record", exc)
        self._forget_old_runs()

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
        tags = _unique([_tag(scrub.text(t)) for t in [pipeline, *tags]])
        trace_metadata: dict[str, Any] = {"bot_version": bot.__version__}
        for key, value in scrub.value(metadata).items():
            # Propagated metadata must be short scalars; the rest goes on the root span only.
            if isinstance(value, str | int | float | bool) and len(str(value)) < 150:
                trace_metadata[key] = value
        context = contextvars.Context()
        stack = ExitStack()

        def enter() -> Any:
            stack.enter_context(
                propagate_attributes(
                    user_id=str(user_id) if user_id is not None else None,
                    session_id=str(chat_id) if chat_id is not None else None,
                    tags=tags,
                    trace_name=_tag(scrub.text(pipeline)),
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
                metadata=scrub.value(
                    {"pipeline": pipeline, "user_id": user_id, "chat_id": chat_id, **metadata}
                ),
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
                stack.enter_context(
                    propagate_attributes(tags=_unique([_tag(scrub.text(t)) for t in tags]))
                )
            self.ids.span_id = sid
            return self._start_current(
                stack,
                name=scrub.text(step["agent"]),
                as_type="agent",
                start_ns=start_ns,
                metadata=scrub.value(
                    {
                        "agent": step["agent"],
                        "kind": step["kind"],
                        "model": step["model"],
                        "source": step["source"],
                        "level": step["source"],
                        "set_by": step["set_by"],
                        "alias": step["alias"],
                        "config_version": step["config_version"],
                        "preference": step["preference"],
                    }
                ),
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
        spec = scrub.text(f"{call['provider']}:{call['model']}")
        is_fallback = call["attempt"] > 0
        is_repair = call["turn"] > 0
        metadata: dict[str, Any] = {
            "provider": call["provider"],
            "spec": spec,
            "streaming": call["streaming"],
            "attempt": call["attempt"],
            "fallback": is_fallback,
            "turn": call["turn"],
        }
        if is_repair:
            metadata["repair"] = True
        if step is not None:
            metadata["agent"] = step["agent"]
            metadata["chosen_model"] = step["model"]
            metadata["chosen_source"] = step["source"]
            metadata["source"] = "fallback" if is_fallback else step["source"]
            metadata["level"] = step["source"]
            if step["set_by"] is not None:
                metadata["set_by"] = step["set_by"]
            if step["preference"] != "any":
                metadata["preference"] = step["preference"]
            # So generations group by configuration, as the call ledger's rows do.
            if step["config_version"] is not None:
                metadata["config_version"] = step["config_version"]
        if call["previous_error"] is not None:
            metadata["fallback_reason"] = self._error_text(("text", call["previous_error"]))
        name = f"{spec} (fallback #{call['attempt']})" if is_fallback else spec
        if is_repair:
            name += " (repair)"
        context = self._parent(parent)

        def start() -> Any:
            self.ids.span_id = sid
            span = self.client._otel_tracer.start_span(name=name, start_time=start_ns)
            return self.client._create_observation_from_otel_span(
                otel_span=span,
                as_type="generation",
                model=scrub.text(call["model"]),
                model_parameters=scrub.value(call["parameters"]),
                input=scrub.content(
                    [{"role": role, "content": content} for role, content in call["messages"]]
                ),
                metadata=scrub.value(metadata),
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

    def _end(self, sid: int, end_ns: int, what: str, payload: Any) -> None:
        found = self._generations.pop(sid, None)
        if found is not None:
            self._end_generation(found[0], found[1], end_ns, what, payload)
            return
        scope = self._scopes.get(sid)
        if scope is None:
            return
        if scope.kind == "run":
            self._end_run(sid, scope, end_ns, what, payload)
        else:
            del self._scopes[sid]
            self._end_step(scope, end_ns, what, payload)

    def _end_run(self, sid: int, scope: _Scope, end_ns: int, what: str, payload: Any) -> None:
        observation = scope.observation
        raw_tags, failure = payload
        if failure is not None:
            level, error = failure
            observation.update(level=level, status_message=self._error_text(error))
        tags = _unique([_tag(self.scrubber.text(t)) for t in raw_tags])

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
        scope.ended_at = time.monotonic()
        self._ended_runs[sid] = scope.ended_at

    def _end_step(self, scope: _Scope, end_ns: int, what: str, payload: Any) -> None:
        observation = scope.observation
        if what == "ok":
            observation.update(output=self._summary(payload), metadata={"success": True})
        elif what == "failed":
            output, error = payload
            observation.update(
                output=self._summary(output),
                level="ERROR",
                status_message=self._error_text(error or ("text", "failed")),
                metadata={"success": False},
            )
        elif what == "fail":
            level, error = payload
            observation.update(
                level=level, status_message=self._error_text(error), metadata={"success": False}
            )
        observation.end(end_time=end_ns)
        scope.context.run(scope.stack.close)

    def _end_generation(
        self, observation: Any, model: str, end_ns: int, what: str, payload: Any
    ) -> None:
        scrub = self.scrubber
        if what == "ok":
            output, usage, cost, latency_ms, finish_reason, response_model = payload
            metadata: dict[str, Any] = {
                "latency_ms": round(latency_ms, 1),
                "finish_reason": finish_reason,
            }
            if response_model and response_model != model:
                metadata["response_model"] = response_model
            observation.update(
                output=scrub.content(output),
                usage_details={"input": usage[0], "output": usage[1], "total": usage[2]},
                cost_details={"total": cost} if cost is not None else None,
                metadata=scrub.value({k: v for k, v in metadata.items() if v is not None}),
            )
        elif what == "fail":
            error, error_type, status, retryable = payload
            observation.update(
                level="ERROR",
                status_message=self._error_text(error),
                metadata={"error_type": error_type, "status": status, "retryable": retryable},
            )
        elif what == "abandon":
            observation.update(level="WARNING", status_message=payload)
        elif what == "superseded":
            reason, usage, cost, latency_ms = payload
            observation.update(
                level="WARNING",
                status_message=reason,
                usage_details=(
                    {"input": usage[0], "output": usage[1], "total": usage[2]}
                    if usage is not None
                    else None
                ),
                cost_details={"total": cost} if cost is not None else None,
                metadata={"latency_ms": round(latency_ms, 1), "superseded": True},
            )
        observation.end(end_time=end_ns)

    def _forget_old_runs(self) -> None:
        ended = self._ended_runs
        if not ended:
            return
        horizon = time.monotonic() - RUN_SCOPE_TTL
        while ended and (len(ended) > MAX_ENDED_RUNS or next(iter(ended.values())) < horizon):
            sid, _ = ended.popitem(last=False)
            self._scopes.pop(sid, None)

    # --- helpers ---

    def _error_text(self, error: Sequence[Any] | None) -> str | None:
        """`("exc", prefix, text)` for an exception (its type and status, and its text);
        `("text", text)` for a message."""
        if error is None:
            return None
        if error[0] == "exc":
            _, prefix, text = error
            if self.scrubber.redact_content:
                return str(prefix)
            text = f"{prefix}: {text}" if text else prefix
        else:
            if self.scrubber.redact_content:
                return f"error ({REDACTED} details)"
            text = error[1]
        return str(truncate(self.scrubber.text(text), ERROR_CHARS))

    def _summary(self, output: Any) -> Any:
        if self.scrubber.redact_content:
            return None if output is None else REDACTED
        return truncate(self.scrubber.value(output), OUTPUT_SUMMARY_CHARS)

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


def _tag(value: str) -> str:
    return value[:PROPAGATED_CHARS]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _log_problem(what: str, exc: BaseException) -> None:
    # Type only: an SDK error's text could quote what it was given.
    log.warning("tracing: %s (%s)", what, type(exc).__name__)
