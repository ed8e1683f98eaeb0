"""Tutor: a short lesson on the topic of `/learn`, streamed."""

from __future__ import annotations

from bot.agents.base import Agent, conversation, stream_reply
from bot.agents.strategist import ReplyPlan
from bot.pipeline.context import AgentOutput, PipelineContext


class TutorAgent(Agent):
    name = "tutor"
    replies = True

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        plan = ctx.result_data("strategist")
        extras = [f"Topic of the lesson: {ctx.topic}" if ctx.topic else ""]
        if isinstance(plan, ReplyPlan):
            extras.append(plan.as_instructions())
        text = await stream_reply(ctx, conversation(ctx, self.prompt, *extras))
        if not text.strip():
            raise ValueError("the model returned an empty lesson")
        return AgentOutput.ok(text=text)
