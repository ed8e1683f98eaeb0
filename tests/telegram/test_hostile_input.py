"""Issue 19, as a hostile or careless user tries it: swapped `/setkey` words, answers that quote
a huge argument, forged or foreign buttons, a user who blocked the bot, an emoji split across
two stream chunks. Through `dp.feed_update` on the real dispatcher (the Bot API calls land on the
fake server, which refuses what Telegram refuses), and end to end for the streamed emoji."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiogram import Bot, Dispatcher

from bot.app import Services, build_services
from bot.config import Settings
from bot.pipeline.observer import NullObserver
from bot.telegram.dispatcher import build_dispatcher
from bot.telegram.long_text import LongTextGuard, fit_plain
from bot.telegram.routers.chat import STALE_BUTTON
from bot.telegram.routers.common import SORRY_GENERIC
from bot.telegram.routers.feedback import ALREADY, NOT_YOURS, score_id
from bot.telegram.routers.settings import NOT_YOUR_MENU
from bot.telegram.splitting import utf16_len
from tests.fakes.agent_replies import agent_reply
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_server import FakeTelegramServer
from tests.services.fakes import FakeProviders
from tests.telegram.e2e_kit import USER as E2E_USER
from tests.telegram.e2e_kit import make_settings, running_bot
from tests.telegram.test_routers import ADMIN, GROUP, USER, Feed

OTHER = 31
TRACE = "ab" * 16


class RecordingReview(NullObserver):
    """Tracing as the rating buttons see it: on, and every score recorded here."""

    def __init__(self) -> None:
        self.scores: list[tuple[str | None, bool | float, str | None]] = []

    @property
    def enabled(self) -> bool:
        return True

    async def trace_url(self, trace_id: str | None, *, timeout: float = 3.0) -> str | None:
        return None

    async def score(
        self,
        trace_id: str | None,
        name: str,
        value: float | bool,
        comment: str | None = None,
        *,
        score_id: str | None = None,
    ) -> bool:
        self.scores.append((trace_id, value, score_id))
        return True


@pytest.fixture
def review() -> RecordingReview:
    return RecordingReview()


@pytest.fixture
async def services(tmp_path: Path, review: RecordingReview) -> AsyncIterator[Services]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp_path / 'bot.db'}",
        default_model="openai:gpt-4o-mini",
        openai_api_key="sk-test",
        openrouter_api_key="sk-or-test",
        openrouter_base_url="http://127.0.0.1:9/api/v1",
        admin_ids=[ADMIN],
    )
    async with build_services(settings, providers=FakeProviders(), observer=review) as built:
        yield built


@pytest.fixture
def dp(services: Services) -> Dispatcher:
    return build_dispatcher(services)


@pytest.fixture
def feed(dp: Dispatcher, bot: Bot, tg: FakeTelegramServer) -> Feed:
    return Feed(dp, bot, tg)


# --- 3: /setkey with its words swapped ---


async def test_setkey_with_the_key_first_is_read_as_provider_then_key_and_never_echoed(
    feed: Feed,
) -> None:
    key = "sk-proj-AbCdEfGh0123456789QwErTy"
    await feed.text(f"/setkey {key} openai")
    (reply,) = feed.sent(USER)
    # Read the way the user meant it (this bot has no BOT_SECRET_KEY, so it is not kept).
    assert reply.startswith("This bot is not set up to store users' keys")
    assert "qwerty" not in reply.lower()
    assert "abcd" not in reply.lower()
    await feed.text("/setkey sk-or-v1-0123456789abcdef opnai")
    unknown = feed.sent(USER)[-1]
    assert unknown.startswith("The first word after /setkey must be the provider.")
    assert "0123456789" not in unknown
    assert "sk-or" not in unknown
    # Both messages carried a key: both were deleted.
    assert len(feed.tg.calls_of("deleteMessage", chat_id=USER)) == 2


# --- 4: answers that quote a huge argument still fit in one message ---


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/" + "x" * 4060, "I don't know /xxxx"),
        ("/setmodel " + "a" * 4000 + " openai:gpt-4o", "Not changed: unknown target 'aaaa"),
        ("/setmodel coach " + "openai:" + "m" * 4000, "characters long; at most 256"),
        ("/setmodel coach " + "nope:" + "m" * 4000, "Not changed: unknown provider"),
        ("/resetmodel " + "b" * 4050, "Not changed: unknown target 'bbbb"),
        ("/modelhistory " + "c" * 4050, "nknown target 'cccc"),
        ("/catalog add x" + "y" * 4000 + " openai:gpt-4o", "Not changed: alias 'xyyy"),
        ("/setkey " + "k" * 4000 + " z", "The first word after /setkey must be the provider."),
    ],
)
async def test_an_answer_quoting_a_huge_argument_fits_and_is_the_intended_one(
    feed: Feed, command: str, expected: str | None
) -> None:
    await feed.text(command, user_id=ADMIN)
    (reply,) = feed.sent(ADMIN)
    assert reply != SORRY_GENERIC
    assert utf16_len(reply) <= 4096
    assert all(call.ok for call in feed.tg.calls_of("sendMessage", chat_id=ADMIN))
    if expected is not None:
        assert expected in reply, reply[:200]


async def test_the_long_text_guard_shortens_a_plain_message_instead_of_losing_it(
    tg: FakeTelegramServer,
) -> None:
    bot: Bot = tg.make_bot()
    bot.session.middleware(LongTextGuard())
    try:
        await bot.send_message(chat_id=USER, text="Head. " + "z" * 5000 + " tail")
        await bot.send_message(chat_id=USER, text="word " * 1000)
        await bot.send_message(chat_id=USER, text="😀" * 3000)
    finally:
        await bot.session.close()
    calls = tg.calls_of("sendMessage", chat_id=USER)
    assert [call.ok for call in calls] == [True, True, True]
    first, second, third = (str(call.params["text"]) for call in calls)
    # The blob shortened, the rest kept; many short words: the end cut; emoji: never halved.
    assert first.startswith("Head. zzz")
    assert first.endswith("… tail")
    assert second.endswith("…")
    assert utf16_len(second) == 4096
    assert utf16_len(third) <= 4096
    assert "\ufffd" not in third
    assert fit_plain("short") == "short"


# --- 8: buttons ---


async def test_a_button_nobody_reads_is_answered(feed: Feed) -> None:
    for data in ("garbage", "rate:up", "model", f"rate:sideways:{TRACE}:{USER}x"):
        await feed.raw(feed.tg.callback_query(data, user_id=USER))
    answers = feed.tg.calls_of("answerCallbackQuery")
    assert len(answers) == 4
    assert {a.params["text"] for a in answers} == {STALE_BUTTON}


async def test_a_reply_takes_one_vote_and_only_from_the_user_it_answered(
    feed: Feed, review: RecordingReview
) -> None:
    vote = f"rate:up:{TRACE}:{USER}"
    await feed.raw(feed.tg.callback_query(vote, user_id=OTHER))  # a stranger, or a forged query
    await feed.raw(feed.tg.callback_query(vote, user_id=USER))
    await feed.raw(feed.tg.callback_query(f"rate:down:{TRACE}:{USER}", user_id=USER))
    texts = [a.params["text"] for a in feed.tg.calls_of("answerCallbackQuery")]
    assert texts == [NOT_YOURS, "Thanks for the feedback!", ALREADY]
    # One score, with an id of its own: a vote reaching Langfuse twice replaces, never adds.
    assert review.scores == [(TRACE, True, score_id(TRACE, USER))]
    assert score_id(TRACE, USER) != score_id(TRACE, OTHER)


async def test_another_members_press_on_a_model_menu_changes_nothing(
    feed: Feed, services: Services
) -> None:
    await feed.text("/model", user_id=USER, chat_id=GROUP)
    (menu,) = feed.tg.calls_of("sendMessage", chat_id=GROUP)
    data = menu.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert data == f"model:gpt-4o-mini:{USER}"
    await feed.raw(
        feed.tg.callback_query(
            data, user_id=OTHER, chat_id=GROUP, message_id=menu.result["message_id"]
        )
    )
    (answer,) = feed.tg.calls_of("answerCallbackQuery")
    assert answer.params["text"] == NOT_YOUR_MENU
    assert feed.tg.calls_of("editMessageText") == []  # the menu still shows its owner's choice
    assert await services.storage.settings.get(OTHER) is None
    assert await services.storage.settings.get(USER) is None


async def test_a_user_who_blocked_the_bot_costs_one_call_and_no_error(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = "Forbidden: bot was blocked by the user"
    for method in ("sendMessageDraft", "sendMessage", "sendChatAction"):
        feed.tg.fail_next(method, status=403, description=blocked, times=10, chat_id=USER)
    with caplog.at_level(logging.INFO):
        await feed.text("hello?")
    sends = [
        c for c in feed.tg.calls if c.method in ("sendMessage", "sendMessageDraft") and c.params
    ]
    assert len(sends) == 1  # the first refusal; nothing retried, no apology attempted
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not any(r.exc_info for r in caplog.records)
    assert any("does not take messages" in r.getMessage() for r in caplog.records)


# --- 8: an emoji split across two stream chunks ---


async def test_an_emoji_split_across_stream_chunks_arrives_whole(
    tmp_path: Path, tg: FakeTelegramServer
) -> None:
    async with FakeLLMServer() as llm:
        llm.default.text = agent_reply
        # A JSON surrogate pair cut in two, as some servers stream an emoji.
        llm.script("m-coach", tokens=["Well done ", "\ud83d", "\ude00", " keep going."])
        async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as harness:
            (reply,) = await harness.say("I slept 8 hours!")
            assert reply == "Well done 😀 keep going."
            stored = await harness.services.storage.messages.recent(E2E_USER, 2)
            assert stored[-1].text == "Well done 😀 keep going."
