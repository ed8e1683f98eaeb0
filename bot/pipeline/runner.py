"""Runs a `Pipeline` over a `PipelineContext`.

For every step: resolve the agent's provider (`ctx.get_llm_for_agent`), run the agent on its own
copy of the context (`ctx.for_agent`) under a timeout, record an `AgentOutput`. Outcomes:

    done        AgentOutput(success=True, ...)
    failed      AgentOutput(success=False, error=...): an optional step is skipped, a required
                one ends the run with a short message for the user (`RunResult.error_message`)
    cancelled   CancelledError propagates, always; nothing here swallows it

Every step gets its observer span (one per agent in the trace), also when resolving its model
failed (a bad spec, a timeout waiting on the override cache): that span's model is
`(unresolved)`, its source `unresolved`, and it carries the error.

Background steps are started inside the run (so tracing contextvars carry the trace into them),
tracked by id, listed by `background_jobs()`, cancellable, and drained with a deadline by
`drain()` on shutdown. Each waits for `BackgroundLane.admit()` before it starts: while the event
loop is behind on replies, background work waits (at most `MAX_WAIT` s).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.llm.errors import AllModelsFailed, LLMError, ProviderError, StructuredOutputError
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpecError
from bot.pipeline.background_lane import BackgroundLane
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.observer import (
    CURRENT_STEP,
    NullObserver,
    PipelineObserver,
    RunHandle,
    RunInfo,
    StepInfo,
)
from bot.pipeline.steps import Background, Pipeline, Step
from bot.services.model_resolution import Resolution
from bot.storage.repositories import StorageError

log = logging.getLogger(__name__)

# The span of a step whose model could not be resolved names no model.
UNRESOLVED_MODEL = "(unresolved)"
UNRESOLVED_SOURCE = "unresolved"
# The span of a step that calls no model (a search).
NO_MODEL = "(none)"
NO_MODEL_SOURCE = "no model"

Hook = Callable[[PipelineContext], Awaitable[None]]
ReplyHook = Callable[[PipelineContext, "RunResult"], Awaitable[None]]


def user_message(error: BaseException | None) -> str:
    """What the user reads when a required step failed (the log has the details)."""
    # An error that speaks to the user itself (a spent budget says when it resets).
    text = getattr(error, "user_text", None)
    if isinstance(text, str):
        return text
    if isinstance(error, AllModelsFailed | ProviderError):
        return "Sorry, I can't reach the language model right now. Please try again in a minute."
    if isinstance(error, TimeoutError):
        return "Sorry, that took too long to answer. Please try again."
    if isinstance(error, ModelSpecError):
        return "Sorry, the model for this is not set up correctly. An admin has to fix it."
    if isinstance(error, StructuredOutputError | LLMError):
        return "Sorry, the model gave an answer I couldn't use. Please try again."
    if isinstance(error, StorageError):
        return "Sorry, I couldn't reach my memory just now. Please try again in a minute."
    return "Sorry, something went wrong on my side. Please try again."


def _step_info(
    agent: str, kind: str, llm: LLMProvider, resolution: Resolution | None, handle: RunHandle
) -> StepInfo:
    """The span's model and why: the resolution recorded on the context, if any."""
    if resolution is None:
        return StepInfo(agent, kind, llm.spec, "default")
    if resolution.source == "override":
        handle.add_tags(f"override:{agent}")
    if resolution.preference != "any":
        handle.add_tags(f"preference:{resolution.preference}")
    return StepInfo(
        agent,
        kind,
        resolution.model,
        resolution.source,
        resolution.set_by,
        resolution.alias,
        resolution.config_version,
        resolution.preference,
        resolution.trial_id,
        resolution.trial_arm,
    )


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclass(slots=True)
class RunResult:
    pipeline: str
    success: bool
    reply: str = ""
    # Set when a required step failed: what to tell the user.
    error_message: str | None = None
    failed_agent: str | None = None
    outputs: dict[str, AgentOutput] = field(default_factory=dict)
    trace_id: str | None = None
    background: list[str] = field(default_factory=list)
    # The stored user message this run answered (the ledger's turn; rating buttons carry it).
    turn_id: int | None = None
    # The turn answered without the database (what was last read of the chat; its messages are
    # written when the database is back): the caller tells the user once.
    memory_degraded: bool = False


@dataclass(slots=True)
class BackgroundJob:
    id: str
    pipeline: str
    agent: str
    started_at: float
    task: asyncio.Task[AgentOutput]


class PipelineRunner:
    def __init__(
        self,
        observer: PipelineObserver | None = None,
        *,
        step_timeout: float = 120.0,
        lane: BackgroundLane | None = None,
    ) -> None:
        self.observer: PipelineObserver = observer or NullObserver()
        self.step_timeout = step_timeout
        self._jobs: dict[str, BackgroundJob] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._running = 0  # runs in flight (`wait_background` waits for them too)
        # Background steps wait while the loop is behind on replies in flight (decision 0028).
        self.lane = lane or BackgroundLane()
        if self.lane.foreground is None:
            self.lane.foreground = self._replying

    def _replying(self) -> bool:
        return self._running > 0

    async def run(
        self,
        pipeline: Pipeline,
        ctx: PipelineContext,
        *,
        on_start: Hook | None = None,
        on_reply: ReplyHook | None = None,
    ) -> RunResult:
        """Run the pipeline. `on_start` runs once the trace is open (store the user's message
        with the trace id); `on_reply` after the foreground steps succeeded and before the
        background ones start (store the reply). Errors of the hooks propagate.
        """
        self._running += 1
        try:
            return await self._run(pipeline, ctx, on_start, on_reply)
        finally:
            self._running -= 1

    async def _run(
        self,
        pipeline: Pipeline,
        ctx: PipelineContext,
        on_start: Hook | None,
        on_reply: ReplyHook | None,
    ) -> RunResult:
        info = RunInfo(pipeline.name, ctx.user_id, ctx.chat_id, ctx.input_text)
        with self.observer.run(info) as handle:
            if ctx.trace_id is None:
                ctx.trace_id = handle.trace_id
            result = RunResult(pipeline.name, True, outputs=ctx.results, trace_id=ctx.trace_id)
            if on_start is not None:
                await on_start(ctx)
            parts: list[str] = []
            background: list[Step] = []
            for stage in pipeline.stages:
                if isinstance(stage, Background):
                    background.extend(stage.steps)
                    continue
                steps = [stage] if isinstance(stage, Step) else list(stage.steps)
                kind = "step" if isinstance(stage, Step) else "parallel"
                if len(steps) == 1:
                    outcomes = [await self._run_step(steps[0], ctx, kind, handle)]
                else:
                    outcomes = await asyncio.gather(
                        *(self._run_step(step, ctx, kind, handle) for step in steps)
                    )
                for step, (output, error) in zip(steps, outcomes, strict=True):
                    if output.success:
                        if step.agent.replies and output.text:
                            parts.append(output.text)
                    elif not step.optional or getattr(error, "ends_turn", False):
                        result.success = False
                        result.failed_agent = step.name
                        result.error_message = user_message(error)
                if not result.success:
                    break
            result.reply = "\n\n".join(parts)
            if result.success and on_reply is not None:
                await on_reply(ctx, result)
            handle.set_output(result.reply if result.success else result.error_message)
            # After the reply is stored, so background agents (the summarizer) see it; and only
            # when the run succeeded: summarizing a failed exchange is wasted money.
            if result.success:
                if self._closing and background:
                    log.warning("shutting down: background steps of %s skipped", pipeline.name)
                else:
                    for step in background:
                        result.background.append(self._spawn(pipeline.name, step, ctx, handle))
            return result

    async def _run_step(
        self, step: Step, ctx: PipelineContext, kind: str, handle: RunHandle
    ) -> tuple[AgentOutput, BaseException | None]:
        agent = step.name
        timeout = step.timeout if step.timeout is not None else self.step_timeout
        output: AgentOutput | None = None
        error: BaseException | None = None
        phase = "model resolution"
        traced = False  # whether the step's span was opened
        # One timeout covers resolving the model (a cache refresh may wait on the database)
        # and running the agent.
        try:
            async with asyncio.timeout(timeout) as scope:
                if step.uses_model:
                    llm = await ctx.get_llm_for_agent(agent, optional=step.optional)
                    info = _step_info(agent, kind, llm, ctx.resolutions.get(agent), handle)
                else:
                    llm = ctx.default_llm
                    info = StepInfo(agent, kind, NO_MODEL, NO_MODEL_SOURCE)
                phase = agent
                with self.observer.step(info) as step_handle:
                    traced = True
                    current = CURRENT_STEP.set(info)
                    try:
                        output = await step.agent.run(ctx.for_agent(agent, llm))
                    except asyncio.CancelledError:
                        if scope.expired():  # our own timeout, not a cancellation from outside
                            step_handle.set_result(
                                success=False, error=f"{agent} timed out after {timeout:g}s"
                            )
                        raise
                    except Exception as exc:
                        output, error = AgentOutput.failed(describe(exc)), exc
                    finally:
                        CURRENT_STEP.reset(current)
                    step_handle.set_result(
                        success=output.success,
                        output=output.data if output.data is not None else output.text,
                        error=output.error,
                    )
        except TimeoutError as exc:
            if output is None:
                expired = scope.expired()
                message = f"{phase} timed out after {timeout:g}s" if expired else describe(exc)
                output, error = AgentOutput.failed(message), exc
        except Exception as exc:  # resolution failed (no key, bad spec): no model ran
            output, error = AgentOutput.failed(describe(exc)), exc
        assert output is not None
        if not traced:
            # Resolution failed before the span could say which model: the step still gets its
            # span, with the error, so the trace shows every step the pipeline tried.
            unresolved = StepInfo(agent, kind, UNRESOLVED_MODEL, UNRESOLVED_SOURCE)
            with self.observer.step(unresolved) as step_handle:
                step_handle.set_result(success=False, error=output.error)
        return self._finish(step, ctx, kind, output, error)

    def _finish(
        self,
        step: Step,
        ctx: PipelineContext,
        kind: str,
        output: AgentOutput,
        error: BaseException | None,
    ) -> tuple[AgentOutput, BaseException | None]:
        ctx.set_result(step.key, output)
        if not output.success:
            level = logging.WARNING if step.optional or kind == "background" else logging.ERROR
            if getattr(error, "user_text", None) is not None:
                level = logging.INFO  # a spent budget: the bot working as configured
            resolution = ctx.resolutions.get(step.name)
            log.log(
                level,
                "%s step %s failed in %s (chat %s)%s: %s",
                "optional"
                if step.optional
                else "background"
                if kind == "background"
                else "required",
                step.name,
                ctx.pipeline,
                ctx.chat_id,
                # Which model, and why that one: the first thing an operator asks.
                f" on {resolution.model} [{resolution.source}, set by {resolution.set_by}]"
                if resolution is not None
                else "",
                output.error,
            )
        return output, error

    # --- background work ---

    def _spawn(self, pipeline: str, step: Step, ctx: PipelineContext, handle: RunHandle) -> str:
        job_id = f"{pipeline}:{step.name}:{next(self._ids)}"

        # Per chat, across pipelines: the summary a later turn's summarizer keeps is the chat's.
        key = (step.key, ctx.chat_id) if step.latest_only and ctx.chat_id is not None else None

        async def job() -> AgentOutput:
            if not await self.lane.admit(key):
                # A later turn's run of this step (same chat) does its work instead.
                return AgentOutput.ok(text=None)
            output, _ = await self._run_step(step, ctx, "background", handle)
            return output

        # Created while the run's observer context is active: the task copies the contextvars,
        # so its spans land in this run's trace although it finishes after the reply.
        task = asyncio.create_task(job(), name=job_id)
        self._jobs[job_id] = BackgroundJob(job_id, pipeline, step.name, time.time(), task)
        task.add_done_callback(lambda _t: self._jobs.pop(job_id, None))
        return job_id

    def background_jobs(self) -> list[BackgroundJob]:
        """Background steps still running, oldest first."""
        return list(self._jobs.values())

    def cancel_background(self, job_id: str) -> bool:
        job = self._jobs.get(job_id)
        if job is None or job.task.done():
            return False
        return job.task.cancel()

    async def wait_background(self) -> None:
        """Wait for the runs in flight and the background steps they start (tests, scripted
        console sessions). A run's reply may be out before the run ends (the conversation
        delivers it beside the turn's write), and its background steps start only then."""
        while self._jobs or self._running:
            tasks = [job.task for job in self._jobs.values()]
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0.005)

    async def drain(self, timeout: float) -> int:
        """Stop taking background work, wait up to `timeout` s, cancel the rest.

        Returns how many jobs had to be cancelled.
        """
        self._closing = True
        self.lane.open()
        tasks = [job.task for job in self._jobs.values()]
        if not tasks:
            return 0
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.warning("background step %s did not finish before shutdown", task.get_name())
            task.cancel()
        if pending:
            # return_exceptions: the jobs' own cancellations are collected, while a cancellation
            # of drain() itself still propagates.
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)
