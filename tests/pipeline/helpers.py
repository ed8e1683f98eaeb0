"""Test agents and contexts for runner tests: agents whose behaviour is a function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.llm.function_provider import FunctionProvider
from bot.pipeline.context import AgentOutput, PipelineContext

Behaviour = Callable[[PipelineContext], Awaitable[AgentOutput]]


@dataclass
class FnAgent:
    name: str
    behaviour: Behaviour
    replies: bool = False
    key: str = ""

    def __post_init__(self) -> None:
        self.key = self.key or self.name

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        return await self.behaviour(ctx)


def text_agent(name: str, text: str, *, replies: bool = True) -> FnAgent:
    async def run(ctx: PipelineContext) -> AgentOutput:
        await ctx.emit_text(text)
        return AgentOutput.ok(text=text)

    return FnAgent(name, run, replies=replies)


def context(pipeline: str = "support", **kwargs: object) -> PipelineContext:
    default = FunctionProvider(lambda m, i: "default", provider="test", model="default")
    return PipelineContext(pipeline=pipeline, default_llm=default, input_text="hi", **kwargs)  # type: ignore[arg-type]
