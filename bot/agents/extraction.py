"""Extraction: durable facts about the user from their latest message (structured output)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.agents.base import Agent, background, recall, transcript_of
from bot.llm.types import system, user
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.storage.repositories import FactRepo

MAX_FACT_LENGTH = 300


class ExtractedFacts(BaseModel):
    facts: list[str] = Field(
        default_factory=list,
        description="New durable facts about the user, one short sentence each; empty if none.",
    )


class ExtractionAgent(Agent):
    name = "extraction"
    max_tokens = 400

    def __init__(self, facts: FactRepo | None = None) -> None:
        # Without a repository (unit tests) the facts are only returned, not stored.
        self._facts = facts

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        if not ctx.private:
            # Facts are a user's own and reach only their private prompts; what they say in a
            # group stays the group's (its history and summary).
            return AgentOutput.ok(ExtractedFacts())
        memory = recall(ctx, 6)
        notes = background(memory.notes)
        messages = [
            system(self.prompt),
            user(
                (f"{notes}\n\n" if notes else "")
                + f"Recent conversation:\n{transcript_of(memory) or '(none)'}\n\n"
                f"The user's new message:\n{ctx.input_text}"
            ),
        ]
        response = await ctx.llm.complete(
            messages, schema=ExtractedFacts, temperature=0, max_tokens=self.max_tokens
        )
        extracted = response.parsed
        assert isinstance(extracted, ExtractedFacts)
        known = {f.strip().lower() for f in ctx.facts}
        new: list[str] = []
        for fact in extracted.facts:
            text = " ".join(fact.split())[:MAX_FACT_LENGTH]
            if text and text.lower() not in known:
                known.add(text.lower())
                new.append(text)
        if new and self._facts is not None and ctx.user_id is not None:
            # A storage error fails the step loudly (logged, traced); facts are not dropped
            # silently.
            await self._facts.add_many(ctx.user_id, new)
        return AgentOutput.ok(ExtractedFacts(facts=new))
