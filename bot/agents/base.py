"""What every agent shares: a name (the key of model resolution), its prompt, and the context.

An agent is a small class:

    class Strategist(Agent):
        name = "strategist"
        async def run(self, ctx): ...

It reads what it needs from the context (history, summary, facts, earlier results), calls
`ctx.llm` (the provider resolved for *this* agent), and returns an `AgentOutput`. Prompts live
next to the agent as `<agent>.md`, so they can be read and reviewed as text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cache
from importlib import resources

from bot.llm.types import ChatMessage, assistant, system, user
from bot.pipeline.context import AgentOutput, PipelineContext

# How many earlier messages an agent sees (the summary covers the rest).
HISTORY_WINDOW = 12


@cache
def load_prompt(name: str) -> str:
    """The prompt file `bot/agents/<name>.md`, read once."""
    return resources.files("bot.agents").joinpath(f"{name}.md").read_text(encoding="utf-8").strip()


class Agent(ABC):
    # The agent's name: what `/setmodel` and model resolution know it by.
    name: str = ""
    # Where its output goes in `ctx.results`; defaults to the name (two steps of one agent, like
    # the trainer's grade and exercise, need two keys).
    key: str = ""
    # Replying agents' texts form the answer the user gets (and the stored assistant message).
    replies: bool = False
    # The prompt file's name without `.md`; defaults to the agent's name.
    prompt_name: str = ""
    # False for a step that calls no model (a search): the runner resolves none for it, and
    # `/models` does not list it.
    uses_model: bool = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.key:
            cls.key = cls.name

    @property
    def prompt(self) -> str:
        return load_prompt(self.prompt_name or self.name)

    @abstractmethod
    async def run(self, ctx: PipelineContext) -> AgentOutput: ...


def memory_block(ctx: PipelineContext) -> str:
    """What the bot remembers about this user and chat, as text for a system message."""
    lines: list[str] = []
    if ctx.summary:
        lines.append(f"Summary of the conversation so far:\n{ctx.summary}")
    if ctx.facts:
        lines.append("Known facts about the user:\n" + "\n".join(f"- {f}" for f in ctx.facts))
    return "\n\n".join(lines)


def history_messages(ctx: PipelineContext, window: int = HISTORY_WINDOW) -> list[ChatMessage]:
    recent = list(ctx.history)[-window:] if window else []
    return [user(m.text) if m.role == "user" else assistant(m.text) for m in recent]


def transcript(ctx: PipelineContext, window: int = HISTORY_WINDOW) -> str:
    """The recent conversation as plain text, for agents that analyse rather than reply."""
    recent = list(ctx.history)[-window:] if window else []
    lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.text}" for m in recent]
    return "\n".join(lines)


def conversation(
    ctx: PipelineContext, prompt: str, *extra_system: str, window: int = HISTORY_WINDOW
) -> list[ChatMessage]:
    """System prompt (+ memory + extras), the recent history, then the user's message."""
    parts = [prompt, memory_block(ctx), *extra_system]
    messages = [system("\n\n".join(p for p in parts if p))]
    messages += history_messages(ctx, window)
    messages.append(user(ctx.input_text))
    return messages


async def stream_reply(ctx: PipelineContext, messages: list[ChatMessage]) -> str:
    """Stream the reply to `ctx.on_text` as it comes; return the whole text."""
    pieces: list[str] = []
    async for chunk in ctx.llm.stream(messages):
        if chunk.delta:
            pieces.append(chunk.delta)
            await ctx.emit_text(chunk.delta)
    return "".join(pieces)
