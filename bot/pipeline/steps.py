"""The shape of a pipeline, declared as data: what runs in order, together, or after the reply.

    Pipeline("support", [
        Parallel([Step(extraction, optional=True), Step(strategist, optional=True)]),
        Step(coach),
        Background(Step(summarizer)),
    ])

The runner (`bot.pipeline.runner`) gives these their meaning; agents know nothing about them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.pipeline.context import AgentOutput, PipelineContext


class AgentLike(Protocol):
    """Anything with a name the model resolution knows and a `run` returning an AgentOutput."""

    @property
    def name(self) -> str: ...

    # The key of its output in `ctx.results` (usually the name).
    @property
    def key(self) -> str: ...

    # Replying agents' texts make up the answer the user sees (and that is stored).
    @property
    def replies(self) -> bool: ...

    async def run(self, ctx: PipelineContext) -> AgentOutput: ...


@dataclass(frozen=True, slots=True)
class Step:
    """One agent. A failing optional step is recorded and skipped; a required one ends the run.

    `timeout` None means the runner's default (STEP_TIMEOUT). `latest_only`, for a background
    step whose later run folds in what an earlier one would do (the summarizer): while it waits
    to start (`bot.pipeline.background_lane`), a later run for the same chat replaces it.
    """

    agent: AgentLike
    optional: bool = False
    timeout: float | None = None
    latest_only: bool = False

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def key(self) -> str:
        return self.agent.key or self.agent.name

    @property
    def uses_model(self) -> bool:
        """False for a step that calls no model (`Agent.uses_model`): nothing is resolved."""
        return bool(getattr(self.agent, "uses_model", True))


@dataclass(frozen=True, slots=True)
class Parallel:
    """Steps run concurrently, each on its own copy of the context; done when the slowest is."""

    steps: Sequence[Step]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("Parallel needs at least one step")


@dataclass(frozen=True, slots=True, init=False)
class Background:
    """Steps started after the reply, as tracked tasks that outlive the run (drained on stop).

    A background step's failure never reaches the user; it is logged and traced.
    """

    steps: tuple[Step, ...]

    def __init__(self, *steps: Step) -> None:
        if not steps:
            raise ValueError("Background needs at least one step")
        object.__setattr__(self, "steps", tuple(steps))


Stage = Step | Parallel | Background


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    stages: Sequence[Stage] = field(default_factory=tuple)

    def agents(self) -> list[str]:
        """Names of the agents that run on a model, in the order they run (for `/models`)."""
        names: list[str] = []
        for stage in self.stages:
            steps = [stage] if isinstance(stage, Step) else list(stage.steps)
            for step in steps:
                if step.uses_model and step.name not in names:
                    names.append(step.name)
        return names
