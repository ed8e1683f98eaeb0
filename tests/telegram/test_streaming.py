"""ReplyStreamer: live drafts/edits while the model writes, then the whole reply, never lost."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from bot.telegram import streaming
from bot.telegram.flood import FloodControlMiddleware
from bot.telegram.formatting import markdown_to_plain
from bot.telegram.streaming import ReplyStreamer
from tests.fakes.telegram_server import FakeTelegramServer, utf16_len
from tests.telegram.conftest import eventually


def _squash(text: str) -> str:
    # Telegram trims each message, so compare texts without whitespace.
    return "".join(text.split())


async def _deltas(parts: list[str], pause: float = 0.0) -> AsyncIterator[str]:
    for part in parts:
        if pause:
            await asyncio.sleep(pause)
        yield part


async def test_private_chat_streams_drafts_then_sends_the_final_message(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    words = [f"word{i} " for i in range(12)]
    streamer = ReplyStreamer(bot, 501, draft_interval=0.05)
    ids = await streamer.stream(_deltas(["**Hello** ", *words], pause=0.02))

    drafts = tg.calls_of("sendMessageDraft", chat_id=501, ok=True)
    assert len(drafts) >= 2  # several live updates, throttled
    assert len(drafts) < len(words) + 1  # ...but not one per delta
    assert len({c.params["draft_id"] for c in drafts}) == 1  # one animated draft
    assert all(c.params["parse_mode"] == "HTML" for c in drafts)
    assert [len(c.params["text"]) for c in drafts] == sorted(len(c.params["text"]) for c in drafts)
    sent = tg.chat_messages(501)
    assert [m.message_id for m in sent] == ids
    assert sent[0].text == markdown_to_plain("**Hello** " + "".join(words)).strip()
    assert sent[0].raw_text.startswith("<b>Hello</b>")
    # The final message comes after the last draft, and no edits were needed.
    final = tg.calls_of("sendMessage", chat_id=501)[0]
    assert final.index > drafts[-1].index
    assert tg.calls_of("editMessageText") == []


async def test_group_chat_edits_a_placeholder_at_a_polite_pace(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    streamer = ReplyStreamer(bot, -700, edit_interval=0.2, reply_to_message_id=None)
    await streamer.start()
    placeholder = tg.calls_of("sendMessage", chat_id=-700)
    assert [c.text for c in placeholder] == ["…"]
    for i in range(20):
        await streamer.push(f"part {i}. ")
        await asyncio.sleep(0.03)
    ids = await streamer.finish()

    assert tg.calls_of("sendMessageDraft") == []  # no drafts in groups
    edits = tg.calls_of("editMessageText", chat_id=-700, ok=True)
    assert len(edits) >= 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert min(gaps) >= 0.15  # never faster than the configured interval (minus jitter)
    (message,) = tg.chat_messages(-700)
    assert ids == [message.message_id] == [placeholder[0].result["message_id"]]
    assert message.text == "".join(f"part {i}. " for i in range(20)).strip()


async def test_ten_thousand_characters_arrive_whole_in_several_messages(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet. " * 12 for i in range(30)]
    reply = "\n\n".join(paragraphs)
    assert len(reply) >= 10_000
    ids = await ReplyStreamer(bot, 502).stream(
        _deltas([reply[i : i + 500] for i in range(0, len(reply), 500)])
    )

    sent = tg.chat_messages(502)
    assert len(sent) >= 3
    assert [m.message_id for m in sent] == ids
    assert all(utf16_len(m.text) <= 4096 for m in sent)
    assert _squash("".join(m.text for m in sent)) == _squash(reply)
    # Split at paragraph boundaries: each message starts a paragraph.
    assert all(m.text.startswith("Paragraph") for m in sent)


async def test_long_group_reply_overflows_into_extra_messages(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    reply = "\n\n".join(f"Sentence number {i} is here. " * 10 for i in range(40))
    streamer = ReplyStreamer(bot, -701, edit_interval=0.05)
    await streamer.start()
    for i in range(0, len(reply), 700):
        await streamer.push(reply[i : i + 700])
        await asyncio.sleep(0.02)
    ids = await streamer.finish()
    sent = tg.chat_messages(-701)
    assert len(sent) >= 3
    assert [m.message_id for m in sent] == ids
    assert _squash("".join(m.text for m in sent)) == _squash(reply)


async def test_rejected_formatting_is_resent_plain_with_the_same_text(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    tg.parse_error_next("sendMessage")
    reply = "**Bold** answer with `code` & <angle> brackets"
    ids = await ReplyStreamer(bot, 503, use_drafts=False).stream(_deltas([reply]))

    attempts = tg.calls_of("sendMessage", chat_id=503)
    assert [c.status for c in attempts] == [400, 200]
    assert attempts[0].params["parse_mode"] == "HTML"
    assert "parse_mode" not in attempts[1].params
    (message,) = tg.chat_messages(503)
    assert message.message_id == ids[0]
    assert message.text == "Bold answer with code & <angle> brackets"
    assert message.text == markdown_to_plain(reply)


async def test_rejected_formatting_in_a_group_edit_is_applied_plain(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    streamer = ReplyStreamer(bot, -702, edit_interval=0.01)
    await streamer.start()
    await streamer.push("*final* text")
    tg.parse_error_next("editMessageText", times=5)
    await streamer.finish()
    (message,) = tg.chat_messages(-702)
    assert message.text == "final text"


async def test_drafts_unavailable_fall_back_to_edits(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.disable_method("sendMessageDraft")
    streamer = ReplyStreamer(bot, 504, draft_interval=0.01, edit_interval=0.05)
    for i in range(10):
        await streamer.push(f"chunk {i} ")
        await asyncio.sleep(0.02)
    ids = await streamer.finish()
    assert streamer.mode == "edit"
    (message,) = tg.chat_messages(504)
    assert ids == [message.message_id]
    assert message.text == "".join(f"chunk {i} " for i in range(10)).strip()


async def test_a_429_on_the_final_send_is_waited_out(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.flood_next("sendMessage", retry_after=1)
    ids = await ReplyStreamer(bot, 505).stream(_deltas(["patience pays"]))
    attempts = tg.calls_of("sendMessage", chat_id=505)
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0  # retry_after was honoured
    assert [m.text for m in tg.chat_messages(505)] == ["patience pays"]
    assert len(ids) == 1


async def test_empty_reply_removes_the_placeholder(tg: FakeTelegramServer, bot: Bot) -> None:
    streamer = ReplyStreamer(bot, -703)
    await streamer.start()
    assert await streamer.finish() == []
    assert tg.chat_messages(-703) == []


async def test_failed_producer_stops_live_updates(tg: FakeTelegramServer, bot: Bot) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "partial "
        raise RuntimeError("model died")

    streamer = ReplyStreamer(bot, 506, draft_interval=0.01)
    try:
        await streamer.stream(broken())
    except RuntimeError:
        pass
    else:
        raise AssertionError("the producer's error must propagate")
    assert streamer.text == "partial "
    count = len(tg.calls)
    await asyncio.sleep(0.05)
    assert len(tg.calls) == count  # no task left sending drafts


async def test_finish_during_the_pacing_wait_never_hangs(
    tg: FakeTelegramServer, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`finish` landing while the pacing wait times out must not leave the flusher waiting.

    Found by the load benchmark: one reply in a few thousand hung for good (and with it every
    later message of that chat, behind the chat's lock). A timed-out wait yields to the loop
    between the timeout and the exception (the cancellation is delivered by the loop); if
    `finish` ran in that window, the flusher cleared the wake-up `finish` had just given it and
    waited forever. Here the window is opened on purpose: the stand-in `asyncio.timeout` times
    out, lets `finish` run, then raises.
    """
    in_window = asyncio.Event()
    real_wait_for = asyncio.wait_for
    real_timeout = asyncio.timeout

    @contextlib.asynccontextmanager
    async def timeout_that_expires_slowly(delay: float | None) -> AsyncIterator[None]:
        try:
            async with real_timeout(delay):
                yield
        except TimeoutError:
            in_window.set()
            for _ in range(5):  # more than the loop needs to run `finish` up to its wait
                await asyncio.sleep(0)
            raise

    monkeypatch.setattr(streaming.asyncio, "timeout", timeout_that_expires_slowly)
    streamer = ReplyStreamer(bot, 503, draft_interval=0.05)
    await streamer.start()  # the "Thinking…" draft: the first text now waits for its turn
    await streamer.push("Hello there.")
    await real_wait_for(in_window.wait(), 2)

    ids = await real_wait_for(streamer.finish(), 2)

    (message,) = tg.chat_messages(503)
    assert ids == [message.message_id]
    assert message.text == "Hello there."


async def test_a_reply_complete_within_the_draft_interval_needs_no_text_draft(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    streamer = ReplyStreamer(bot, 504, draft_interval=5.0)
    await streamer.start()
    ids = await streamer.stream(_deltas(["Short ", "and ", "quick."]))

    drafts = tg.calls_of("sendMessageDraft", chat_id=504, ok=True)
    assert [c.params.get("text", "") for c in drafts] == [""]  # only "Thinking…"
    (message,) = tg.chat_messages(504)
    assert ids == [message.message_id]
    assert message.text == "Short and quick."


async def test_group_replies_are_edited_at_most_every_three_seconds_by_default(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    """Telegram allows a group about 20 messages a minute, and edits count: one per 3 s."""
    streamer = ReplyStreamer(bot, -720)
    await streamer.start()
    for i in range(34):
        await streamer.push(f"part {i}. ")
        await asyncio.sleep(0.1)
    await streamer.finish()

    (placeholder,) = tg.calls_of("sendMessage", chat_id=-720)
    edits = tg.calls_of("editMessageText", chat_id=-720, ok=True)
    assert len(edits) == 2  # one live edit in 3.4 s of writing, then the final one
    live_gap = edits[0].at - placeholder.at
    assert live_gap >= 2.9
    # The final edit waits for Telegram's per-chat second only, not a whole interval.
    assert 0.9 <= edits[1].at - edits[0].at < 2.5
    (message,) = tg.chat_messages(-720)
    assert message.text == "".join(f"part {i}. " for i in range(34)).strip()


async def test_private_chats_keep_the_quicker_edit_pace(tg: FakeTelegramServer, bot: Bot) -> None:
    streamer = ReplyStreamer(bot, 721, use_drafts=False)
    assert streamer.interval < 2.0
    assert ReplyStreamer(bot, -721).interval >= 3.0


async def test_the_final_reply_outlasts_flood_control_that_would_give_up(
    tg: FakeTelegramServer,
) -> None:
    """The flood middleware gives a call a few short waits; the reply itself gets every wait."""
    impatient = tg.make_bot()
    impatient.session.middleware(FloodControlMiddleware(max_wait=0.5, max_retries=1))
    try:
        tg.flood_next("sendMessage", retry_after=1, times=3)
        ids = await asyncio.wait_for(
            ReplyStreamer(impatient, 730).stream(_deltas(["never lost"])), 15
        )
    finally:
        await impatient.session.close()
    attempts = tg.calls_of("sendMessage", chat_id=730)
    assert [c.status for c in attempts] == [429, 429, 429, 200]
    assert attempts[-1].at - attempts[0].at >= 3.0  # every retry_after was honoured
    (message,) = tg.chat_messages(730)
    assert ids == [message.message_id]
    assert message.text == "never lost"


async def test_live_updates_stay_best_effort_under_flood_control(tg: FakeTelegramServer) -> None:
    impatient = tg.make_bot()
    impatient.session.middleware(FloodControlMiddleware(max_wait=0.5, max_retries=1))
    try:
        streamer = ReplyStreamer(impatient, -731, edit_interval=0.05)
        await streamer.start()
        tg.flood_next("editMessageText", retry_after=30)  # a live edit is not worth 30 s
        await streamer.push("first words ")
        await eventually(lambda: bool(tg.calls_of("editMessageText", chat_id=-731)))
        await streamer.push("and the rest")
        await asyncio.wait_for(streamer.finish(), 10)
    finally:
        await impatient.session.close()
    live_edit = tg.calls_of("editMessageText", chat_id=-731)[0]
    assert live_edit.status == 429  # given up on at once, not waited for
    (message,) = tg.chat_messages(-731)
    assert message.text == "first words and the rest"


@pytest.mark.parametrize("refusal", ["message can't be edited", "message is too long"])
async def test_a_message_that_cannot_be_edited_is_replaced_not_duplicated(
    tg: FakeTelegramServer, bot: Bot, refusal: str
) -> None:
    first = "First paragraph is right here, ok."
    second = "Second paragraph is right here, ok."
    streamer = ReplyStreamer(bot, -742, limit=60, edit_interval=0.05)
    await streamer.start()
    await streamer.push(f"{first}\n\n{second}")
    await eventually(lambda: [m.text for m in tg.chat_messages(-742)] == [first, second])

    tg.fail_next("editMessageText", status=400, description=f"Bad Request: {refusal}")
    revised = "First paragraph, revised here."
    ids = await streamer.finish(f"{revised}\n\n{second}")

    shown = tg.chat_messages(-742)
    # The chat reads the reply once, in order: the old messages were replaced, not left behind.
    assert [m.text for m in shown] == [revised, second]
    assert ids == [m.message_id for m in shown]


async def test_a_chunk_sent_in_pieces_is_updated_whole(tg: FakeTelegramServer, bot: Bot) -> None:
    """A chunk Telegram refused went out plain in pieces; a later edit must update all of them."""
    tg.fail_next(
        "sendMessage",
        status=400,
        description="Bad Request: message is too long",
        formatted_only=True,
    )
    draft = "Alpha beta gamma delta epsilon zeta."
    streamer = ReplyStreamer(bot, -743, limit=40, edit_interval=0.05)
    await streamer.push(draft)
    await eventually(lambda: len(tg.chat_messages(-743)) == 2)  # plain, in two pieces
    assert _squash("".join(m.text for m in tg.chat_messages(-743))) == _squash(draft)

    final = "Alpha beta gamma delta epsilon zeta eta!"
    ids = await streamer.finish(final)

    shown = tg.chat_messages(-743)
    assert _squash("".join(m.text for m in shown)) == _squash(final)  # no piece left twice
    assert ids == [m.message_id for m in shown]


BUTTONS = InlineKeyboardMarkup(
    inline_keyboard=[[InlineKeyboardButton(text="👍", callback_data="rate:up:t")]]
)


async def test_buttons_ride_on_the_last_message_of_a_long_reply(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    reply = "\n\n".join(f"Paragraph {i}: " + "words and more words. " * 40 for i in range(8))
    streamer = ReplyStreamer(bot, 506)
    await streamer.push(reply)
    ids = await streamer.finish(reply_markup=BUTTONS)

    sent = tg.calls_of("sendMessage", chat_id=506)
    assert len(sent) == len(ids) > 1
    assert [bool(c.params.get("reply_markup")) for c in sent] == [False] * (len(ids) - 1) + [True]
    assert tg.calls_of("editMessageReplyMarkup", chat_id=506) == []


async def test_buttons_are_attached_alone_when_the_last_message_needs_no_edit(
    tg: FakeTelegramServer, bot: Bot
) -> None:
    streamer = ReplyStreamer(bot, -507, edit_interval=0.05)
    await streamer.start()
    await streamer.push("Already shown in full.")
    await asyncio.sleep(0.2)  # the live edit shows the whole text
    ids = await streamer.finish(reply_markup=BUTTONS)

    (message,) = tg.chat_messages(-507)
    assert ids == [message.message_id]
    assert message.text == "Already shown in full."
    assert message.reply_markup is not None
    assert message.reply_markup["inline_keyboard"][0][0]["callback_data"] == "rate:up:t"


@pytest.mark.parametrize("chat_id", [502, -702])
async def test_begin_does_not_block_and_everything_waits_for_it(
    chat_id: int, tg: FakeTelegramServer, bot: Bot
) -> None:
    """`begin` returns at once; live updates and the final delivery come after the "Thinking…"
    draft (private) or the placeholder (group), however slow Telegram is to answer it."""
    tg.set_latency("sendMessageDraft", 0.3)
    tg.set_latency("sendMessage", 0.3)
    streamer = ReplyStreamer(bot, chat_id, draft_interval=0.01, edit_interval=0.01)
    loop = asyncio.get_running_loop()
    started = loop.time()
    streamer.begin()
    assert loop.time() - started < 0.05
    await streamer.push("Hello there, ")
    await asyncio.sleep(0.05)
    await streamer.push("how was the week?")
    ids = await streamer.finish()
    calls = [c for c in tg.calls if c.chat_id == chat_id]
    first = calls[0]
    if chat_id > 0:
        assert first.method == "sendMessageDraft"
        assert first.params.get("text", "") == ""  # the "Thinking…" draft
    else:
        assert first.method == "sendMessage"
        assert first.params["text"] == "…"  # the placeholder, edited into the reply
    # Nothing else reached the chat before Telegram had answered that first call.
    assert all(c.at >= first.at + 0.3 for c in calls[1:])
    assert [m.text for m in tg.chat_messages(chat_id)] == ["Hello there, how was the week?"]
    assert ids == [m.message_id for m in tg.chat_messages(chat_id)]


async def test_aclose_lets_a_slow_start_finish(tg: FakeTelegramServer, bot: Bot) -> None:
    tg.set_latency("sendMessageDraft", 0.2)
    streamer = ReplyStreamer(bot, 503)
    streamer.begin()
    await streamer.aclose()
    assert [c.method for c in tg.calls_of("sendMessageDraft", chat_id=503, ok=True)] == [
        "sendMessageDraft"
    ]
