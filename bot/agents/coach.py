"""Coach: the reply of the support pipeline, streamed to the user as it is written.

It draws on the user's own notes when the search step found passages for the message, and
cites them by document and page (`bot.agents.archives`).
"""

from __future__ import annotations

from bot.agents.archives import NOTES_RULE, notes_of, with_notes
from bot.agents.base import Agent, conversation, stream_reply
from bot.agents.strategist import ReplyPlan
from bot.pipeline.context import AgentOutput, PipelineContext


class CoachAgent(Agent):
    name = "coach"
    replies = True
    max_tokens = 3000

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        plan = ctx.result_data("strategist")
        extra = plan.as_instructions() if isinstance(plan, ReplyPlan) else ""
        notes = notes_of(ctx)
        rules = [NOTES_RULE] if notes else []
        messages = with_notes(conversation(ctx, self.prompt, extra, rules=rules), notes)
        text = await stream_reply(ctx, messages, max_tokens=self.max_tokens)
        if not text.strip():
            raise ValueError("the model returned an empty reply")
        return AgentOutput.ok(text=text)
