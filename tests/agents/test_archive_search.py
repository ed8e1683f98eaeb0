"""The search of the user's notes: a step beside the helpers that runs no model, asks only for
the asking user's passages, and whose passages reach the reply's prompt as a user message."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.agents.archives import NOTES, NOTES_RULE, ArchiveSearch
from bot.agents.tutor import TutorAgent
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.specs import parse_spec
from bot.llm.types import ChatMessage
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.pipelines import build_pipelines
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Parallel, Pipeline, Step
from bot.services.model_resolution import Resolution
from bot.storage.archive_models import PassageHit
from tests.pipeline.helpers import FnAgent, context

HIT = PassageHit(
    passage_id=1, archive_id=3, document="geo.pdf", page=7, text="Quellport, 1742.", score=1.0
)


class Source:
    """Passages for user 5 only; `started` is set once a search is under way."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str]] = []
        self.started = asyncio.Event()

    async def retrieve(self, user_id: int, query: str, *, limit: int = 5) -> list[PassageHit]:
        self.asked.append((user_id, query))
        self.started.set()
        await asyncio.sleep(0)
        return [HIT] if user_id == 5 else []


async def test_the_search_runs_beside_the_strategist_and_without_a_model() -> None:
    source = Source()

    async def strategist(ctx: PipelineContext) -> AgentOutput:
        # Would wait forever if the search ran after the helpers instead of beside them.
        await asyncio.wait_for(source.started.wait(), 5)
        return AgentOutput.ok(data=None)

    resolved: list[str] = []

    class Resolver:
        async def resolve(self, agent: str, **kwargs: object) -> Resolution:
            resolved.append(agent)
            return Resolution(ctx.default_llm, parse_spec("openai:m"), "default")

    pipeline = Pipeline(
        "learn",
        [Parallel([Step(FnAgent("strategist", strategist)), Step(ArchiveSearch(source))])],
    )
    ctx = context("learn", user_id=5, topic="Quellport")
    ctx.resolver = Resolver()
    result = await PipelineRunner().run(pipeline, ctx)
    assert result.success
    assert resolved == ["strategist"]
    assert source.asked == [(5, "Quellport")]
    assert ctx.result_data(NOTES) == [HIT]
    assert NOTES not in ctx.resolutions


def test_the_pipelines_search_beside_the_helpers_and_list_no_model_for_it() -> None:
    pipelines = build_pipelines(archives=Source())
    for name, helpers in (("support", {"extraction", "strategist"}), ("learn", {"strategist"})):
        first = pipelines[name].stages[0]
        assert isinstance(first, Parallel)
        assert {step.name for step in first.steps} == {*helpers, NOTES}
        assert NOTES not in pipelines[name].agents()  # /models lists only agents on a model
    without = build_pipelines()
    assert all(NOTES not in p.agents() for p in without.values())
    assert isinstance(without["learn"].stages[0], Step)


async def test_the_tutor_gets_the_passages_as_a_user_message_and_the_rule_to_cite() -> None:
    seen: list[Sequence[ChatMessage]] = []

    def reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        seen.append(messages)
        return "Founded in 1742 (geo.pdf, p. 7)."

    llm = FunctionProvider(reply, provider="test", model="m")
    ctx = PipelineContext(pipeline="learn", default_llm=llm, user_id=5, input_text="Quellport")
    ctx.set_result(NOTES, AgentOutput.ok(data=[HIT]))
    output = await TutorAgent().run(ctx.for_agent("tutor", llm))
    assert output.text == "Founded in 1742 (geo.pdf, p. 7)."
    [messages] = seen
    assert [m.role for m in messages] == ["system", "user", "user"]
    assert NOTES_RULE in messages[0].content
    assert "Quellport, 1742." not in messages[0].content
    assert "[1] geo.pdf, p. 7\nQuellport, 1742." in messages[1].content
    assert messages[2].content == "Quellport"

    # Without passages the prompt is as before: no rule, no extra message.
    seen.clear()
    plain = PipelineContext(pipeline="learn", default_llm=llm, user_id=6, input_text="Quellport")
    await TutorAgent().run(plain.for_agent("tutor", llm))
    [messages] = seen
    assert [m.role for m in messages] == ["system", "user"]
    assert NOTES_RULE not in messages[0].content
