"""The values tracing records for a run, a step and a model call, as both exports make them.

`bot.observability.replay` (the Langfuse SDK) and `bot.observability.direct_replay` (straight to
OTLP) take every name, tag, metadata entry, input and output from here, scrubbed the same way,
so the two can only differ in how the spans are built (decision 0026). Nothing here imports the
Langfuse SDK: the direct export process starts without it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import bot
from bot.observability.scrub import REDACTED, Scrubber, truncate

log = logging.getLogger("bot.observability.replay")

# A step's output is a summary, not a copy of everything the agent produced.
OUTPUT_SUMMARY_CHARS = 2000
ERROR_CHARS = 1000
# Langfuse drops propagated values longer than 200 characters (user id, tags, metadata...).
PROPAGATED_CHARS = 200
# How long a finished run still takes steps (its background steps start after the reply).
RUN_SCOPE_TTL = 120.0
MAX_ENDED_RUNS = 20_000
# Open runs, steps and model calls kept at most: one whose end record was dropped (the bot's
# buffer full under overload) would otherwise stay for the life of the export process.
MAX_OPEN = 50_000


def run_tags(scrub: Scrubber, pipeline: str, tags: Sequence[str]) -> list[str]:
    return scrubbed_tags(scrub, [pipeline, *tags])


def scrubbed_tags(scrub: Scrubber, tags: Sequence[str]) -> list[str]:
    return _unique([short_text(scrub.text(t)) for t in tags])


def propagated_metadata(scrub: Scrubber, metadata: dict[str, Any]) -> dict[str, Any]:
    trace_metadata: dict[str, Any] = {"bot_version": bot.__version__}
    for key, value in scrub.value(metadata).items():
        # Propagated metadata must be short scalars; the rest goes on the root span only.
        if isinstance(value, str | int | float | bool) and len(str(value)) < 150:
            trace_metadata[key] = value
    return trace_metadata


def run_metadata(
    scrub: Scrubber, pipeline: str, user_id: int | None, chat_id: int | None, metadata: Any
) -> Any:
    return scrub.value({"pipeline": pipeline, "user_id": user_id, "chat_id": chat_id, **metadata})


def step_metadata(scrub: Scrubber, step: dict[str, Any]) -> Any:
    return scrub.value(
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
    )


def generation_fields(
    scrub: Scrubber, call: dict[str, Any], step: dict[str, Any] | None
) -> tuple[str, Any]:
    """A model call's name and (scrubbed) metadata."""
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
        metadata["fallback_reason"] = error_text(scrub, ("text", call["previous_error"]))
    name = f"{spec} (fallback #{call['attempt']})" if is_fallback else spec
    if is_repair:
        name += " (repair)"
    return name, scrub.value(metadata)


def generation_input(scrub: Scrubber, call: dict[str, Any]) -> Any:
    return scrub.content([{"role": role, "content": content} for role, content in call["messages"]])


def usage_details(usage: Sequence[int]) -> dict[str, int]:
    return {"input": usage[0], "output": usage[1], "total": usage[2]}


def generation_ok_metadata(
    scrub: Scrubber,
    model: str,
    latency_ms: float,
    finish_reason: str | None,
    response_model: str | None,
) -> Any:
    metadata: dict[str, Any] = {"latency_ms": round(latency_ms, 1), "finish_reason": finish_reason}
    if response_model and response_model != model:
        metadata["response_model"] = response_model
    return scrub.value({k: v for k, v in metadata.items() if v is not None})


def error_text(scrub: Scrubber, error: Sequence[Any] | None) -> str | None:
    """`("exc", prefix, text)` for an exception (its type and status, and its text);
    `("text", text)` for a message."""
    if error is None:
        return None
    if error[0] == "exc":
        _, prefix, text = error
        if scrub.redact_content:
            return str(prefix)
        text = f"{prefix}: {text}" if text else prefix
    else:
        if scrub.redact_content:
            return f"error ({REDACTED} details)"
        text = error[1]
    return str(truncate(scrub.text(text), ERROR_CHARS))


def summary(scrub: Scrubber, output: Any) -> Any:
    """A step's output as traced: a summary, or nothing of it when content is redacted."""
    if scrub.redact_content:
        return None if output is None else REDACTED
    return truncate(scrub.value(output), OUTPUT_SUMMARY_CHARS)


def short_text(value: str) -> str:
    """What Langfuse propagates of a value: its first 200 characters."""
    return value[:PROPAGATED_CHARS]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def step_end_fields(scrub: Scrubber, what: str, payload: Any) -> dict[str, Any]:
    """What a step's end record updates on its span."""
    if what == "ok":
        return {"output": summary(scrub, payload), "metadata": {"success": True}}
    if what == "failed":
        output, error = payload
        return {
            "output": summary(scrub, output),
            "level": "ERROR",
            "status_message": error_text(scrub, error or ("text", "failed")),
            "metadata": {"success": False},
        }
    if what == "fail":
        level, error = payload
        return {
            "level": level,
            "status_message": error_text(scrub, error),
            "metadata": {"success": False},
        }
    return {}


def generation_end_fields(scrub: Scrubber, model: str, what: str, payload: Any) -> dict[str, Any]:
    """What a model call's end record updates on its generation."""
    if what == "ok":
        output, usage, cost, latency_ms, finish_reason, response_model = payload
        return {
            "output": scrub.content(output),
            "usage_details": usage_details(usage),
            "cost_details": {"total": cost} if cost is not None else None,
            "metadata": generation_ok_metadata(
                scrub, model, latency_ms, finish_reason, response_model
            ),
        }
    if what == "fail":
        error, error_type, status, retryable = payload
        return {
            "level": "ERROR",
            "status_message": error_text(scrub, error),
            "metadata": {"error_type": error_type, "status": status, "retryable": retryable},
        }
    if what == "abandon":
        return {"level": "WARNING", "status_message": payload}
    if what == "superseded":
        reason, usage, cost, latency_ms = payload
        return {
            "level": "WARNING",
            "status_message": reason,
            "usage_details": usage_details(usage) if usage is not None else None,
            "cost_details": {"total": cost} if cost is not None else None,
            "metadata": {"latency_ms": round(latency_ms, 1), "superseded": True},
        }
    return {}


class RecordApplier:
    """What both exports do with the records alike: the dispatch, open model calls and
    scopes, and how long an ended run still takes steps. Subclasses make the spans. Never
    raises: a record that cannot be applied is logged (its type only) and skipped."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self._scopes: dict[int, Any] = {}  # open runs and steps (ended runs for a while)
        self._generations: dict[int, tuple[Any, str]] = {}  # open calls: (span, model)
        self._ended_runs: OrderedDict[int, float] = OrderedDict()
        self.applied = 0
        self.forgotten = 0  # open scopes and calls dropped past MAX_OPEN

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
            # Type only: an SDK error's text could quote what it was given.
            what = record[0] if record else "blank"
            log.warning("tracing: could not apply a %s record (%s)", what, type(exc).__name__)
        self._forget_old_runs()
        self._bound_open()

    def _bound_open(self) -> None:
        """Forget the oldest open scopes and calls past MAX_OPEN (their spans never end, as
        their end records never came)."""
        for opened in (self._scopes, self._generations):
            while len(opened) > MAX_OPEN:
                sid = next(iter(opened))  # the oldest: dicts keep insertion order
                del opened[sid]
                self._ended_runs.pop(sid, None)
                self.forgotten += 1

    def _start_run(self, *fields: Any) -> None:
        raise NotImplementedError

    def _start_step(self, *fields: Any) -> None:
        raise NotImplementedError

    def _start_generation(self, *fields: Any) -> None:
        raise NotImplementedError

    def _update(self, sid: int, what: str, payload: Any) -> None:
        raise NotImplementedError

    def _end_run(self, sid: int, scope: Any, end_ns: int, payload: Any) -> None:
        raise NotImplementedError

    def _end_step(self, scope: Any, end_ns: int, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def _end_generation(self, span: Any, end_ns: int, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def _end(self, sid: int, end_ns: int, what: str, payload: Any) -> None:
        found = self._generations.pop(sid, None)
        if found is not None:
            span, model = found
            fields = generation_end_fields(self.scrubber, model, what, payload)
            self._end_generation(span, end_ns, fields)
            return
        scope = self._scopes.get(sid)
        if scope is None:
            return
        if scope.kind == "run":
            self._end_run(sid, scope, end_ns, payload)
        else:
            del self._scopes[sid]
            self._end_step(scope, end_ns, step_end_fields(self.scrubber, what, payload))

    def _run_ended(self, sid: int) -> None:
        """Record that run `sid` ended: its scope stays for RUN_SCOPE_TTL (background steps
        join it after the reply)."""
        self._ended_runs[sid] = time.monotonic()

    def _forget_old_runs(self) -> None:
        ended = self._ended_runs
        if not ended:
            return
        horizon = time.monotonic() - RUN_SCOPE_TTL
        while ended and (len(ended) > MAX_ENDED_RUNS or next(iter(ended.values())) < horizon):
            sid, _ = ended.popitem(last=False)
            self._scopes.pop(sid, None)
