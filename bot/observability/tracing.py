"""Langfuse tracing: one trace per pipeline run, one span per step, one generation per model call.

The only module that imports langfuse. It plugs into the bot at two seams and nowhere else:

    tracing = create_tracing(settings)                     # off (costs nothing) without keys
    registry = ProviderRegistry(settings, wrap=tracing.wrap_provider)
    runner = PipelineRunner(tracing.observer)
    ...
    url = await tracing.trace_url(trace_id)                # admin `/trace`
    await tracing.score(trace_id, "user_rating", 1.0)      # 👍 / 👎
    await tracing.aclose(timeout=5)                        # on shutdown: flush, bounded

What lands in Langfuse:

    trace  <pipeline>          user id, session id (the chat), tags (pipeline, override:<agent>),
     │                         metadata bot_version; input the user's text, output the reply
     ├─ agent span <agent>     kind, model, source (override/user/agent/pipeline/default),
     │   │                     output summary, or level ERROR and the error
     │   └─ generation <spec>  model, provider, parameters, messages, output, tokens, cost,
     │                         latency; a fallback attempt is its own generation, marked as such,
     │                         with the error that caused it; so is a structured-output repair
     │                         turn ("<spec> (repair)", after the reply that did not validate)
     └─ ... background steps join the same trace after the reply has gone

Never slower for the user: spans are handed to OpenTelemetry's batch processor, which exports
from its own thread; everything that can block (flush, shutdown, the project lookup behind trace
URLs) runs in a daemon thread under a deadline, so an unreachable or hanging Langfuse costs
neither the reply nor a clean shutdown. Every string that leaves goes through a `Scrubber`
(configured secrets, users' keys, anything shaped like a key) twice: when recorded and again in
the exporter. Tracing problems are logged, never raised into the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import httpx
from langfuse import Langfuse, propagate_attributes
from langfuse.types import MaskOtelSpansParams, MaskOtelSpansResult, OtelSpanPatch
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from pydantic import SecretStr

import bot
from bot.config import Settings
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, LLMResponse
from bot.observability.exporter import LangfuseSpanExporter
from bot.observability.scrub import REDACTED, Scrubber, truncate
from bot.observability.traced_provider import GenerationCall, GenerationHandle, TracedProvider
from bot.pipeline.observer import (
    NullObserver,
    PipelineObserver,
    RunHandle,
    RunInfo,
    StepHandle,
    StepInfo,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Level = Literal["DEBUG", "DEFAULT", "WARNING", "ERROR"]

# A step's output is a summary, not a copy of everything the agent produced.
OUTPUT_SUMMARY_CHARS = 2000
ERROR_CHARS = 1000
# Langfuse drops propagated values longer than 200 characters (user id, tags, metadata...).
PROPAGATED_CHARS = 200


@dataclass(slots=True)
class _RunState:
    tags: list[str]


# The run and step a piece of code is in. Tasks created inside (parallel and background steps)
# copy them, which is how a background step still knows its run after the reply.
_RUN: ContextVar[_RunState | None] = ContextVar("tracing_run", default=None)
_STEP: ContextVar[StepInfo | None] = ContextVar("tracing_step", default=None)


def create_tracing(settings: Settings, **options: Any) -> Tracing:
    """The bot's tracing: Langfuse when both keys are set, a do-nothing object otherwise."""
    return Tracing.from_settings(settings, **options)


class Tracing:
    """Langfuse tracing, or nothing at all when `LANGFUSE_PUBLIC_KEY`/`SECRET_KEY` are unset.

    Implements `PipelineObserver` (`run`, `step`) and records generations for `TracedProvider`.
    Create one per process: the SDK keeps one client per public key.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        flush_interval: float | None = None,
        flush_at: int | None = None,
        export_timeout: float = 5.0,
    ) -> None:
        """`flush_interval` (s) and `flush_at` (spans) tune the batching (SDK defaults: 5 s,
        512); `export_timeout` (s) bounds each export of spans to Langfuse, retries included,
        and each of its API requests (scores, the project lookup)."""
        self.scrubber = Scrubber(
            settings.secrets(), redact_content=settings.langfuse_redact_content
        )
        self.base_url = settings.langfuse_base_url
        self._null = NullObserver()
        self._closed = False
        self._client: Langfuse | None = None
        self._provider: TracerProvider | None = None
        self._http: httpx.Client | None = None
        self._exporter: LangfuseSpanExporter | None = None
        self._counter = _SpanCounter()
        self._public_key = settings.langfuse_public_key
        if self._public_key is None or settings.langfuse_secret_key is None:
            return  # tracing off: no client, no threads, nothing wrapped
        try:
            self._start_client(
                self._public_key,
                settings.langfuse_secret_key.get_secret_value(),
                flush_interval,
                flush_at,
                export_timeout,
            )
        except Exception as exc:
            # A tracing that cannot start must not stop the bot: it runs untraced, and says so.
            log.error("tracing is off: the Langfuse client did not start (%s)", type(exc).__name__)
            if self._http is not None:
                self._http.close()
            if self._exporter is not None:
                self._exporter.shutdown()
            self._client, self._provider, self._http, self._exporter = None, None, None, None

    def _start_client(
        self,
        public_key: str,
        secret_key: str,
        flush_interval: float | None,
        flush_at: int | None,
        export_timeout: float,
    ) -> None:
        self._provider = TracerProvider(
            resource=Resource.create(_resource_attributes()),
            shutdown_on_exit=False,
        )
        self._provider.add_span_processor(self._counter)
        self._http = httpx.Client(timeout=export_timeout)
        self._exporter = LangfuseSpanExporter(
            base_url=self.base_url,
            public_key=public_key,
            secret_key=secret_key,
            timeout=export_timeout,
        )
        self._client = Langfuse(
            public_key=public_key,
            secret_key=secret_key,
            base_url=self.base_url,
            # The SDK takes whole seconds; our exporter and httpx client carry the real timeout.
            timeout=max(1, round(export_timeout)),
            httpx_client=self._http,
            span_exporter=self._exporter,
            flush_at=flush_at,
            flush_interval=flush_interval,
            release=bot.__version__,
            # Our own provider, not the global one: other libraries' OpenTelemetry spans (the
            # anthropic SDK emits its own) stay out of Langfuse and the bot's traces.
            tracer_provider=self._provider,
            mask_otel_spans=self._mask_spans,
            media_upload_thread_count=1,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Tracing:
        return cls(settings, **options)

    @property
    def enabled(self) -> bool:
        return self._client is not None and not self._closed

    @property
    def client(self) -> Langfuse | None:
        """The Langfuse client (None when tracing is off); for tests and diagnostics."""
        return self._client

    @property
    def spans_made(self) -> int:
        """Spans ended so far (each one is exported): what the receiver should count."""
        return self._counter.ended

    @property
    def observer(self) -> PipelineObserver:
        """What the runner gets: this object, or a `NullObserver` when tracing is off."""
        return self if self._client is not None else self._null

    def add_secret(self, secret: str | None) -> None:
        """Never let `secret` (e.g. a user's own API key) reach a trace."""
        self.scrubber.add_secret(secret)

    # --- providers ---

    def wrap_provider(self, provider: LLMProvider) -> LLMProvider:
        """For `ProviderRegistry(wrap=...)`: one generation per call of this leaf provider."""
        if self._client is None or isinstance(provider, TracedProvider):
            return provider
        self._learn_key(provider)
        return TracedProvider(provider, self)

    def _learn_key(self, provider: LLMProvider) -> None:
        # A leaf provider built with a user's own key holds it (itself or in its SDK client,
        # whose `api_key` the openai and anthropic SDKs expose); that key must never reach a
        # trace either (providers' errors like to quote the key they were given).
        holders = [provider, getattr(provider, "_client", None), getattr(provider, "client", None)]
        for holder in holders:
            for name in ("api_key", "_api_key"):
                value = getattr(holder, name, None) if holder is not None else None
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                if isinstance(value, str):
                    self.scrubber.add_secret(value)

    def start_generation(
        self, call: GenerationCall, *, started_at: float | None = None
    ) -> GenerationHandle:
        client = self._client
        if client is None or self._closed:
            return _NULL_GENERATION
        try:
            spec = self.scrubber.text(f"{call.provider}:{call.model}")
            step = _STEP.get()
            metadata: dict[str, Any] = {
                "provider": call.provider,
                "spec": spec,
                "streaming": call.streaming,
                "attempt": call.attempt,
                "fallback": call.is_fallback,
                "turn": call.turn,
            }
            if call.is_repair:
                metadata["repair"] = True
            if step is not None:
                metadata["agent"] = step.agent
                metadata["chosen_model"] = step.model
                metadata["chosen_source"] = step.source
                metadata["source"] = "fallback" if call.is_fallback else step.source
                metadata["level"] = step.source
                if step.set_by is not None:
                    metadata["set_by"] = step.set_by
                if step.preference != "any":
                    metadata["preference"] = step.preference
                # So generations group by configuration, as the call ledger's rows do.
                if step.config_version is not None:
                    metadata["config_version"] = step.config_version
            if call.previous_error is not None:
                metadata["fallback_reason"] = self._error_text(call.previous_error)
            name = f"{spec} (fallback #{call.attempt})" if call.is_fallback else spec
            if call.is_repair:
                name += " (repair)"
            observation = _start_generation(
                client,
                started_at,
                name=name,
                model=self.scrubber.text(call.model),
                model_parameters=self.scrubber.value(call.parameters),
                input=self.scrubber.content(
                    [{"role": m.role, "content": m.content} for m in call.messages]
                ),
                metadata=self.scrubber.value(metadata),
            )
        except Exception as exc:
            _log_problem("could not start a generation", exc)
            return _NULL_GENERATION
        return _Generation(self, observation, call.model)

    # --- PipelineObserver ---

    @contextmanager
    def run(self, info: RunInfo) -> Iterator[RunHandle]:
        client = self._client
        if client is None or self._closed:
            with self._null.run(info) as null_handle:
                yield null_handle
            return
        stack = ExitStack()
        handle: _TraceRun | None = None
        try:
            handle = self._open_run(client, info, stack)
        except Exception as exc:
            _log_problem("could not open the run trace", exc)
            _close_quietly(stack)
        if handle is None:
            with self._null.run(info) as null_handle:
                yield null_handle
            return
        try:
            yield handle
        except BaseException as exc:
            handle.fail(exc)
            handle.finish()
            _close_quietly(stack)
            raise
        handle.finish()
        _close_quietly(stack)

    def _open_run(self, client: Langfuse, info: RunInfo, stack: ExitStack) -> _TraceRun:
        scrub = self.scrubber
        tags = _unique([_tag(scrub.text(t)) for t in [info.pipeline, *info.tags]])
        trace_metadata: dict[str, Any] = {"bot_version": bot.__version__}
        for key, value in scrub.value(info.metadata).items():
            # Propagated metadata must be short scalars; the rest goes on the root span only.
            if isinstance(value, str | int | float | bool) and len(str(value)) < 150:
                trace_metadata[key] = value
        stack.enter_context(
            propagate_attributes(
                user_id=str(info.user_id) if info.user_id is not None else None,
                session_id=str(info.chat_id) if info.chat_id is not None else None,
                tags=tags,
                trace_name=_tag(scrub.text(info.pipeline)),
                metadata=trace_metadata,
                version=bot.__version__,
            )
        )
        span = stack.enter_context(
            client.start_as_current_observation(
                name=scrub.text(info.pipeline),
                as_type="span",
                input=scrub.content(info.input_text),
                metadata=scrub.value(
                    {
                        "pipeline": info.pipeline,
                        "user_id": info.user_id,
                        "chat_id": info.chat_id,
                        **info.metadata,
                    }
                ),
            )
        )
        state = _RunState(tags=tags)
        token = _RUN.set(state)
        stack.callback(_RUN.reset, token)
        return _TraceRun(self, span, state)

    @contextmanager
    def step(self, info: StepInfo) -> Iterator[StepHandle]:
        client = self._client
        if client is None or self._closed:
            with self._null.step(info) as null_handle:
                yield null_handle
            return
        stack = ExitStack()
        handle: _TraceStep | None = None
        try:
            handle = self._open_step(client, info, stack)
        except Exception as exc:
            _log_problem("could not open a step span", exc)
            _close_quietly(stack)
        if handle is None:
            with self._null.step(info) as null_handle:
                yield null_handle
            return
        try:
            yield handle
        except BaseException as exc:
            handle.fail(exc)
            _close_quietly(stack)
            raise
        _close_quietly(stack)

    def _open_step(self, client: Langfuse, info: StepInfo, stack: ExitStack) -> _TraceStep:
        scrub = self.scrubber
        state = _RUN.get()
        if state is not None:
            if info.source == "override":
                _add_tags(state, [f"override:{info.agent}"])
            # Re-propagated on each step so that tags added during the run (overrides) reach
            # the step, its generations and the root span if it is still open.
            stack.enter_context(propagate_attributes(tags=list(state.tags)))
        span = stack.enter_context(
            client.start_as_current_observation(
                name=scrub.text(info.agent),
                as_type="agent",
                metadata=scrub.value(
                    {
                        "agent": info.agent,
                        "kind": info.kind,
                        "model": info.model,
                        "source": info.source,
                        "level": info.source,
                        "set_by": info.set_by,
                        "alias": info.alias,
                        "config_version": info.config_version,
                        "preference": info.preference,
                    }
                ),
            )
        )
        token = _STEP.set(info)
        stack.callback(_STEP.reset, token)
        return _TraceStep(self, span)

    # --- trace review ---

    async def trace_url(self, trace_id: str | None, *, timeout: float = 3.0) -> str | None:
        """The Langfuse UI link of a trace, for the admin `/trace` command; None when tracing
        is off or Langfuse cannot be asked for the project id (looked up once, off the loop)."""
        client = self._client
        if client is None or self._closed or not trace_id:
            return None
        ok, url = await _off_loop(
            lambda: client.get_trace_url(trace_id=trace_id), timeout, "langfuse-trace-url"
        )
        return url if ok else None

    async def score(
        self,
        trace_id: str | None,
        name: str,
        value: float | bool,
        comment: str | None = None,
        *,
        score_id: str | None = None,
    ) -> bool:
        """Record a score (a user's 👍/👎) on a trace. Queued and sent by the SDK's own thread;
        False when tracing is off or there is no trace. Langfuse keeps one score per
        `score_id`: recording the same id again replaces it instead of adding one."""
        client = self._client
        if client is None or self._closed or not trace_id:
            return False
        try:
            client.create_score(
                name=name,
                value=float(value),
                trace_id=trace_id,
                score_id=score_id,
                data_type="BOOLEAN" if isinstance(value, bool) else "NUMERIC",
                comment=self.scrubber.text(comment) if comment else None,
            )
        except Exception as exc:
            _log_problem("could not record a score", exc)
            return False
        return True

    # --- lifecycle ---

    async def flush(self, *, timeout: float = 5.0) -> bool:
        """Send what is buffered now (off the loop). False if Langfuse did not take it in time."""
        client = self._client
        if client is None or self._closed:
            return True
        ok, _ = await _off_loop(client.flush, timeout, "langfuse-flush")
        return ok

    async def aclose(self, *, timeout: float = 5.0) -> bool:
        """Flush and shut down within `timeout` seconds; True if everything was delivered.

        Past the deadline the bot goes on shutting down: the SDK's threads are daemons, bounded
        by their request timeout, and hold nothing the bot needs.
        """
        client, provider, http = self._client, self._provider, self._http
        if client is None or self._closed:
            return True
        self._closed = True

        def shutdown() -> None:
            client.shutdown()  # flushes spans and scores, stops the SDK's threads
            if provider is not None:
                provider.shutdown()  # stops the batch worker, closes the exporter's session

        ok, _ = await _off_loop(shutdown, timeout, "langfuse-shutdown")
        if not ok:
            log.warning(
                "Langfuse did not take the last traces within %.1fs; shutting down without them",
                timeout,
            )
            # Cut the SDK's shutdown short: pending exports fail at once, a request in flight
            # ends, and the score thread's client refuses further requests.
            if self._exporter is not None:
                self._exporter.abort()
        self._release_public_key()
        if http is not None:
            http.close()
        return ok

    def _release_public_key(self) -> None:
        """Let a later client with the same key start fresh (the SDK caches one per key)."""
        try:
            from langfuse._client.resource_manager import LangfuseResourceManager

            with LangfuseResourceManager._lock:
                instances = LangfuseResourceManager._instances
                resources = getattr(self._client, "_resources", None)
                if self._public_key and instances.get(self._public_key) is resources:
                    instances.pop(self._public_key, None)
        except Exception as exc:  # a private corner of the SDK; losing it only costs reuse
            log.debug("could not release the Langfuse client for reuse: %s", type(exc).__name__)

    # --- helpers ---

    def _error_text(self, error: BaseException | str | None) -> str | None:
        if error is None:
            return None
        if isinstance(error, BaseException):
            status = getattr(error, "status", None)
            prefix = type(error).__name__ + (f" [{status}]" if status else "")
            if self.scrubber.redact_content:
                return prefix
            text = str(error)
            text = f"{prefix}: {text}" if text else prefix
        else:
            if self.scrubber.redact_content:
                return f"error ({REDACTED} details)"
            text = error
        return str(truncate(self.scrubber.text(text), ERROR_CHARS))

    def _summary(self, output: Any) -> Any:
        if self.scrubber.redact_content:
            return None if output is None else REDACTED
        return truncate(self.scrubber.value(output), OUTPUT_SUMMARY_CHARS)

    def _mask_spans(self, *, params: MaskOtelSpansParams) -> MaskOtelSpansResult | None:
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


class _SpanCounter(SpanProcessor):
    """Counts the spans our provider ends, so a benchmark can compare them with what arrived."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


class _TraceRun:
    """`RunHandle` of an open trace."""

    def __init__(self, tracing: Tracing, span: Any, state: _RunState) -> None:
        self._tracing = tracing
        self._span = span
        self._state = state
        self._failed = False

    @property
    def trace_id(self) -> str | None:
        trace_id = getattr(self._span, "trace_id", None)
        return trace_id if isinstance(trace_id, str) else None

    def add_tags(self, *tags: str) -> None:
        _add_tags(self._state, [_tag(self._tracing.scrubber.text(t)) for t in tags])

    def set_output(self, output: Any) -> None:
        try:
            self._span.update(output=self._tracing.scrubber.content(output))
        except Exception as exc:
            _log_problem("could not record the run's output", exc)

    def fail(self, error: BaseException) -> None:
        try:
            level: Level = "ERROR" if isinstance(error, Exception) else "WARNING"
            self._span.update(level=level, status_message=self._tracing._error_text(error))
        except Exception as exc:
            _log_problem("could not record the run's error", exc)

    def finish(self) -> None:
        # The root span is current here: this puts the tags added during the run on it.
        try:
            with propagate_attributes(tags=list(self._state.tags)):
                pass
        except Exception as exc:
            _log_problem("could not record the run's tags", exc)


class _TraceStep:
    """`StepHandle` of an open step span."""

    def __init__(self, tracing: Tracing, span: Any) -> None:
        self._tracing = tracing
        self._span = span
        self._recorded = False

    def set_result(self, *, success: bool, output: Any = None, error: str | None = None) -> None:
        self._recorded = True
        try:
            if success:
                self._span.update(output=self._tracing._summary(output), metadata={"success": True})
            else:
                self._span.update(
                    output=self._tracing._summary(output),
                    level="ERROR",
                    status_message=self._tracing._error_text(error or "failed"),
                    metadata={"success": False},
                )
        except Exception as exc:
            _log_problem("could not record a step's result", exc)

    def fail(self, error: BaseException) -> None:
        if self._recorded:
            return
        try:
            level: Level = "ERROR" if isinstance(error, Exception) else "WARNING"
            self._span.update(
                level=level,
                status_message=self._tracing._error_text(error),
                metadata={"success": False},
            )
        except Exception as exc:
            _log_problem("could not record a step's error", exc)


class _Generation:
    """One model call; ended exactly once, whatever happens."""

    def __init__(self, tracing: Tracing, observation: Any, model: str) -> None:
        self._tracing = tracing
        self._observation = observation
        self._model = model
        self._ended = False

    def first_token(self) -> None:
        try:
            self._observation.update(completion_start_time=datetime.now(UTC))
        except Exception as exc:
            _log_problem("could not record the first token", exc)

    def succeed(self, response: LLMResponse) -> None:
        if self._ended:
            return
        self._ended = True
        scrub = self._tracing.scrubber
        try:
            usage = response.usage
            output: Any = response.parsed if response.parsed is not None else response.text
            metadata: dict[str, Any] = {
                "latency_ms": round(response.latency_ms, 1),
                "finish_reason": response.finish_reason,
            }
            if response.model and response.model != self._model:
                metadata["response_model"] = response.model
            self._observation.update(
                output=scrub.content(output),
                usage_details={
                    "input": usage.prompt_tokens,
                    "output": usage.completion_tokens,
                    "total": usage.total_tokens,
                },
                cost_details={"total": usage.cost} if usage.cost is not None else None,
                metadata=scrub.value({k: v for k, v in metadata.items() if v is not None}),
            )
        except Exception as exc:
            _log_problem("could not record a generation's result", exc)
        self._end()

    def fail(self, error: BaseException) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._observation.update(
                level="ERROR",
                status_message=self._tracing._error_text(error),
                metadata={
                    "error_type": type(error).__name__,
                    "status": getattr(error, "status", None),
                    "retryable": getattr(error, "retryable", None),
                },
            )
        except Exception as exc:
            _log_problem("could not record a generation's error", exc)
        self._end()

    def abandon(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._observation.update(level="WARNING", status_message=reason)
        except Exception as exc:
            _log_problem("could not record an abandoned generation", exc)
        self._end()

    def superseded(self, call: Attempt, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            usage = call.usage
            self._observation.update(
                level="WARNING",
                status_message=reason,
                usage_details=(
                    {
                        "input": usage.prompt_tokens,
                        "output": usage.completion_tokens,
                        "total": usage.total_tokens,
                    }
                    if usage is not None
                    else None
                ),
                cost_details=(
                    {"total": usage.cost} if usage is not None and usage.cost is not None else None
                ),
                metadata={"latency_ms": round(call.latency_ms, 1), "superseded": True},
            )
        except Exception as exc:
            _log_problem("could not record a superseded generation", exc)
        # It ended when its call did, not now (the next call has run since).
        ended_at = call.started_at + call.latency_ms / 1000 if call.started_at else None
        self._end(ended_at)

    def _end(self, ended_at: float | None = None) -> None:
        try:
            if ended_at is None:
                self._observation.end()
            else:
                self._observation.end(end_time=int(ended_at * 1e9))
        except Exception as exc:
            _log_problem("could not end a generation", exc)


class _NullGeneration:
    def first_token(self) -> None:
        pass

    def succeed(self, response: LLMResponse) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        pass

    def abandon(self, reason: str) -> None:
        pass

    def superseded(self, call: Attempt, reason: str) -> None:
        pass


_NULL_GENERATION = _NullGeneration()


def _start_generation(client: Langfuse, started_at: float | None, **fields: Any) -> Any:
    """`client.start_observation(as_type="generation", ...)`, begun at `started_at` (time.time())
    when given. The SDK's public call always starts now; a call that is recorded after the fact
    (a repair turn) needs its real start, which only the SDK's own two steps (start an
    OpenTelemetry span, wrap it as a generation) can set. Should a new SDK drop them, the
    generation starts now: its timing is off, nothing else."""
    if started_at is not None:
        tracer = getattr(client, "_otel_tracer", None)
        wrap = getattr(client, "_create_observation_from_otel_span", None)
        if tracer is not None and wrap is not None:
            span = tracer.start_span(name=fields["name"], start_time=int(started_at * 1e9))
            fields = {key: value for key, value in fields.items() if key != "name"}
            return wrap(otel_span=span, as_type="generation", **fields)
    return client.start_observation(as_type="generation", **fields)


def _resource_attributes() -> dict[str, str]:
    attributes = {"service.name": "coach-bot", "langfuse.release": bot.__version__}
    environment = os.environ.get("LANGFUSE_TRACING_ENVIRONMENT")
    if environment:
        attributes["langfuse.environment"] = environment
    return attributes


def _tag(value: str) -> str:
    return value[:PROPAGATED_CHARS]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _add_tags(state: _RunState, tags: list[str]) -> None:
    for tag in tags:
        if tag and tag not in state.tags:
            state.tags.append(tag)


def _close_quietly(stack: AbstractContextManager[Any] | ExitStack) -> None:
    try:
        stack.__exit__(None, None, None)
    except Exception as exc:
        _log_problem("could not close a span", exc)


def _log_problem(what: str, exc: BaseException) -> None:
    # Type only: an SDK error's text could quote what it was given.
    log.warning("tracing: %s (%s)", what, type(exc).__name__)


async def _off_loop(fn: Callable[[], T], timeout: float, name: str) -> tuple[bool, T | None]:
    """Run blocking `fn` in a daemon thread; wait at most `timeout` seconds for it.

    Not `asyncio.to_thread`: the default executor's threads are joined at exit, so a request
    hanging on an unreachable Langfuse would hold the process; a daemon thread does not.
    Returns (finished without error, result).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, T | None]] = loop.create_future()

    def deliver(outcome: tuple[bool, T | None]) -> None:
        if not done.done():
            done.set_result(outcome)

    def work() -> None:
        outcome: tuple[bool, T | None]
        try:
            outcome = (True, fn())
        except Exception as exc:
            _log_problem(f"{name} failed", exc)
            outcome = (False, None)
        # RuntimeError: the loop has closed, nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, outcome)

    threading.Thread(target=work, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        return False, None
