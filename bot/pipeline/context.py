"""What an agent sees of one message: who, what, the conversation so far, and earlier results.

    llm = await ctx.get_llm_for_agent("strategist")     # resolution recorded on ctx
    step_ctx = ctx.for_agent("strategist", llm)          # a copy with its own llm
    output = await agent.run(step_ctx)
    ctx.set_result("strategist", output)                 # results are shared by all copies

Copies are shallow on purpose: `results` and `resolutions` are the same dicts for the whole run,
while `llm`/`agent` belong to the copy, so two parallel agents never see each other's model.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from bot.llm.protocol import LLMProvider
from bot.services.model_resolution import Resolution, UserModelChoice
from bot.storage.models import Exercise, StoredMessage

TextSink = Callable[[str], Awaitable[None]]

# PROMPT_BUDGET_TOKENS' default.
DEFAULT_PROMPT_BUDGET = 3000


@dataclass(slots=True)
class AgentOutput:
    """What one step produced. A failed step has `success=False` and a readable `error`."""

    success: bool
    data: Any = None
    text: str | None = None
    error: str | None = None

    @classmethod
    def ok(cls, data: Any = None, text: str | None = None) -> AgentOutput:
        return cls(True, data, text)

    @classmethod
    def failed(cls, error: str) -> AgentOutput:
        return cls(False, error=error)


class Resolver(Protocol):
    async def resolve(
        self,
        agent: str,
        *,
        pipeline: str | None = None,
        user: UserModelChoice | None = None,
        user_id: int | None = None,
    ) -> Resolution: ...


class BudgetGuard(Protocol):
    """Puts an agent's provider behind its budgets (`bot.services.budgets.Budgets`)."""

    def guard(
        self,
        agent: str,
        provider: LLMProvider,
        *,
        user_id: int | None,
        optional: bool,
        preference: str = "any",
    ) -> LLMProvider: ...


@dataclass(slots=True)
class PipelineContext:
    pipeline: str
    default_llm: LLMProvider
    user_id: int | None = None
    chat_id: int | None = None
    input_text: str = ""
    # `/learn <topic>` or `/train <topic>`; None for plain messages.
    topic: str | None = None
    # The conversation before this message, oldest first; the summary of what came before.
    history: Sequence[StoredMessage] = ()
    summary: str | None = None
    # How many of the chat's messages `summary` covers (the summarizer rewrites it when behind).
    summary_covers: int = 0
    # The chat's message count once this turn's messages are stored, when the write said so
    # (InsForge's one-request turn write); None: the summarizer counts for itself.
    message_count: int | None = None
    facts: Sequence[str] = ()
    # Whether only this user reads the replies (a private chat, the console): a user's facts
    # are theirs, so they reach prompts only there (in a group, only what the group said does).
    private: bool = True
    # Tokens the history and the notes may take in a prompt (`bot.agents.budget`).
    prompt_budget: int = DEFAULT_PROMPT_BUDGET
    # The train pipeline's open (ungraded) exercise for this chat, if any.
    exercise: Exercise | None = None
    user_model: UserModelChoice | None = None
    resolver: Resolver | None = None
    # Budgets (BUDGET_*): every model call of an agent is reserved and settled there.
    budgets: BudgetGuard | None = None
    # Where replying agents send text as it is generated (Telegram streamer, console print).
    on_text: TextSink | None = None
    trace_id: str | None = None
    results: dict[str, AgentOutput] = field(default_factory=dict)
    resolutions: dict[str, Resolution] = field(default_factory=dict)
    # The agent this copy belongs to and its provider; None on the run's own context.
    agent: str | None = None
    _llm: LLMProvider | None = None

    @property
    def llm(self) -> LLMProvider:
        """The provider of the agent this copy was made for (the default on the run context)."""
        return self._llm if self._llm is not None else self.default_llm

    async def get_llm_for_agent(self, agent: str, *, optional: bool = False) -> LLMProvider:
        """Resolve the agent's provider now (override/user/agent/pipeline/default); record why.
        With budgets, the provider comes behind them (`optional`: the step may be skipped)."""
        if self.resolver is None:
            provider = self.default_llm
        else:
            resolution = await self.resolver.resolve(
                agent, pipeline=self.pipeline, user=self.user_model, user_id=self.user_id
            )
            self.resolutions[agent] = resolution
            provider = resolution.provider
        if self.budgets is not None:
            provider = self.budgets.guard(agent, provider, user_id=self.user_id, optional=optional)
        return provider

    def for_agent(self, agent: str, llm: LLMProvider) -> PipelineContext:
        clone = _new_context()
        for name in _SLOTS:
            _set(clone, name, _get(self, name))
        clone.agent = agent
        clone._llm = llm
        return clone

    def set_result(self, agent: str, output: AgentOutput) -> None:
        self.results[agent] = output

    def result_data(self, agent: str) -> Any:
        """An earlier agent's data when it succeeded, else None (agents degrade gracefully)."""
        output = self.results.get(agent)
        return output.data if output is not None and output.success else None

    async def emit_text(self, chunk: str) -> None:
        if chunk and self.on_text is not None:
            await self.on_text(chunk)


# A shallow copy by hand: a few times cheaper than copy.copy on a slotted dataclass, and the
# runner makes one per step.
_SLOTS: tuple[str, ...] = tuple(f.name for f in fields(PipelineContext))
_get = object.__getattribute__
_set = object.__setattr__


def _new_context() -> PipelineContext:
    return PipelineContext.__new__(PipelineContext)
