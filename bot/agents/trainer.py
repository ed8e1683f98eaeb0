"""Trainer: drills the user. One step grades the answer to the open exercise (structured), the
next sets a new exercise (structured), so `/train <topic>` starts a drill and every answer gets a
grade and the next question.

Both run as the agent `trainer` (one model setting), under different result keys.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bot.agents.base import Agent, background, recall
from bot.llm.types import system, user
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.storage.models import Exercise
from bot.storage.repositories import ExerciseRepo

DEFAULT_TOPIC = "general practice"


class ExerciseSpec(BaseModel):
    question: str = Field(description="One exercise the user can answer in a message or two.")


class Grade(BaseModel):
    score: float = Field(ge=0, le=1, description="0 = wrong, 1 = fully right.")
    feedback: str = Field(description="Two or three sentences: what was right, what to fix.")


def _topic(ctx: PipelineContext) -> str:
    if ctx.topic:
        return ctx.topic
    if ctx.exercise is not None:
        return ctx.exercise.topic
    return DEFAULT_TOPIC


class TrainerAgent(Agent):
    """Sets the next exercise on the topic."""

    name = "trainer"
    replies = True
    key = "trainer"
    max_tokens = 500

    def __init__(self, exercises: ExerciseRepo | None = None) -> None:
        self._exercises = exercises

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        topic = _topic(ctx)
        previous = f"Previous exercise: {ctx.exercise.question}" if ctx.exercise else ""
        notes = background(recall(ctx).notes, previous)
        messages = [
            system(self.prompt),
            user((f"{notes}\n\n" if notes else "") + f"Topic: {topic}"),
        ]
        response = await ctx.llm.complete(
            messages, schema=ExerciseSpec, temperature=0.7, max_tokens=self.max_tokens
        )
        spec = response.parsed
        assert isinstance(spec, ExerciseSpec)
        question = spec.question.strip()
        if not question:
            raise ValueError("the model returned an empty exercise")
        stored = None
        if self._exercises is not None and ctx.chat_id is not None and ctx.user_id is not None:
            stored = await self._exercises.create(
                Exercise(chat_id=ctx.chat_id, user_id=ctx.user_id, topic=topic, question=question)
            )
        text = f"Exercise ({topic}):\n{question}"
        graded = ctx.results.get(TrainerGradeAgent.key)
        await ctx.emit_text(("\n\n" if graded and graded.text else "") + text)
        return AgentOutput.ok(stored or spec, text=text)


class TrainerGradeAgent(Agent):
    """Grades the user's message as the answer to the chat's open exercise (if there is one)."""

    name = "trainer"
    replies = True
    key = "trainer_grade"
    prompt_name = "trainer_grade"
    max_tokens = 400

    def __init__(self, exercises: ExerciseRepo | None = None) -> None:
        self._exercises = exercises

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        exercise = ctx.exercise
        # Nothing to grade: no open exercise, or `/train <topic>` starts a new drill.
        if exercise is None or ctx.topic is not None:
            return AgentOutput.ok(None)
        messages = [
            system(self.prompt),
            user(
                f"Topic: {exercise.topic}\nExercise: {exercise.question}\n\n"
                f"The user's answer:\n{ctx.input_text}"
            ),
        ]
        response = await ctx.llm.complete(
            messages, schema=Grade, temperature=0, max_tokens=self.max_tokens
        )
        grade = response.parsed
        assert isinstance(grade, Grade)
        if self._exercises is not None and exercise.id is not None:
            await self._exercises.grade(
                exercise.id, answer=ctx.input_text, grade=grade.score, feedback=grade.feedback
            )
        text = f"Score: {round(grade.score * 10)}/10. {grade.feedback.strip()}"
        await ctx.emit_text(text)
        return AgentOutput.ok(grade, text=text)
