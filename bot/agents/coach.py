"""Coach: the reply of the support pipeline, streamed to the user as it is written."""

from __future__ import annotations

from bot.agents.base import Agent, conversation, stream_reply
from bot.agents.strategist import ReplyPlan
from bot.pipeline.context import AgentOutput, PipelineContext


class CoachAgent(Agent):
    name = "coach"
    replies = True

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        plan = ctx.result_data("strategist")
        extra = plan.as_instructions() if isinstance(plan, ReplyPlan) else ""
        text = await stream_reply(ctx, conversation(ctx, self.prompt, extra))
        if not text.strip():
            raise ValueError("the model returned an empty reply")
        return AgentOutput.ok(text=text)
