"""The seam between the pipeline runner and tracing.

The runner calls an observer around a whole run and around each step; `bot.observability.tracing`
implements it with Langfuse, `NullObserver` does nothing (tracing off costs nothing). The runner
never imports langfuse; the observer never knows about agents' internals.

Context managers are synchronous on purpose: Langfuse's (OpenTelemetry's) spans are, and the
current span travels in contextvars, so model calls made inside a step (even in tasks created
there, such as background steps) become children of that step's span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


@dataclass(slots=True)
class RunInfo:
    pipeline: str
    user_id: int | None
    chat_id: int | None
    input_text: str
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


class RunHandle(Protocol):
    """What the runner may do with an open run trace."""

    @property
    def trace_id(self) -> str | None: ...

    def add_tags(self, *tags: str) -> None: ...

    def set_output(self, output: Any) -> None: ...


@dataclass(slots=True)
class StepInfo:
    agent: str
    kind: str  # "step", "parallel", "background"
    model: str  # the chosen model spec, e.g. "openrouter:anthropic/claude-sonnet-4.5"
    # The resolution level: "override", "pipeline", "role", "user", "agent", "pipeline-default",
    # "default" (bot.services.model_resolution).
    source: str
    # Who set it (`tg:42 (@ann)`, `AGENT_MODELS`), the catalog alias it runs as, and the
    # configuration version it came from.
    set_by: str | None = None
    alias: str | None = None
    config_version: int | None = None
    # The user's `/prefer` (`any`, `local`, `online`) the model was resolved under.
    preference: str = "any"
    # The running trial (`/trial`) the step is part of and the user's arm (the ledger marks it).
    trial_id: int | None = None
    trial_arm: str | None = None


# The step whose agent is running now (set by the runner around `agent.run`), so a wrapper around
# a provider (the call ledger) knows which agent, level and configuration version a call serves.
CURRENT_STEP: ContextVar[StepInfo | None] = ContextVar("CURRENT_STEP", default=None)


@contextlib.contextmanager
def outside_trial() -> Iterator[None]:
    """The model calls made inside are not counted in the step's trial arm: a budget sent them
    to another model than the arm's, and an arm's figures must be its model's alone."""
    step = CURRENT_STEP.get()
    if step is None or step.trial_id is None:
        yield
        return
    token = CURRENT_STEP.set(replace(step, trial_id=None, trial_arm=None))
    try:
        yield
    finally:
        # A stream may be resumed from another context than the one that set the token.
        with contextlib.suppress(ValueError):
            CURRENT_STEP.reset(token)


class StepHandle(Protocol):
    def set_result(
        self, *, success: bool, output: Any = None, error: str | None = None
    ) -> None: ...


class PipelineObserver(Protocol):
    def run(self, info: RunInfo) -> AbstractContextManager[RunHandle]: ...

    def step(self, info: StepInfo) -> AbstractContextManager[StepHandle]: ...


class _NullRun:
    trace_id: str | None = None

    def add_tags(self, *tags: str) -> None:
        pass

    def set_output(self, output: Any) -> None:
        pass


class _NullStep:
    def set_result(self, *, success: bool, output: Any = None, error: str | None = None) -> None:
        pass


class _NullScope(AbstractContextManager[Any]):
    """A reusable do-nothing context manager (cheaper than a generator-based one per call)."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> Any:
        return self._handle

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_RUN_SCOPE = _NullScope(_NullRun())
_NULL_STEP_SCOPE = _NullScope(_NullStep())


class NullObserver:
    """Tracing off: costs two attribute lookups per run and per step."""

    def run(self, info: RunInfo) -> AbstractContextManager[RunHandle]:
        return _NULL_RUN_SCOPE

    def step(self, info: StepInfo) -> AbstractContextManager[StepHandle]:
        return _NULL_STEP_SCOPE
