"""`TaskAgent`: one post-completion task run on one turn, as a background step of the pipeline.

    step = Step(TaskAgent(task, turn, replying=("coach",), sink=service), optional=True)

The runner resolves its model by the task's name (its override row: `/task add` writes it,
`/setmodel <task>` changes it, a `/trial` of the name applies), traces it as a step and the
ledger records its calls, like any agent's. Its instruction is the admin's text (the only thing
in the system role); the turn goes in a user message: the user's message, the reply, the other
agents' outputs. `kind=score` asks for `TaskScore` (structured output, repaired once like every
agent's structured call); `note` for plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, Field

from bot.llm.errors import StructuredOutputError
from bot.llm.protocol import LLMProvider
from bot.llm.types import ChatMessage
from bot.observatory.capture import Turn
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.storage.task_models import TaskResult, TaskRow

SCORE_TOKENS = 300
NOTE_TOKENS = 600
# Each part of the turn the task reads is cut to this many characters.
PART_CHARS = 4000
TASK_KEY = "task:"

SYSTEM = (
    "You review one turn of a coaching chat bot for its operators; the user never sees your "
    "answer. Your task:\n{instruction}"
)
SCORE_RULE = (
    "\n\nAnswer with a score between 0 (worst) and 1 (best) for the task above, and a short "
    "reason (one or two sentences)."
)


class TaskScore(BaseModel):
    """What a `kind=score` task answers."""

    score: float = Field(ge=0.0, le=1.0)
    reason: str = Field(max_length=1000)


class ResultSink(Protocol):
    async def record(self, task: TaskRow, result: TaskResult) -> None: ...


def _part(text: str) -> str:
    return text if len(text) <= PART_CHARS else text[:PART_CHARS] + "…"


def task_messages(
    task: TaskRow, user_text: str, reply: str, helpers: list[str]
) -> list[ChatMessage]:
    """What the task's model is sent: the admin's text alone in the system role (decision
    0012), the turn in a user message."""
    system = SYSTEM.format(instruction=task.instruction)
    turn = (
        f"The user's message:\n{_part(user_text)}\n\n"
        f"The bot's reply:\n{_part(reply) or '(none)'}\n\n"
        "The helpers' outputs:\n" + ("\n".join(helpers) or "(none)")
    )
    return [
        ChatMessage("system", system + (SCORE_RULE if task.kind == "score" else "")),
        ChatMessage("user", turn),
    ]


def turn_parts(ctx: PipelineContext, replying: tuple[str, ...]) -> tuple[str, list[str]]:
    """The turn's reply and its helpers' outputs, as the task reads them."""
    reply = "\n\n".join(
        output.text
        for key in replying
        if (output := ctx.results.get(key)) is not None and output.success and output.text
    )
    helpers = []
    for key, output in ctx.results.items():
        if key in replying or key.startswith(TASK_KEY) or not output.success:
            continue
        data = output.data
        shown = data.model_dump_json() if isinstance(data, BaseModel) else output.text
        if shown is None and data is not None:
            shown = json.dumps(data, default=str, ensure_ascii=False)
        if shown:
            helpers.append(f"- {key}: {_part(shown)}")
    return reply, helpers


async def ask_score(llm: LLMProvider, messages: list[ChatMessage]) -> tuple[float, str]:
    """A score task's answer: the score and its reason (raises `LLMError`)."""
    response = await llm.complete(messages, schema=TaskScore, max_tokens=SCORE_TOKENS)
    parsed = response.parsed
    if not isinstance(parsed, TaskScore):
        raise StructuredOutputError("the judge's answer had no score")
    return parsed.score, parsed.reason


@dataclass(frozen=True, slots=True)
class TaskAgent:
    task: TaskRow
    turn: Turn
    replying: tuple[str, ...]
    sink: ResultSink
    replies: bool = False
    uses_model: bool = True

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def key(self) -> str:
        return TASK_KEY + self.task.name

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        task = self.task
        reply, helpers = turn_parts(ctx, self.replying)
        messages = task_messages(task, ctx.input_text, reply, helpers)
        resolution = ctx.resolutions.get(task.name)
        model = resolution.model if resolution is not None else ctx.llm.spec
        if task.kind == "score":
            score: float | None
            score, text = await ask_score(ctx.llm, messages)
        else:
            response = await ctx.llm.complete(messages, max_tokens=NOTE_TOKENS)
            score, text = None, response.text.strip()
        result = TaskResult(
            task=task.name,
            kind=task.kind,
            turn_id=self.turn.turn_id,
            chat_id=ctx.chat_id,
            user_id=ctx.user_id,
            pipeline=ctx.pipeline,
            model=model,
            score=score,
            text=text,
            trace_id=ctx.trace_id,
        )
        await self.sink.record(task, result)
        return AgentOutput.ok(data={"score": score, "text": text} if score is not None else text)
