"""Trials end to end: the real Dispatcher long-polls the fake Bot API, the agents run on the
loopback model server through the real SDKs, the ledger and the trials on a real SQLite file.

- An admin's `/trial coach <model> share=50` over a few hundred turns of a hundred users: the
  users split within binomial bounds, and each user's coach calls reach one model only (as the
  model server saw them), the one of the user's arm; `/trial promote` then puts everyone on it.
- A candidate whose server answers 500 stops itself once it has made `min` calls: the admins
  get one message naming the guardrail with both arms' figures, and no call reaches it after.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.services.trials import arm_of
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, Harness, make_settings, running_bot

INCUMBENT = "m-coach"  # the coach's model (AGENT_MODELS in the kit)
CANDIDATE = "m-candidate"
USERS = range(5000, 5100)
TAG = re.compile(r"u(\d+)m(\d+)")


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        server.default.text = agent_reply
        yield server


def _coach_users(llm: FakeLLMServer, model: str, since: int = 0) -> list[int]:
    """The users whose messages reached `model` (the tag each message carries)."""
    found = []
    for request in llm.requests[since:]:
        if request.model == model:
            tag = TAG.search(request.last_user_text)
            assert tag is not None
            found.append(int(tag.group(1)))
    return found


async def _round(harness: Harness, users: range | list[int], n: int) -> None:
    """One message from each user, all at once (each a different chat)."""
    await asyncio.gather(
        *(harness.say(f"question u{user}m{n}", user_id=user, timeout=60) for user in users)
    )
    await harness.services.runner.wait_background()


async def test_a_half_trial_splits_users_sticky_and_promote_makes_it_the_model(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    settings = make_settings(tmp_path, tg, llm, summary_every=20)
    async with running_bot(settings, tg, llm) as harness:
        [started] = await harness.say(f"/trial coach openai:{CANDIDATE} share=50", user_id=ADMIN)
        assert "50% of coach's users" in started
        trials = harness.services.trials
        assert trials is not None
        trial = (await trials.running())["coach"]
        for n in range(3):  # 300 turns from 100 users
            await _round(harness, USERS, n)
        on_candidate = _coach_users(llm, CANDIDATE)
        on_incumbent = _coach_users(llm, INCUMBENT)
        assert len(on_candidate) + len(on_incumbent) == 3 * len(USERS)
        # Each user always on the same arm: three calls, one model, the arm's.
        assert set(on_candidate).isdisjoint(on_incumbent)
        for user in USERS:
            expected = on_candidate if arm_of(trial, user) == "candidate" else on_incumbent
            assert expected.count(user) == 3
        # The users split within binomial bounds (4 sigma of Binomial(100, 0.5)).
        users_on_candidate = len(set(on_candidate))
        assert abs(users_on_candidate - 50) < 4 * math.sqrt(100 * 0.25)
        # The ledger marked every coach call with its arm.
        await harness.services.ledger.flush()  # type: ignore[union-attr]
        figures = {
            row.model: row.calls
            for row in await harness.services.storage.ledger.trial_stats(trial.id)
        }
        assert figures == {"candidate": len(on_candidate), "incumbent": len(on_incumbent)}
        [shown] = await harness.say("/trial", user_id=ADMIN)
        assert f"candidate openai:{CANDIDATE} on 50% of users" in shown
        assert "(CI " in shown
        # A healthy candidate is not stopped by its guardrails.
        assert (await trials.running())["coach"].id == trial.id

        [promoted] = await harness.say("/trial promote coach", user_id=ADMIN)
        assert "promoted" in promoted
        mark = len(llm.requests)
        await _round(harness, USERS, 3)
        assert sorted(_coach_users(llm, CANDIDATE, since=mark)) == list(USERS)
        assert await trials.running() == {}


async def test_a_failing_candidate_stops_itself_after_min_calls_and_the_admins_are_told(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    llm.script(CANDIDATE, fault=Fault.SERVER_ERROR)
    settings = make_settings(
        tmp_path, tg, llm, summary_every=20, trial_check_seconds=0.2, admin_ids=[ADMIN, 902]
    )
    async with running_bot(settings, tg, llm) as harness:
        guard = harness.services.trial_guard
        assert guard is not None
        guard.settle = timedelta(seconds=0.5)  # the ledger writes every 0.5 s
        [started] = await harness.say(
            f"/trial coach openai:{CANDIDATE} share=50 min=20", user_id=ADMIN
        )
        assert "Trial" in started
        mark = len(tg.calls)
        users = list(USERS)
        told = None
        for n in range(10):
            await _round(harness, users[:50], n)
            try:
                told = await tg.wait_for_call("sendMessage", chat_id=902, since=mark, timeout=2)
            except TimeoutError:
                continue
            break
        assert told is not None, "the guardrail never stopped the failing candidate"
        failed_calls = len(llm.requests_for(CANDIDATE))
        assert failed_calls >= 20  # not before `min` calls
        for admin in (ADMIN, 902):
            [message] = [
                m.text for m in tg.chat_messages(admin) if "stopped by its guardrail" in m.text
            ]
            assert "error rate" in message
            assert "100.0% (" in message  # the candidate's errors, with n and interval
            assert "0.0% (0/" in message  # the incumbent's
            assert "CI " in message
        trials = harness.services.trials
        assert trials is not None
        assert await trials.running() == {}
        ended = await harness.services.storage.trials.get(1)
        assert ended is not None
        assert ended.status == "guardrail"
        [shown] = await harness.say("/trial", user_id=ADMIN)
        assert "guardrail: error rate (p=" in shown
        # Everyone is back on the incumbent: no call reaches the candidate any more.
        await _round(harness, users[:50], 99)
        assert len(llm.requests_for(CANDIDATE)) == failed_calls
