"""A small support-shaped pipeline on in-process providers, and helpers to read a trace tree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.llm.protocol import LLMProvider
from bot.llm.specs import parse_spec
from bot.llm.types import ChatMessage, system, user
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.services.model_resolution import Resolution, Source, UserModelChoice
from tests.fakes.otlp_receiver import ReceivedSpan


@dataclass
class LLMAgent:
    """Asks its model once (or streams the answer when it replies to the user)."""

    name: str
    replies: bool = False
    stream: bool = False

    @property
    def key(self) -> str:
        return self.name

    def prompt(self, ctx: PipelineContext) -> list[ChatMessage]:
        return [system(f"You are the {self.name}."), user(ctx.input_text)]

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        if self.stream:
            parts: list[str] = []
            async for chunk in ctx.llm.stream(self.prompt(ctx)):
                if chunk.delta:
                    parts.append(chunk.delta)
                    await ctx.emit_text(chunk.delta)
            text = "".join(parts)
            return AgentOutput.ok(text=text)
        response = await ctx.llm.complete(self.prompt(ctx), temperature=0.2, max_tokens=64)
        return AgentOutput.ok(data={"said": response.text}, text=response.text)


@dataclass
class TableResolver:
    """Resolution from a fixed table: agent -> (provider, spec, source)."""

    table: dict[str, tuple[LLMProvider, str, Source]] = field(default_factory=dict)

    async def resolve(
        self, agent: str, *, pipeline: str | None = None, user: UserModelChoice | None = None
    ) -> Resolution:
        provider, spec, source = self.table[agent]
        return Resolution(provider=provider, spec=parse_spec(spec), source=source)


def by_name(spans: Sequence[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReceivedSpan], name: str) -> ReceivedSpan:
    found = by_name(spans, name)
    assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return found[0]


def children(spans: Sequence[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_id == parent.span_id]


def generations(spans: Sequence[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if span.observation_type == "generation"]
