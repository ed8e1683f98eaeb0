"""Summarizer: keeps the chat's rolling summary, so agents remember beyond the history window.

Runs in the background after the reply. It folds the previous summary, the recent history and this
exchange into a new summary and saves it with the number of messages it covers.

It calls the model only when the summary has fallen `every` messages behind (SUMMARY_EVERY,
default 6: every third exchange), or when the chat has none yet. The agents read the last 20
messages verbatim besides the summary, so a summary up to `every` (at most 20) messages behind
forgets nothing they need, while a model call after every exchange would cost users a quarter
of the support pipeline's model spend for no gain (.planning/decisions/0004-hot-path.md).
"""

from __future__ import annotations

from bot.agents.base import Agent, transcript
from bot.llm.types import system, user
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.storage.models import ChatSummary
from bot.storage.repositories import MessageRepo, SummaryRepo

MAX_SUMMARY_CHARS = 2000


class SummarizerAgent(Agent):
    name = "summarizer"
    max_tokens = 600

    def __init__(
        self,
        summaries: SummaryRepo | None = None,
        messages: MessageRepo | None = None,
        *,
        every: int = 1,
    ) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self._summaries = summaries
        self._messages = messages
        self.every = every

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        # The turn's write may have said how many messages the chat has (InsForge); else count.
        count = ctx.message_count
        if count is None and self._messages is not None and ctx.chat_id is not None:
            count = await self._messages.count(ctx.chat_id)
        if (
            count is not None
            and ctx.summary is not None
            and count - ctx.summary_covers < self.every
        ):
            # Up to date enough: the history window still holds what it has not folded in.
            return AgentOutput.ok(text=None, data=ctx.summary)
        reply = "\n\n".join(out.text for out in ctx.results.values() if out.success and out.text)
        messages = [
            system(self.prompt),
            user(
                f"Previous summary:\n{ctx.summary or '(none)'}\n\n"
                f"Recent conversation:\n{transcript(ctx) or '(none)'}\n\n"
                f"Newest exchange:\nUser: {ctx.input_text}\nAssistant: {reply or '(no reply)'}"
            ),
        ]
        response = await ctx.llm.complete(messages, temperature=0, max_tokens=self.max_tokens)
        summary = response.text.strip()[:MAX_SUMMARY_CHARS]
        if not summary:
            raise ValueError("the model returned an empty summary")
        if self._summaries is not None and ctx.chat_id is not None:
            await self._summaries.save(
                ChatSummary(chat_id=ctx.chat_id, summary=summary, message_count=count or 0)
            )
        return AgentOutput.ok(text=None, data=summary)
