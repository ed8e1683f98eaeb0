"""`Replayer`: an agent's kept inputs, run again on a candidate model, side by side.

    plan = await replayer.plan("coach", picked, "fast", n=20)   # the inputs, the estimate
    rows = await replayer.run(plan, by="tg:1 (@ann)")           # one row per input

The plan reads the agent's newest `n` inputs (`ReplayRepo.recent`), leaves out those a cloud
candidate may not see (their user's `/prefer local`, when the call was made or now) and those
whose structured output schema this bot no longer has, and estimates the cost: the stored prompt
tokens and the originals' completion tokens at the candidate's price (None: unpriced).

The run sends each input exactly as the agent sent it (messages, schema, `max_tokens`,
`temperature`, streamed or not) to the candidate alone (no fallbacks), `concurrency` at a time,
each under `timeout`. The calls are traced (a `replay` run, one step per input) and in the call
ledger as pipeline `replay` with no turn and no user: they cost real money, so they are on the
record, but they are nobody's turn (`/stats` counts their calls and cost, not a turn) and no
user's budget pays for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from bot.llm.bounds import estimate_tokens
from bot.llm.errors import LLMError
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpecError
from bot.llm.types import ChatMessage, LLMResponse, Usage
from bot.observatory.capture import REPLAY_PIPELINE, Turn, turn_scope
from bot.pipeline.observer import CURRENT_STEP, PipelineObserver, RunInfo, StepInfo
from bot.services.model_catalog import Picked
from bot.services.model_levels import allows
from bot.storage.replay_models import ReplayInput
from bot.storage.repositories import ReplayRepo, UserSettingsRepo
from bot.storage.task_models import TaskRow
from bot.tasks.agent import ask_score, task_messages

log = logging.getLogger(__name__)

# USD per prompt token and per completion token, or None (`Budgets.rates`: the price table,
# OpenRouter's catalog, 0 for local models).
Rates = Callable[[str, str], tuple[float, float] | None]
ChainFor = Callable[[Picked], LLMProvider]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class Estimate:
    prompt_tokens: int
    completion_tokens: int
    # None: the candidate's price is not known (unpriced).
    usd: float | None


@dataclass(slots=True)
class ReplayPlan:
    agent: str
    model: str  # the model text the admin gave
    picked: Picked
    inputs: list[ReplayInput]
    asked: int
    skipped_local: int
    skipped_schema: int
    estimate: Estimate
    # Score tasks by pipeline they judge (None: every pipeline): they judge both answers.
    judges: dict[str | None, TaskRow] = field(default_factory=dict)

    def judge_of(self, item: ReplayInput) -> TaskRow | None:
        return self.judges.get(item.pipeline) or self.judges.get(None)


@dataclass(slots=True)
class ReplayRow:
    item: ReplayInput
    output: str | None
    error: str | None
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    original_cost_usd: float | None
    # The judge's verdict, when a score task applies: (task, original's score, candidate's),
    # or the judge's error.
    judged: tuple[str, float, float] | None = None
    judge_error: str | None = None

    @property
    def verdict(self) -> str | None:
        if self.judge_error is not None:
            return f"the judge failed: {self.judge_error}"
        if self.judged is None:
            return None
        name, original, candidate = self.judged
        return f"{name}: original {original:.2f}, candidate {candidate:.2f}: {winner(self.judged)}"


TIE = 0.05


def winner(judged: tuple[str, float, float]) -> str:
    _name, original, candidate = judged
    if abs(candidate - original) < TIE:
        return "tie"
    return "candidate better" if candidate > original else "original better"


def cost_of(rates: Rates, provider: str, model: str, usage: Usage) -> float | None:
    """What the provider said, else the tokens at the known price, else None (unpriced)."""
    if usage.cost is not None:
        return usage.cost
    found = rates(provider, model)
    if found is None:
        return None
    return usage.prompt_tokens * found[0] + usage.completion_tokens * found[1]


def schema_class(ref: str | None) -> type[BaseModel] | None:
    """`module:QualName` of a schema class of this bot, or None when it is not (any more)."""
    if ref is None:
        return None
    module_name, _, qualname = ref.partition(":")
    if not module_name.startswith("bot.") or not qualname:
        return None
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def last_user_text(item: ReplayInput) -> str:
    """The input's newest user turn (what the user said, as the agent passed it on)."""
    return next((m["content"] for m in reversed(item.messages) if m["role"] == "user"), "")


def chat_messages(item: ReplayInput) -> list[ChatMessage]:
    out = []
    for message in item.messages:
        role = message["role"]
        out.append(ChatMessage(role if role in ROLES else "user", message["content"]))  # type: ignore[arg-type]
    return out


@dataclass(slots=True)
class Replayer:
    repo: ReplayRepo
    user_settings: UserSettingsRepo
    chain_for: ChainFor
    rates: Rates
    observer: PipelineObserver
    concurrency: int = 4
    timeout: float = 60.0
    # The score tasks (`bot.tasks.Tasks.current`) and a task's provider (resolved by name).
    tasks: Callable[[], Awaitable[Mapping[str, TaskRow]]] | None = None
    task_chain: Callable[[str], Awaitable[LLMProvider]] | None = None
    # Replays started from a button run as tasks of their own (closed at shutdown).
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def plan(self, agent: str, picked: Picked, model: str, n: int) -> ReplayPlan:
        found = await self.repo.recent(agent, n)
        cloud = not allows("local", picked.spec)
        local_users = await self._local_users(found) if cloud else set()
        inputs: list[ReplayInput] = []
        skipped_local = skipped_schema = 0
        for item in found:
            if cloud and (item.preference == "local" or item.user_id in local_users):
                skipped_local += 1
            elif item.schema is not None and schema_class(item.schema) is None:
                skipped_schema += 1
            else:
                inputs.append(item)
        return ReplayPlan(
            agent,
            model,
            picked,
            inputs,
            asked=n,
            skipped_local=skipped_local,
            skipped_schema=skipped_schema,
            estimate=self.estimate(picked, inputs),
            judges=await self._judges(),
        )

    async def _judges(self) -> dict[str | None, TaskRow]:
        if self.tasks is None or self.task_chain is None:
            return {}
        found: dict[str | None, TaskRow] = {}
        for task in sorted((await self.tasks()).values(), key=lambda t: t.name):
            if task.kind == "score":
                found.setdefault(task.pipeline, task)
        return found

    def estimate(self, picked: Picked, inputs: Sequence[ReplayInput]) -> Estimate:
        prompt = sum(
            item.prompt_tokens or estimate_tokens("".join(m["content"] for m in item.messages))
            for item in inputs
        )
        completion = sum(item.completion_tokens or estimate_tokens(item.output) for item in inputs)
        found = self.rates(picked.spec.provider, picked.spec.model)
        usd = None if found is None else prompt * found[0] + completion * found[1]
        return Estimate(prompt, completion, usd)

    async def run(self, plan: ReplayPlan, *, by: str) -> list[ReplayRow]:
        chain = self.chain_for(plan.picked)
        gate = asyncio.Semaphore(self.concurrency)
        info = RunInfo(
            REPLAY_PIPELINE,
            None,
            None,
            f"/replay {plan.agent} {plan.model} n={plan.asked}",
            tags=["replay", f"agent:{plan.agent}"],
            metadata={"by": by, "inputs": len(plan.inputs)},
        )
        step = StepInfo(
            plan.agent,
            "replay",
            str(plan.picked.spec),
            "replay",
            set_by=by,
            alias=plan.picked.alias,
        )

        async def one(item: ReplayInput) -> ReplayRow:
            async with gate:
                row = await self._one(chain, item, step)
            judge = plan.judge_of(item)
            if judge is not None and row.output is not None:
                async with gate:
                    await self._judge(judge, row, by)
            return row

        with turn_scope(Turn(REPLAY_PIPELINE, None, None)), self.observer.run(info) as run:
            rows = list(await asyncio.gather(*(one(item) for item in plan.inputs)))
            run.set_output({"rows": len(rows), "errors": sum(r.error is not None for r in rows)})
        return rows

    async def _judge(self, task: TaskRow, row: ReplayRow, by: str) -> None:
        """The task's score of the original answer and of the candidate's, for the same input."""
        assert self.task_chain is not None
        assert row.output is not None
        asked = last_user_text(row.item)
        step = StepInfo(task.name, "judge", task.model, "replay", set_by=by)
        token = CURRENT_STEP.set(step)
        try:
            with self.observer.step(step) as handle:
                try:
                    llm = await self.task_chain(task.name)
                    async with asyncio.timeout(self.timeout):
                        (original, _), (candidate, _) = await asyncio.gather(
                            ask_score(llm, task_messages(task, asked, row.item.output, [])),
                            ask_score(llm, task_messages(task, asked, row.output, [])),
                        )
                except TimeoutError:
                    row.judge_error = f"no answer in {self.timeout:g} s"
                except (LLMError, ModelSpecError) as exc:
                    row.judge_error = f"{type(exc).__name__}: {exc}"[:200]
                else:
                    row.judged = (task.name, original, candidate)
                handle.set_result(success=row.judged is not None, output=row.verdict)
        finally:
            CURRENT_STEP.reset(token)

    async def _one(self, chain: LLMProvider, item: ReplayInput, step: StepInfo) -> ReplayRow:
        messages = chat_messages(item)
        token = CURRENT_STEP.set(step)
        started = time.perf_counter()
        response: LLMResponse | None = None
        error: str | None = None
        try:
            with self.observer.step(step) as handle:
                try:
                    async with asyncio.timeout(self.timeout):
                        response = await self._call(chain, item, messages)
                except TimeoutError:
                    error = f"no answer in {self.timeout:g} s"
                except LLMError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                handle.set_result(
                    success=error is None,
                    output=response.text if response is not None else None,
                    error=error,
                )
        finally:
            CURRENT_STEP.reset(token)
        latency = (time.perf_counter() - started) * 1000
        original = cost_of(
            self.rates,
            item.provider,
            item.model,
            Usage(item.prompt_tokens, item.completion_tokens, item.cost_usd),
        )
        if response is None:
            return ReplayRow(item, None, error, latency, 0, 0, None, original)
        usage = response.usage
        return ReplayRow(
            item,
            response.text,
            None,
            latency,
            usage.prompt_tokens,
            usage.completion_tokens,
            cost_of(self.rates, response.provider, response.model, usage),
            original,
        )

    @staticmethod
    async def _call(
        chain: LLMProvider, item: ReplayInput, messages: list[ChatMessage]
    ) -> LLMResponse:
        if item.streamed:
            final: LLMResponse | None = None
            async for chunk in chain.stream(
                messages, temperature=item.temperature, max_tokens=item.max_tokens
            ):
                if chunk.response is not None:
                    final = chunk.response
            if final is None:
                raise LLMError("the stream ended without its answer")
            return final
        return await chain.complete(
            messages,
            schema=schema_class(item.schema),
            temperature=item.temperature,
            max_tokens=item.max_tokens,
        )

    async def _local_users(self, inputs: Sequence[ReplayInput]) -> set[int]:
        """Users among `inputs` whose `/prefer` is `local` now."""
        found: set[int] = set()
        for user_id in {item.user_id for item in inputs if item.user_id is not None}:
            row = await self.user_settings.get(user_id)
            if row is not None and row.model_preference == "local":
                found.add(user_id)
        return found

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="replay")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["Estimate", "ReplayPlan", "ReplayRow", "Replayer", "cost_of", "schema_class"]
