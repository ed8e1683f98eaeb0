"""Strategist: a plan for the reply (structured), which the coach or tutor then follows."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from bot.agents.base import Agent, background, recall, transcript_of
from bot.llm.types import system, user
from bot.pipeline.context import AgentOutput, PipelineContext


class ReplyPlan(BaseModel):
    intent: str = Field(description="What the user wants or needs right now, in a few words.")
    approach: Literal["encourage", "advise", "explain", "ask", "challenge", "listen"] = "advise"
    key_points: list[str] = Field(default_factory=list, description="At most four points.")
    tone: str = Field(default="warm and direct")
    ask_follow_up: bool = Field(default=False, description="End with one question?")

    def as_instructions(self) -> str:
        points = "\n".join(f"- {p}" for p in self.key_points[:4]) or "- (your judgement)"
        follow = "End with one short question." if self.ask_follow_up else "No closing question."
        return (
            f"Reply plan: the user wants: {self.intent}. Approach: {self.approach}. "
            f"Tone: {self.tone}.\nCover:\n{points}\n{follow}"
        )


class StrategistAgent(Agent):
    name = "strategist"
    max_tokens = 400

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        task = f"Topic the user asked to learn: {ctx.topic}\n\n" if ctx.topic else ""
        memory = recall(ctx)
        notes = background(memory.notes)
        messages = [
            system(self.prompt),
            user(
                (f"{notes}\n\n" if notes else "")
                + f"{task}Recent conversation:\n{transcript_of(memory) or '(none)'}\n\n"
                f"The user's new message:\n{ctx.input_text}"
            ),
        ]
        response = await ctx.llm.complete(
            messages, schema=ReplyPlan, temperature=0.2, max_tokens=self.max_tokens
        )
        plan = response.parsed
        assert isinstance(plan, ReplyPlan)
        return AgentOutput.ok(plan)
