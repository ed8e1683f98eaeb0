"""InsForge round trips per turn (decision 0020), counted in the fake InsForge's request log.

The whole bot on loopback over InsForge (the fake, over the real PostgreSQL with the real
migrations) with the call ledger, a user budget and the allowlist on: once a chat is warm (its
user recorded, their facts known, the summary up to date), a plain turn is one read of its
context (`turn_context`) and one write of its messages with its ledger rows (`turn_write`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fakes.insforge_server import FakeInsForge, truncate_public_tables
from tests.fakes.llm_server import FakeLLMServer, Fault
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.conftest import eventually
from tests.telegram.e2e_kit import USER, Harness, make_settings, running_bot

SHARED_BATCHES = (
    "/rpc/ledger_prune",
    "/rpc/ledger_roll_up",
    "/records/replay_inputs",
    "/rpc/replay_prune",
)


@pytest.fixture
async def fake(insforge_db: str) -> AsyncIterator[FakeInsForge]:
    await truncate_public_tables(insforge_db)
    async with FakeInsForge(insforge_db) as server:
        yield server


def production_settings(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, fake: FakeInsForge, **extra: Any
) -> Any:
    return make_settings(
        tmp_path,
        tg,
        llm,
        insforge_url=fake.url,
        insforge_api_key=fake.api_key,
        ledger_enabled=True,
        access_mode="allowlist",
        allowed_user_ids=[USER],
        budget_user_daily_usd=5.0,
        summary_every=20,  # the summary stays up to date over these few turns
        **extra,
    )


async def quiet_turn(harness: Harness, fake: FakeInsForge, text: str) -> list[str]:
    """The InsForge requests (method and path) one turn made, background steps included."""
    mark = len(fake.requests)
    replies = await harness.say(text)
    assert replies, "the turn was not answered"
    await harness.services.runner.wait_background()
    # The ledger writer's interval (0.5 s): a row left out of the turn's write would show here.
    ledger = harness.services.ledger
    assert ledger is not None
    await eventually(lambda: ledger.pending == 0, timeout=5)
    await ledger.flush()
    # Not the turn's own: the ledger's retention prune (at start, then hourly), its roll-up
    # (every 5 s, decision 0016) and the replay keeper's batch (`bot.replay.keeper`: every
    # 10 s at most for the turns of those seconds, newest inputs per agent, then its prune) fall in
    # whichever turn is running.
    return [
        f"{method} {path}"
        for method, path, _ in fake.requests[mark:]
        if not path.endswith(SHARED_BATCHES)
    ]


async def test_a_plain_turn_is_one_read_and_one_write(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, fake: FakeInsForge
) -> None:
    settings = production_settings(tmp_path, tg, llm, fake)
    async with running_bot(settings, tg, llm) as harness:
        first = await quiet_turn(harness, fake, "I sleep badly after night shifts")
        # The first turn also records the user and stores the facts the extraction found.
        assert "POST /api/database/records/users" in first
        plain = await quiet_turn(harness, fake, "what should I do about it?")
        assert plain == [
            "POST /api/database/rpc/turn_context",
            "POST /api/database/rpc/turn_write",
        ], plain
        assert len(plain) <= 2

    conn = await asyncpg.connect(fake.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, role, text FROM messages WHERE chat_id = $1 ORDER BY id", USER
        )
        assert [(r["role"], r["text"]) for r in rows][2] == ("user", "what should I do about it?")
        assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
        turn = rows[2]["id"]
        # The foreground calls of the plain turn went with its messages, under its user message.
        agents = await conn.fetch("SELECT agent FROM ledger_calls WHERE turn_id = $1", turn)
        assert sorted(r["agent"] for r in agents) == ["coach", "extraction", "strategist"]
        assert await conn.fetchval("SELECT count(*) FROM ledger_calls WHERE turn_id IS NULL") == 0
    finally:
        await conn.close()


async def test_a_turn_without_a_reply_still_stores_the_message_and_its_calls(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, fake: FakeInsForge
) -> None:
    settings = production_settings(tmp_path, tg, llm, fake)
    async with running_bot(settings, tg, llm) as harness:
        await quiet_turn(harness, fake, "hello")
        # The coach (the agent that replies) fails: an apology, no reply to store.
        llm.script("m-coach", fault=Fault.STATUS, status=500)
        mark = len(fake.requests)
        apology = await harness.say("are you there?")
        assert apology
        await harness.services.runner.wait_background()
        writes = [p for m, p, _ in fake.requests[mark:] if p.endswith("turn_write")]
        assert len(writes) == 1

    conn = await asyncpg.connect(fake.dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, role, text FROM messages WHERE chat_id = $1 ORDER BY id", USER
        )
        assert [(r["role"], r["text"]) for r in rows][-1] == ("user", "are you there?")
        failed = await conn.fetchval(
            "SELECT count(*) FROM ledger_calls WHERE turn_id = $1 AND outcome <> 'ok'",
            rows[-1]["id"],
        )
        assert failed >= 1
    finally:
        await conn.close()


async def test_the_reply_goes_out_beside_the_turns_write_and_its_rating_finds_the_turn(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, fake: FakeInsForge
) -> None:
    """The final message is not held back by storage: with the turn's write hanging at the
    fake InsForge, the reply arrives (with its rating buttons, which name the user's Telegram
    message since the stored id is not known yet); once the write answers, a 👍 on it is
    recorded against that turn."""
    settings = production_settings(tmp_path, tg, llm, fake)
    async with running_bot(settings, tg, llm) as harness:
        await quiet_turn(harness, fake, "hello")
        fake.hang_next(30, path="/rpc/turn_write")
        (reply,) = await harness.say("what should I do about sleep?")
        assert reply
        conn = await asyncpg.connect(fake.dsn)
        try:
            # The write was asked for and is still held: the reply did not wait for it.
            assert any(p.endswith("/rpc/turn_write") for _, p, _ in fake.requests[-3:])
            stored = await conn.fetchval("SELECT count(*) FROM messages WHERE chat_id = $1", USER)
            assert stored == 2  # the first turn's two only
            fake.release_hung()
            await harness.services.runner.wait_background()  # the summarizer waits on the write
            count = "SELECT count(*) FROM messages WHERE chat_id = $1"
            assert await conn.fetchval(count, USER) == 4
            message = [m for m in tg.chat_messages(USER) if m.text == reply][-1]
            up = message.reply_markup["inline_keyboard"][0][0]
            assert up["callback_data"].startswith(f"rate:up::{USER}:0:")
            mark = len(tg.calls)
            tg.callback_query(up["callback_data"], user_id=USER, message_id=message.message_id)
            (answer,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
            assert answer.params["text"] == "Thanks for the feedback!"
            turn = await conn.fetchval(
                "SELECT id FROM messages WHERE chat_id = $1 AND text = $2",
                USER,
                "what should I do about sleep?",
            )
            rated = await conn.fetch("SELECT turn_id, up FROM ledger_ratings")
            assert [(r["turn_id"], r["up"]) for r in rated] == [(turn, True)]
        finally:
            await conn.close()
