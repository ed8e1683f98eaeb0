"""The user's own notes, end to end: a document sent to the bot (the real Dispatcher long-polling
the fake Bot API, `getFile` and the download included) becomes an archive; the tutor and the
coach get its passages (models on loopback through the real SDKs) and the reply cites them;
after the archive is deleted, and for any other user, no prompt holds them. On both storage
backends (SQLite; InsForge through the loopback fake over the real PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.telegram.routers.archives import ArchiveAction
from tests.archives.documents import FACT, textbook
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.conftest import eventually
from tests.telegram.e2e_kit import AGENT_MODELS, USER, make_settings, running_bot

OTHER = 902
CITATION = "geo.pdf, p. 7"
# A word of the fact that no other text in the conversation holds.
SECRET = "1742"


def cites_what_it_was_given(request: RecordedRequest) -> str:
    """A model that does what the prompt asks: cites the passage it was given, if any."""
    body = json.dumps(request.body)
    if f"] {CITATION}" in body and FACT in body:
        return f"From your notes: Quellport was founded in {SECRET} ({CITATION})."
    return f"Nothing in your notes about it ({request.model})."


def model(agent: str) -> str:
    return AGENT_MODELS[agent].split(":", 1)[1]


def holding(llm: FakeLLMServer, text: str, since: int) -> list[RecordedRequest]:
    return [r for r in llm.requests[since:] if text in json.dumps(r.body)]


def roles_holding(request: RecordedRequest, text: str) -> list[str]:
    """The roles of the prompt's messages (and the system prompt) that contain `text`."""
    roles = [str(m.get("role")) for m in request.messages if text in json.dumps(m)]
    if text in json.dumps(request.body.get("system") or ""):
        roles.append("system")
    return roles


async def test_a_fact_only_in_a_document_reaches_the_tutor_and_the_reply_names_the_document(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    llm.script(model("tutor"), cites_what_it_was_given)
    llm.script(model("coach"), cites_what_it_was_given)
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        # Before the upload the fact is nowhere.
        mark = len(llm.requests)
        (before,) = await bot.say("/learn the founding of Quellport")
        assert before == "Nothing in your notes about it (m-tutor)."
        assert holding(llm, SECRET, mark) == []

        added = await bot.send_document(textbook(), "geo.pdf")
        assert added.startswith("Added “geo.pdf”: 12 pages, ")

        mark = len(llm.requests)
        (lesson,) = await bot.say("/learn the founding of Quellport")
        assert lesson == f"From your notes: Quellport was founded in {SECRET} ({CITATION})."
        [tutor] = [r for r in llm.requests[mark:] if r.model == model("tutor")]
        assert FACT in json.dumps(tutor.body)
        # The passage is the user's text: in a user-role message, never in the system prompt.
        assert roles_holding(tutor, FACT) == ["user"]
        # Searched beside the strategist, which never sees the passages.
        assert [r for r in holding(llm, SECRET, mark) if r.model == model("strategist")] == []

        mark = len(llm.requests)
        (reply,) = await bot.say("When was Quellport founded?")
        assert reply.endswith(f"({CITATION}).")
        [coach] = [r for r in llm.requests[mark:] if r.model == model("coach")]
        assert roles_holding(coach, FACT) == ["user"]

        # Another user, the same questions: nothing of USER's notes in any of their prompts.
        await bot.services.runner.wait_background()  # USER's summarizer, still running
        mark = len(llm.requests)
        (theirs,) = await bot.say("/learn the founding of Quellport", user_id=OTHER)
        assert theirs == "Nothing in your notes about it (m-tutor)."
        await bot.say("When was Quellport founded?", user_id=OTHER)
        await bot.services.runner.wait_background()
        assert llm.requests[mark:]
        assert holding(llm, SECRET, mark) == []

        # Deleted through /archives (with its confirmation): in no prompt any more.
        (listing,) = await bot.say("/archives")
        assert "✅ geo.pdf: 12 pages" in listing
        assert bot.services.archives is not None
        [archive] = await bot.services.archives.list(USER)
        await bot.press(ArchiveAction(action="del", id=archive.id).pack())
        await eventually(lambda: tg.chat_messages(USER)[-1].text.startswith("Delete “geo.pdf”"))
        await bot.press(ArchiveAction(action="yes", id=archive.id).pack())
        await eventually(lambda: "no archives yet" in tg.chat_messages(USER)[-1].text)
        await bot.services.runner.wait_background()

        mark = len(llm.requests)
        (after,) = await bot.say("/learn the founding of Quellport")
        assert after == "Nothing in your notes about it (m-tutor)."
        await bot.say("When was Quellport founded?")
        await bot.services.runner.wait_background()
        assert llm.requests[mark:]
        # The chat's history still holds the earlier replies; no passage of the notes is left.
        assert holding(llm, FACT, mark) == []
        assert holding(llm, f"] {CITATION}", mark) == []  # no numbered passage header
