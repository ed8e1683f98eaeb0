"""End to end: `/replay` through the real Telegram layer, the real pipeline and the real SDKs
against the loopback model server. The candidate must receive exactly what the agent sent
before (messages, system prompt, schema, max_tokens, temperature, streaming), one report row per
input; only an admin may press the button; a `/prefer local` user's inputs never reach a cloud
candidate; `/forget` erases what was kept."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.replay.commands import parse_button
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

OTHER = 902
LOCAL_USER = 903
# What a request is, apart from the model it asked for.
SAME = ("messages", "system", "max_tokens", "temperature", "stream", "response_format")


@pytest.fixture
async def harness(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> AsyncIterator[Harness]:
    settings = make_settings(tmp_path, tg, llm, replay_keep=10, local_model="", summary_every=20)
    async with running_bot(settings, tg, llm) as running:
        yield running


def sent_as(request: RecordedRequest) -> dict[str, Any]:
    return {key: request.body.get(key) for key in SAME}


async def _turns(harness: Harness, texts: list[tuple[int, str]]) -> None:
    for user, text in texts:
        await harness.say(text, user_id=user, timeout=40)
    await harness.services.runner.wait_background()
    assert harness.services.replay_keeper is not None
    await harness.services.replay_keeper.flush()


async def _ask(harness: Harness, command: str) -> tuple[str, str | None]:
    mark = len(harness.tg.calls)
    harness.tg.user_message(command, user_id=ADMIN)
    (call,) = await harness.tg.wait_for_call("sendMessage", chat_id=ADMIN, since=mark)
    markup = call.params.get("reply_markup")
    data = None
    if markup:
        data = markup["inline_keyboard"][0][0]["callback_data"]
    return call.params["text"], data


async def _press_and_report(harness: Harness, data: str, messages: int) -> list[str]:
    mark = len(harness.tg.calls)
    harness.tg.callback_query(data, user_id=ADMIN)
    # "Replaying ...", then the report.
    calls = await harness.tg.wait_for_call(
        "sendMessage", chat_id=ADMIN, since=mark, count=1 + messages, timeout=60
    )
    return [c.params["text"] for c in calls[1:]]


async def test_replay_sends_the_candidate_exactly_what_the_agent_sent(harness: Harness) -> None:
    users = [(USER, "I sleep badly"), (OTHER, "how do I focus?"), (USER, "and on weekends?")]
    await _turns(harness, users)
    coach_before = harness.agent_requests("coach")
    strategist_before = harness.agent_requests("strategist")
    assert len(coach_before) == len(strategist_before) == 3

    # The coach streams on Anthropic: the candidate is another Anthropic model.
    text, data = await _ask(harness, "/replay coach anthropic:m-candidate n=3")
    assert text.startswith("Replay of coach's last 3 input(s) on anthropic:m-candidate.")
    assert "Estimated cost: unpriced" in text
    assert data is not None
    assert parse_button(data) is not None
    mark = len(harness.llm.requests)
    report = await _press_and_report(harness, data, 1)
    replayed = harness.llm.requests[mark:]
    assert [r.model for r in replayed] == ["m-candidate"] * 3
    assert sorted(map(str, map(sent_as, replayed))) == sorted(map(str, map(sent_as, coach_before)))
    (body,) = report
    rows = re.findall(r"^#(\d+) ", body, flags=re.M)
    assert rows == ["1", "2", "3"]
    assert body.count("candidate (anthropic:m-candidate)") == 3
    assert body.count("Try a fixed wind-down routine (m-candidate).") == 3
    assert body.count("Try a fixed wind-down routine (m-coach).") == 3
    assert "Totals over 3 input(s):" in body
    assert "candidate: 3/3 answered" in body

    # The strategist's structured call: the schema goes as it went (OpenAI response_format).
    _text, data = await _ask(harness, "/replay strategist openai:m-cand2 n=2")
    assert data is not None
    mark = len(harness.llm.requests)
    await _press_and_report(harness, data, 1)
    replayed = harness.llm.requests[mark:]
    assert len(replayed) == 2
    assert [sent_as(r) for r in replayed] == [sent_as(r) for r in strategist_before[1:]]
    assert all(r.body["response_format"]["type"] == "json_schema" for r in replayed)

    # Replay calls are in the ledger as pipeline `replay`, with no turn and no user.
    await harness.services.ledger.flush()  # type: ignore[union-attr]
    db = harness.services.storage.db  # type: ignore[attr-defined]
    rows_db = await db.read(
        "SELECT pipeline, agent, level, turn_id, user_id FROM ledger_calls WHERE model = ?",
        ("m-candidate",),
        action="test",
    )
    assert [tuple(r) for r in rows_db] == [("replay", "coach", "replay", None, None)] * 3
    # And they are never kept as inputs to replay.
    kept = await harness.services.storage.replay.recent("coach", 10)
    assert [k.model for k in kept] == ["m-coach"] * 3


async def test_only_admins_press_and_local_users_inputs_stay_out(
    harness: Harness, tg: FakeTelegramServer
) -> None:
    await harness.services.storage.settings.set_model_preference(LOCAL_USER, "local")
    await _turns(harness, [(USER, "I sleep badly")])
    # A local-preference user's turn: recorded with that preference (served by whatever local
    # model there is: here none, so the turn may fail; what matters is what is kept).
    harness.services.replay_keeper.keep(  # type: ignore[union-attr]
        _local_copy(await harness.services.storage.replay.recent("coach", 1))
    )
    await harness.services.replay_keeper.flush()  # type: ignore[union-attr]
    text, data = await _ask(harness, "/replay coach anthropic:m-candidate n=5")
    assert "(asked for 5, 1 kept)" in text
    assert "1 input(s) left out: their user prefers local models" in text
    assert data is not None

    mark = len(tg.calls)
    tg.callback_query(data, user_id=USER, chat_id=ADMIN)
    (answer,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
    assert "for the bot's admins" in answer.params["text"]
    assert harness.llm.requests_for("m-candidate") == []

    report = await _press_and_report(harness, data, 1)
    assert len(harness.llm.requests_for("m-candidate")) == 1
    assert "1 input(s) left out" in report[-1]


def _local_copy(found: list[Any]) -> Any:
    (item,) = found
    item.preference, item.user_id, item.chat_id, item.input_id, item.id = (
        "local",
        LOCAL_USER,
        LOCAL_USER,
        "",
        None,
    )
    return item


async def test_bad_input_is_answered_kindly(harness: Harness) -> None:
    text, data = await _ask(harness, "/replay coach")
    assert text.startswith("Usage: /replay <agent> <model> [n=20]")
    assert data is None
    text, _ = await _ask(harness, "/replay poet anthropic:m-candidate")
    assert text.startswith("'poet' is not an agent")
    text, _ = await _ask(harness, "/replay coach nosuch:model")
    assert text.startswith("Not run: ")
    text, _ = await _ask(harness, "/replay coach anthropic:m-candidate n=11")
    assert "At most 10 inputs are kept per agent (REPLAY_KEEP)" in text
    text, data = await _ask(harness, "/replay coach anthropic:m-candidate")
    assert text.startswith("No inputs of coach to replay yet")
    assert data is None


async def test_forget_erases_the_kept_inputs(harness: Harness) -> None:
    await _turns(harness, [(USER, "I sleep badly"), (OTHER, "how do I focus?")])
    assert len(await harness.services.storage.replay.recent("coach", 10)) == 2
    await harness.say("/forget", user_id=USER)
    kept = await harness.services.storage.replay.recent("coach", 10)
    assert [k.user_id for k in kept] == [OTHER]


def judge_reply(request: RecordedRequest) -> str:
    # The judge prefers the candidate's answers (their text names the model that wrote them).
    turn = request.messages[-1]["content"]
    score = 0.9 if "(m-candidate)" in turn else 0.4
    return json.dumps({"score": score, "reason": "fine"})


async def test_a_score_task_judges_both_answers_of_each_input(harness: Harness) -> None:
    harness.llm.script("m-judge", judge_reply)
    added = await _ask(
        harness, "/task add judge openai:m-judge kind=score on=support Was it helpful?"
    )
    assert added[0].startswith("Task judge added (score)")
    await _turns(harness, [(USER, "I sleep badly"), (OTHER, "how do I focus?")])
    judged_turns = len(harness.llm.requests_for("m-judge"))
    assert judged_turns == 2  # the task itself, after each turn

    text, data = await _ask(harness, "/replay coach anthropic:m-candidate n=2")
    assert "The score task judge judges both answers of each input" in text
    assert data is not None
    (body,) = await _press_and_report(harness, data, 1)
    judged = harness.llm.requests_for("m-judge")[judged_turns:]
    assert len(judged) == 4  # the original's and the candidate's answer of each input
    assert body.count("judge: judge: original 0.40, candidate 0.90: candidate better") == 2
    assert (
        "judge: the candidate is better: candidate better on 2, original on 0, ties 0 of 2 "
        "judged; mean score original 0.40, candidate 0.90"
    ) in body
