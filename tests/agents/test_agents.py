"""Agents read what they need from the context and produce typed outputs."""

from __future__ import annotations

import json
from collections.abc import Sequence

from bot.agents.coach import CoachAgent
from bot.agents.extraction import ExtractedFacts, ExtractionAgent
from bot.agents.strategist import ReplyPlan, StrategistAgent
from bot.agents.summarizer import SummarizerAgent
from bot.agents.trainer import Grade, TrainerGradeAgent
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.storage.models import ChatSummary, Exercise, StoredMessage
from tests.services.fakes import scripted_reply


class Facts:
    def __init__(self) -> None:
        self.added: list[tuple[int, list[str]]] = []

    async def add_many(self, user_id: int, facts: Sequence[str]) -> list[object]:
        self.added.append((user_id, list(facts)))
        return []


def ctx_with(reply, **kwargs: object) -> tuple[PipelineContext, FunctionProvider]:  # type: ignore[no-untyped-def]
    llm = FunctionProvider(reply, provider="test", model="m")
    ctx = PipelineContext(pipeline="support", default_llm=llm, **kwargs)  # type: ignore[arg-type]
    return ctx.for_agent("x", llm), llm


async def test_extraction_keeps_only_new_facts_and_stores_them() -> None:
    def reply(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        return json.dumps({"facts": ["Is learning Go.", "  Lives in   Lyon. ", ""]})

    ctx, llm = ctx_with(reply, user_id=3, input_text="I moved to Lyon", facts=["is learning go."])
    facts = Facts()
    output = await ExtractionAgent(facts).run(ctx)  # type: ignore[arg-type]
    assert output.data == ExtractedFacts(facts=["Lives in Lyon."])
    assert facts.added == [(3, ["Lives in Lyon."])]
    assert llm.calls[0][1].schema is ExtractedFacts
    system, shown = llm.calls[0][0]
    # Known facts were shown, as background in the user turn, never in the system role.
    assert "is learning go." in shown.content
    assert shown.role == "user"
    assert "is learning go." not in system.content


async def test_coach_follows_the_plan_and_streams_to_the_sink() -> None:
    chunks: list[str] = []

    async def sink(text: str) -> None:
        chunks.append(text)

    history = [StoredMessage(chat_id=1, role="user", text="earlier question")]
    ctx, llm = ctx_with(
        lambda m, i: "A reply long enough to come in several chunks.",
        input_text="now",
        history=history,
        summary="Talked about exams.",
        on_text=sink,
    )
    ctx.set_result(
        "strategist", AgentOutput.ok(ReplyPlan(intent="reassurance", key_points=["breathe"]))
    )
    output = await CoachAgent().run(ctx)
    assert output.text == "A reply long enough to come in several chunks."
    assert len(chunks) > 1
    assert "".join(chunks) == output.text
    messages = llm.calls[0][0]
    assert messages[0].role == "system"
    assert "reassurance" not in messages[0].content
    assert "Talked about exams." not in messages[0].content
    background = messages[1]
    assert background.role == "user"
    assert "reassurance" in background.content
    assert "Talked about exams." in background.content
    assert [(m.role, m.content) for m in messages[2:]] == [
        ("user", "earlier question"),
        ("user", "now"),
    ]


async def test_strategist_returns_a_plan() -> None:
    ctx, _ = ctx_with(scripted_reply, input_text="help")
    output = await StrategistAgent().run(ctx)
    assert isinstance(output.data, ReplyPlan)
    assert output.data.intent == "plan by m"


async def test_summarizer_saves_the_summary_with_the_message_count() -> None:
    saved: list[ChatSummary] = []

    class Summaries:
        async def save(self, summary: ChatSummary) -> ChatSummary:
            saved.append(summary)
            return summary

    class Messages:
        async def count(self, chat_id: int) -> int:
            return 6

    ctx, llm = ctx_with(lambda m, i: " New summary. ", chat_id=9, input_text="hi", summary="Old.")
    ctx.set_result("coach", AgentOutput.ok(text="the reply"))
    output = await SummarizerAgent(Summaries(), Messages()).run(ctx)  # type: ignore[arg-type]
    assert output.data == "New summary."
    assert [(s.chat_id, s.summary, s.message_count) for s in saved] == [(9, "New summary.", 6)]
    prompt = llm.calls[0][0][1].content
    assert "Old." in prompt
    assert "Assistant: the reply" in prompt


async def test_summarizer_calls_the_model_only_once_the_summary_is_every_messages_behind() -> None:
    saved: list[ChatSummary] = []

    class Summaries:
        async def save(self, summary: ChatSummary) -> ChatSummary:
            saved.append(summary)
            return summary

    class Messages:
        total = 0

        async def count(self, chat_id: int) -> int:
            return self.total

    messages = Messages()
    agent = SummarizerAgent(Summaries(), messages, every=6)  # type: ignore[arg-type]
    calls = 0
    # (messages in the chat, messages the stored summary covers, stored summary)
    for total, covers, summary in [
        (2, 0, None),  # a new chat: summarized at once
        (4, 2, "S1"),  # 2 behind
        (7, 2, "S1"),  # 5 behind
        (8, 2, "S1"),  # 6 behind: rewritten
        (10, 8, "S2"),  # 2 behind again
    ]:
        messages.total = total
        ctx, llm = ctx_with(lambda m, i: f"Summary at {messages.total}.", chat_id=4, input_text="x")
        ctx.summary, ctx.summary_covers = summary, covers
        output = await agent.run(ctx)
        assert output.success
        calls += len(llm.calls)
        assert output.data == (saved[-1].summary if llm.calls else summary)

    assert calls == 2
    assert [(s.summary, s.message_count) for s in saved] == [
        ("Summary at 2.", 2),
        ("Summary at 8.", 8),
    ]


async def test_the_grader_skips_without_an_open_exercise_and_grades_with_one() -> None:
    graded: list[tuple[int, str, float]] = []

    class Exercises:
        async def grade(
            self, exercise_id: int, *, answer: str, grade: float, feedback: str
        ) -> None:
            graded.append((exercise_id, answer, grade))

    ctx, llm = ctx_with(scripted_reply, input_text="42")
    assert (await TrainerGradeAgent(Exercises()).run(ctx)).data is None  # type: ignore[arg-type]
    assert llm.calls == []

    exercise = Exercise(id=5, chat_id=1, user_id=1, topic="math", question="6*7?")
    ctx, _ = ctx_with(scripted_reply, input_text="42", exercise=exercise)
    output = await TrainerGradeAgent(Exercises()).run(ctx)  # type: ignore[arg-type]
    assert isinstance(output.data, Grade)
    assert output.text == "Score: 8/10. Nearly right."
    assert graded == [(5, "42", 0.8)]


async def test_the_archive_search_finds_nothing_for_a_group() -> None:
    from bot.agents.archives import ArchiveSearch
    from bot.storage.archive_models import PassageHit

    asked: list[int] = []

    class Source:
        async def retrieve(self, user_id: int, query: str, *, limit: int = 5) -> list[PassageHit]:
            asked.append(user_id)
            return []

    search = ArchiveSearch(Source())
    ctx, _ = ctx_with(scripted_reply, user_id=3, chat_id=-10, private=False, input_text="x")
    assert (await search.run(ctx)).data == []
    assert asked == []  # a user's notes never reach a group's prompt
    ctx, _ = ctx_with(scripted_reply, user_id=3, chat_id=3, input_text="x")
    await search.run(ctx)
    assert asked == [3]
