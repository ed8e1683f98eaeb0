"""Langfuse tracing: one trace per pipeline run, one span per step, one generation per model call.

The only module (with `replay` and `export_child`) that knows langfuse. It plugs into the bot at
two seams and nowhere else:

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

Cheap on the event loop (decision 0019): the loop only notes what happened, as plain records
(ids, times, the values as given), and hands them to the export process
(`bot.observability.export_process`), where the Langfuse SDK makes the observations
(`bot.observability.replay`), scrubs every value, and exports. Span and trace ids are made here,
so a run's trace id is known at once. Scores and the project lookup behind trace URLs stay in
this process (rare, and they answer the bot). Everything that can block (flush, shutdown, the
lookup) runs in a daemon thread under a deadline, so an unreachable or hanging Langfuse costs
neither the reply nor a clean shutdown. Every string that leaves goes through a `Scrubber`
(configured secrets, users' keys, anything shaped like a key) twice, both in the export process:
before the SDK sees it and again at export. Tracing problems are logged, never raised into the
bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import httpx
from langfuse import Langfuse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from pydantic import SecretStr

import bot
from bot.config import Settings
from bot.llm.protocol import LLMProvider
from bot.llm.types import Attempt, LLMResponse
from bot.observability.export_process import SpanPipe
from bot.observability.exporter import LangfuseSpanExporter
from bot.observability.scrub import Scrubber, jsonable
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


@dataclass(slots=True)
class _RunState:
    sid: int
    trace_id: int
    # As given (the export process scrubs them): the pipeline, the run's tags, those added.
    tags: list[str]


@dataclass(slots=True)
class _StepState:
    sid: int


# The run and step a piece of code is in. Tasks created inside (parallel and background steps)
# copy them, which is how a background step still knows its run after the reply.
_RUN: ContextVar[_RunState | None] = ContextVar("tracing_run", default=None)
_STEP: ContextVar[_StepState | None] = ContextVar("tracing_step", default=None)


def create_tracing(settings: Settings, **options: Any) -> Tracing:
    """The bot's tracing: Langfuse when both keys are set, a do-nothing object otherwise."""
    return Tracing.from_settings(settings, **options)


def _new_id(bits: int) -> int:
    return random.getrandbits(bits) or 1


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
        self._pipe: SpanPipe | None = None
        self._spans = 0
        self._public_key = settings.langfuse_public_key
        if self._public_key is None or settings.langfuse_secret_key is None:
            return  # tracing off: no client, no threads, nothing wrapped
        secret_key = settings.langfuse_secret_key.get_secret_value()
        try:
            self._start_client(self._public_key, secret_key, export_timeout)
            self._pipe = SpanPipe(
                {
                    "public_key": self._public_key,
                    "secret_key": secret_key,
                    "base_url": self.base_url,
                    "export_timeout": export_timeout,
                    "flush_at": flush_at,
                    "flush_interval": flush_interval,
                    "release": bot.__version__,
                    "resource": _resource_attributes(),
                    "secrets": sorted(self.scrubber.secrets),
                    "redact_content": self.scrubber.redact_content,
                    "export": settings.langfuse_export,
                }
            )
        except Exception as exc:
            # A tracing that cannot start must not stop the bot: it runs untraced, and says so.
            log.error("tracing is off: the Langfuse client did not start (%s)", type(exc).__name__)
            if self._http is not None:
                self._http.close()
            if self._exporter is not None:
                self._exporter.shutdown()
            self._client, self._provider, self._http, self._exporter = None, None, None, None

    def _start_client(self, public_key: str, secret_key: str, export_timeout: float) -> None:
        """The in-process client: scores and the project lookup (spans go to the export
        process, so its span processor stays idle)."""
        self._provider = TracerProvider(
            resource=Resource.create(_resource_attributes()),
            shutdown_on_exit=False,
        )
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
            release=bot.__version__,
            # Our own provider, not the global one: other libraries' OpenTelemetry spans (the
            # anthropic SDK emits its own) stay out of Langfuse and the bot's traces.
            tracer_provider=self._provider,
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
        """The in-process Langfuse client (None when tracing is off): scores, trace URLs."""
        return self._client

    @property
    def exporter_pid(self) -> int | None:
        """The export process's pid (None when tracing is off); for tests and diagnostics."""
        return self._pipe.pid if self._pipe is not None else None

    @property
    def spans_made(self) -> int:
        """Spans recorded so far (each one is exported): what the receiver should count."""
        return self._spans

    @property
    def observer(self) -> PipelineObserver:
        """What the runner gets: this object, or a `NullObserver` when tracing is off."""
        return self if self._client is not None else self._null

    def add_secret(self, secret: str | None) -> None:
        """Never let `secret` (e.g. a user's own API key) reach a trace."""
        if not secret or secret in self.scrubber.secrets:
            return
        self.scrubber.add_secret(secret)
        # Before any record that could hold it: the pipe keeps the order.
        self._send(("secret", secret))

    def _send(self, record: Any) -> bool:
        pipe = self._pipe
        if pipe is None or self._closed:
            return False
        try:
            pipe.send(record)
        except ValueError:
            # Something marshal cannot carry (a model, a dataclass): plain data, then again.
            pipe.send(jsonable(record))
        return True

    def _recording(self) -> bool:
        return self._pipe is not None and not self._closed

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
                    self.add_secret(value)

    def start_generation(
        self, call: GenerationCall, *, started_at: float | None = None
    ) -> GenerationHandle:
        if not self._recording():
            return _NULL_GENERATION
        try:
            step, run = _STEP.get(), _RUN.get()
            parent = step.sid if step is not None else run.sid if run is not None else None
            sid = _new_id(64)
            start_ns = int(started_at * 1e9) if started_at is not None else time.time_ns()
            record = (
                "gen",
                sid,
                parent,
                start_ns,
                {
                    "provider": call.provider,
                    "model": call.model,
                    "messages": [(m.role, m.content) for m in call.messages],
                    "parameters": call.parameters,
                    "streaming": call.streaming,
                    "attempt": call.attempt,
                    "previous_error": call.previous_error,
                    "turn": call.turn,
                },
            )
            if not self._send(record):
                return _NULL_GENERATION
        except Exception as exc:
            _log_problem("could not start a generation", exc)
            return _NULL_GENERATION
        return _Generation(self, sid)

    # --- PipelineObserver ---

    @contextmanager
    def run(self, info: RunInfo) -> Iterator[RunHandle]:
        if not self._recording():
            with self._null.run(info) as null_handle:
                yield null_handle
            return
        handle: _TraceRun | None = None
        try:
            state = _RunState(_new_id(64), _new_id(128), [info.pipeline, *info.tags])
            record = (
                "run",
                state.sid,
                state.trace_id,
                time.time_ns(),
                info.pipeline,
                list(info.tags),
                info.user_id,
                info.chat_id,
                info.input_text,
                info.metadata,
            )
            if self._send(record):
                handle = _TraceRun(self, state)
        except Exception as exc:
            _log_problem("could not open the run trace", exc)
        if handle is None:
            with self._null.run(info) as null_handle:
                yield null_handle
            return
        token = _RUN.set(handle.state)
        try:
            yield handle
        except BaseException as exc:
            handle.fail(exc)
            handle.finish()
            raise
        finally:
            _RUN.reset(token)
        handle.finish()

    @contextmanager
    def step(self, info: StepInfo) -> Iterator[StepHandle]:
        if not self._recording():
            with self._null.step(info) as null_handle:
                yield null_handle
            return
        handle: _TraceStep | None = None
        try:
            run, outer = _RUN.get(), _STEP.get()
            tags: list[str] | None = None
            if run is not None:
                if info.source == "override":
                    _add_tags(run, [f"override:{info.agent}"])
                tags = list(run.tags)
            parent = outer.sid if outer is not None else run.sid if run is not None else None
            sid = _new_id(64)
            fields = {
                "agent": info.agent,
                "kind": info.kind,
                "model": info.model,
                "source": info.source,
                "set_by": info.set_by,
                "alias": info.alias,
                "config_version": info.config_version,
                "preference": info.preference,
            }
            if self._send(("step", sid, parent, time.time_ns(), fields, tags)):
                handle = _TraceStep(self, sid)
        except Exception as exc:
            _log_problem("could not open a step span", exc)
        if handle is None:
            with self._null.step(info) as null_handle:
                yield null_handle
            return
        token = _STEP.set(_StepState(handle.sid))
        try:
            yield handle
        except BaseException as exc:
            handle.fail(exc)
            handle.end()
            raise
        finally:
            _STEP.reset(token)
        handle.end()

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
        client, pipe = self._client, self._pipe
        if client is None or self._closed:
            return True

        def flush() -> bool:
            delivered = pipe.flush(timeout) if pipe is not None else True
            client.flush()  # scores
            return delivered

        ok, delivered = await _off_loop(flush, timeout, "langfuse-flush")
        return ok and bool(delivered)

    async def aclose(self, *, timeout: float = 5.0) -> bool:
        """Flush and shut down within `timeout` seconds; True if everything was delivered.

        Past the deadline the bot goes on shutting down: the SDK's threads are daemons, bounded
        by their request timeout, and hold nothing the bot needs.
        """
        client, provider, http, pipe = self._client, self._provider, self._http, self._pipe
        if client is None or self._closed:
            return True
        self._closed = True
        deadline = time.monotonic() + timeout

        def shutdown() -> bool:
            # The export process takes what is left, exports it and exits; past the deadline
            # it is killed. Either way it is reaped.
            delivered = pipe.close(max(0.0, deadline - time.monotonic())) if pipe else True
            client.shutdown()  # flushes scores, stops the SDK's threads
            if provider is not None:
                provider.shutdown()  # stops the idle batch worker, closes the exporter
            return delivered

        finished, delivered = await _off_loop(shutdown, timeout, "langfuse-shutdown")
        ok = finished and bool(delivered)
        if not ok:
            log.warning(
                "Langfuse did not take the last traces within %.1fs; shutting down without them",
                timeout,
            )
            # Cut the SDK's shutdown short: pending exports fail at once, a request in flight
            # ends, and the score thread's client refuses further requests.
            if self._exporter is not None:
                self._exporter.abort()
            if pipe is not None:
                pipe.kill()
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

    def _end(self, record: Any) -> None:
        """Send a span's last record: it is made (and counted) once this is sent."""
        if self._send(record):
            self._spans += 1


def _error(error: BaseException | str | None) -> tuple[str, ...] | None:
    """An error as the export process words it: ("exc", type [status], text) or ("text", text)."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        status = getattr(error, "status", None)
        return ("exc", type(error).__name__ + (f" [{status}]" if status else ""), str(error))
    return ("text", error)


def _level(error: BaseException) -> Level:
    return "ERROR" if isinstance(error, Exception) else "WARNING"


class _TraceRun:
    """`RunHandle` of an open trace."""

    def __init__(self, tracing: Tracing, state: _RunState) -> None:
        self._tracing = tracing
        self.state = state
        self._failure: tuple[Level, tuple[str, ...] | None] | None = None
        self._finished = False

    @property
    def trace_id(self) -> str | None:
        return f"{self.state.trace_id:032x}"

    def add_tags(self, *tags: str) -> None:
        _add_tags(self.state, list(tags))

    def set_output(self, output: Any) -> None:
        try:
            self._tracing._send(("upd", self.state.sid, "output", output))
        except Exception as exc:
            _log_problem("could not record the run's output", exc)

    def fail(self, error: BaseException) -> None:
        self._failure = (_level(error), _error(error))

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            payload = (list(self.state.tags), self._failure)
            self._tracing._end(("end", self.state.sid, time.time_ns(), "run", payload))
        except Exception as exc:
            _log_problem("could not close the run", exc)


class _TraceStep:
    """`StepHandle` of an open step span."""

    def __init__(self, tracing: Tracing, sid: int) -> None:
        self._tracing = tracing
        self.sid = sid
        self._result: tuple[str, Any] = ("none", None)
        self._recorded = False

    def set_result(self, *, success: bool, output: Any = None, error: str | None = None) -> None:
        self._recorded = True
        if success:
            self._result = ("ok", output)
        else:
            self._result = ("failed", (output, _error(error or "failed")))

    def fail(self, error: BaseException) -> None:
        if self._recorded:
            return
        self._result = ("fail", (_level(error), _error(error)))

    def end(self) -> None:
        what, payload = self._result
        try:
            self._tracing._end(("end", self.sid, time.time_ns(), what, payload))
        except Exception as exc:
            _log_problem("could not close a step span", exc)


class _Generation:
    """One model call; ended exactly once, whatever happens."""

    def __init__(self, tracing: Tracing, sid: int) -> None:
        self._tracing = tracing
        self._sid = sid
        self._ended = False

    def first_token(self) -> None:
        try:
            self._tracing._send(("upd", self._sid, "first_token", time.time_ns()))
        except Exception as exc:
            _log_problem("could not record the first token", exc)

    def succeed(self, response: LLMResponse) -> None:
        usage = response.usage
        output: Any = response.parsed if response.parsed is not None else response.text
        self._end(
            "ok",
            (
                output,
                (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
                usage.cost,
                response.latency_ms,
                response.finish_reason,
                response.model,
            ),
        )

    def fail(self, error: BaseException) -> None:
        self._end(
            "fail",
            (
                _error(error),
                type(error).__name__,
                getattr(error, "status", None),
                getattr(error, "retryable", None),
            ),
        )

    def abandon(self, reason: str) -> None:
        self._end("abandon", reason)

    def superseded(self, call: Attempt, reason: str) -> None:
        usage = call.usage
        # It ended when its call did, not now (the next call has run since).
        ended_at = call.started_at + call.latency_ms / 1000 if call.started_at else None
        self._end(
            "superseded",
            (
                reason,
                (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
                if usage is not None
                else None,
                usage.cost if usage is not None else None,
                call.latency_ms,
            ),
            ended_at,
        )

    def _end(self, what: str, payload: Any, ended_at: float | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        end_ns = int(ended_at * 1e9) if ended_at is not None else time.time_ns()
        try:
            self._tracing._end(("end", self._sid, end_ns, what, payload))
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


def _resource_attributes() -> dict[str, str]:
    attributes = {"service.name": "coach-bot", "langfuse.release": bot.__version__}
    environment = os.environ.get("LANGFUSE_TRACING_ENVIRONMENT")
    if environment:
        attributes["langfuse.environment"] = environment
    return attributes


def _add_tags(state: _RunState, tags: list[str]) -> None:
    for tag in tags:
        if tag and tag not in state.tags:
            state.tags.append(tag)


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
