"""Tutor: a short lesson on the topic of `/learn`, streamed.

When the user's notes cover the topic (the search step found passages), the lesson teaches from
them and cites them by document and page (`bot.agents.archives`).
"""

from __future__ import annotations

from bot.agents.archives import NOTES_RULE, notes_of, with_notes
from bot.agents.base import Agent, conversation, stream_reply
from bot.agents.strategist import ReplyPlan
from bot.pipeline.context import AgentOutput, PipelineContext

FROM_NOTES = (
    "Teach from the user's notes where they cover the topic: the lesson follows what the "
    "passages say, and cites them."
)


class TutorAgent(Agent):
    name = "tutor"
    replies = True
    max_tokens = 3000

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        plan = ctx.result_data("strategist")
        extras = [f"Topic of the lesson: {ctx.topic}" if ctx.topic else ""]
        if isinstance(plan, ReplyPlan):
            extras.append(plan.as_instructions())
        notes = notes_of(ctx)
        rules = [NOTES_RULE, FROM_NOTES] if notes else []
        messages = with_notes(conversation(ctx, self.prompt, *extras, rules=rules), notes)
        text = await stream_reply(ctx, messages, max_tokens=self.max_tokens)
        if not text.strip():
            raise ValueError("the model returned an empty lesson")
        return AgentOutput.ok(text=text)
