"""End to end: post-completion tasks through the real Telegram layer, the real pipeline, the
real SDKs against the loopback model server and the real Langfuse SDK exporting to the loopback
receiver. A score task at sample=100 % scores every turn once: stored against the turn, on the
turn's trace as a Langfuse score, a step of that trace, in the ledger; its model is an override
that `/setmodel <task>` changes; bad input is answered kindly."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.services.trials import arm_of
from bot.storage.task_models import ScoreStats, TaskResult
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

JUDGE = "judge"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as server:
        yield server


def judge_reply(request: RecordedRequest) -> str:
    # The judge sees the turn in its user message; it scores by what it read there.
    turn = request.messages[-1]["content"]
    return json.dumps({"score": 0.75 if "I sleep badly" in turn else 0.25, "reason": "clear"})


async def _say_admin(harness: Harness, text: str) -> str:
    (reply,) = await harness.say(text, user_id=ADMIN, timeout=40)
    return reply


async def test_a_score_task_scores_every_turn_once_stored_and_on_the_trace(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, receiver: OtlpReceiver
) -> None:
    llm.script("m-judge", judge_reply)
    settings = make_settings(
        tmp_path,
        tg,
        llm,
        langfuse_public_key=f"pk-lf-test-{uuid.uuid4().hex[:12]}",
        langfuse_secret_key=f"sk-lf-{uuid.uuid4().hex}",
        langfuse_base_url=receiver.base_url,
    )
    async with running_bot(settings, tg, llm, traced=True) as bot:
        added = await _say_admin(
            bot,
            f"/task add {JUDGE} openai:m-judge kind=score sample=100 Was the reply helpful?",
        )
        assert added.startswith(
            f"Task {JUDGE} added (score): after 100% of turns of every pipeline, on openai:m-judge."
        )
        assert f"{JUDGE} now runs on openai:m-judge" in added

        texts = ["I sleep badly", "how do I focus?", "thanks"]
        for text in texts:
            await bot.say(text, user_id=USER, timeout=40)
        await bot.services.runner.wait_background()

        judged = bot.llm.requests_for("m-judge")
        assert len(judged) == len(texts)
        for request, text in zip(judged, texts, strict=True):
            assert request.messages[0]["role"] == "system"
            assert "Was the reply helpful?" in request.messages[0]["content"]
            turn = request.messages[-1]["content"]
            assert f"The user's message:\n{text}" in turn
            assert "Try a fixed wind-down routine (m-coach)." in turn  # the reply
            assert "- strategist: " in turn  # a helper's output
            assert request.body["response_format"]["type"] == "json_schema"

        stored = await bot.services.storage.messages.recent(USER, 10)
        turns = {m.id: m.trace_id for m in stored if m.role == "user"}
        results: list[TaskResult] = await bot.services.storage.tasks.results(JUDGE, 10)
        assert sorted(r.turn_id or 0 for r in results) == sorted(turns)
        assert sorted(r.score or 0 for r in results) == [0.25, 0.25, 0.75]
        assert {r.model for r in results} == {"openai:m-judge"}
        assert {r.trace_id for r in results} == set(turns.values())

        shown = await _say_admin(bot, f"/task show {JUDGE}")
        assert shown.count("0.25 clear") == 2
        assert shown.count("0.75 clear") == 1

        await bot.services.observer.flush()  # type: ignore[attr-defined]
        assert await receiver.wait_until_async(lambda r: len(r.scores()) >= 3)
        scores = [s for s in receiver.scores() if s["name"] == JUDGE]
        assert sorted((s["traceId"], s["value"]) for s in scores) == sorted(
            (r.trace_id, r.score) for r in results
        )
        # /stats credits the scores to each agent x model that answered in the scored turns.
        await bot.services.ledger.flush()  # type: ignore[union-attr]
        stats = await _say_admin(bot, "/stats coach")
        expected = ScoreStats(
            JUDGE,
            "coach",
            "m-coach",
            3,
            sum(r.score or 0 for r in results) / 3,
            sum((r.score or 0) ** 2 for r in results) / 3,
        )
        assert "Judge scores (score tasks, 0-1: mean, 95% CI, turns scored):" in stats
        assert f"  coach x m-coach: {JUDGE} {expected.text()}" in stats
        assert expected.text().startswith("0.42 (0.09-0.74, n=3)")

        # The task ran as a step of each turn's trace.
        for trace_id in turns.values():
            assert await receiver.wait_until_async(
                lambda r, t=trace_id: any(s.trace_id == t and s.name == JUDGE for s in r.spans())
            )

        # In the ledger, as the task's own agent row, on its override.
        db = bot.services.storage.db  # type: ignore[attr-defined]
        rows = await db.read(
            "SELECT agent, level, pipeline FROM ledger_calls WHERE model = 'm-judge'",
            action="test",
        )
        assert [tuple(r) for r in rows] == [(JUDGE, "override", "support")] * 3

        # /setmodel moves the task like any agent; /task remove stops it.
        moved = await _say_admin(bot, f"/setmodel {JUDGE} openai:m-judge2")
        assert moved.startswith(f"{JUDGE} now runs on openai:m-judge2")
        llm.script("m-judge2", judge_reply)
        await bot.say("I sleep badly", user_id=USER, timeout=40)
        await bot.services.runner.wait_background()
        assert len(bot.llm.requests_for("m-judge2")) == 1
        # A /trial of the task, by its name: the candidate arm's users get the candidate judge.
        started = await _say_admin(bot, f"/trial {JUDGE} openai:m-judge3 share=50")
        assert started.startswith("Trial ")
        llm.script("m-judge3", judge_reply)
        trial = (await bot.services.trials.running())[JUDGE]  # type: ignore[union-attr]
        users = [900_100 + n for n in range(12)]
        on_candidate = [u for u in users if arm_of(trial, u) == "candidate"]
        assert 0 < len(on_candidate) < len(users)
        for user in users:
            await bot.say("I sleep badly", user_id=user, timeout=40)
        await bot.services.runner.wait_background()
        assert len(bot.llm.requests_for("m-judge3")) == len(on_candidate)
        assert (await _say_admin(bot, f"/trial stop {JUDGE}")).startswith("Trial ")
        removed = await _say_admin(bot, f"/task remove {JUDGE}")
        assert removed.startswith(f"Task {JUDGE} removed")
        judge2 = len(bot.llm.requests_for("m-judge2"))
        await bot.say("thanks", user_id=USER, timeout=40)
        await bot.services.runner.wait_background()
        assert len(bot.llm.requests_for("m-judge2")) == judge2


async def test_task_commands_answer_bad_input_kindly(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as bot:
        assert (await _say_admin(bot, "/task")).startswith("Usage: /task add <name> <model>")
        assert (await _say_admin(bot, "/task add judge")).startswith("Usage: /task add")
        assert (await _say_admin(bot, "/task add coach openai:m-judge Rate it")).startswith(
            "Not added: 'coach' cannot be a task's name"
        )
        unknown = await _say_admin(bot, "/task add judge nosuch:model Rate it")
        assert unknown.startswith("Not added: ")
        assert (await _say_admin(bot, "/task add judge openai:m-judge sample=0 Rate")) == (
            "Not added: sample must be above 0 and at most 100 percent."
        )
        assert (await _say_admin(bot, "/task add judge openai:m-judge on=chat Rate")).startswith(
            "Not added: 'chat' is not a pipeline"
        )
        assert (await _say_admin(bot, "/task add judge openai:m-judge kind=score")).startswith(
            "Not added: the task needs its text."
        )
        assert (await _say_admin(bot, "/task list")).startswith("No tasks yet.")
        note = await _say_admin(bot, "/task add tone openai:m-judge on=learn sample=50 Note it")
        assert note.startswith("Task tone added (note): after 50% of learn turns")
        again = await _say_admin(bot, "/task add tone openai:m-judge Again")
        assert again == "Not added: a task named tone exists (/task remove it)."
        listed = await _say_admin(bot, "/task list")
        assert listed.startswith("tone  note  on learn  50%")
        assert (await _say_admin(bot, "/task show nope")) == "No task named 'nope' (/task list)."
        (refused,) = await bot.say("/task list", user_id=USER)
        assert refused == "Sorry, that command is for the bot's admins."
