"""Models managed from chat, end to end: the real Dispatcher long-polls the fake Bot API, models
answer on loopback through the real SDKs, and every test runs on both storage backends (a real
SQLite file, and InsForge through the loopback fake over the real PostgreSQL with the real
migrations). What `.env` does for models, an admin does here without a restart: the default,
per pipeline, per role, per agent, the users' menu and per-model parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.agents.coach import CoachAgent
from tests.fakes.agent_replies import schema_title
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.e2e_kit import ADMIN, USER, Harness, make_settings, running_bot

OPENROUTER_ID = "anthropic/claude-sonnet-4.5"


def calls_to(llm: FakeLLMServer, model: str, since: int = 0) -> list[RecordedRequest]:
    return [r for r in llm.requests[since:] if r.model == model]


def by_schema(requests: list[RecordedRequest]) -> dict[str | None, RecordedRequest]:
    return {schema_title(r) if not r.stream else "stream": r for r in requests}


async def admin(harness: Harness, text: str) -> str:
    (reply,) = await harness.say(text, user_id=ADMIN)
    return reply


async def test_a_catalog_entry_assigned_to_a_role_runs_with_its_parameters_and_survives_a_restart(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        added = await admin(
            bot,
            '/catalog add fast openai:m-fast name="Fast one" max_tokens=77 temperature=0.5',
        )
        assert added.startswith(
            "Added fast: Fast one (openai:m-fast), max_tokens=77 temperature=0.5, not offered "
            "to users. Assign it with /setmodel <target> fast."
        )
        assigned = await admin(bot, "/setmodel role:post fast")
        assert assigned.startswith("role:post is now Fast one (openai:m-fast) (was not set).")
        assert "Used by: extraction, summarizer." in assigned

        mark = len(llm.requests)
        await bot.say("I work night shifts")
        await bot.services.runner.wait_background()
        fast = by_schema(calls_to(llm, "m-fast", mark))
        # Both post-completion agents moved, each with the entry's parameters over its own
        # (the extraction asks for temperature 0, the summarizer too).
        assert set(fast) == {"ExtractedFacts", None}
        for request in fast.values():
            assert (request.body["max_tokens"], request.body["temperature"]) == (77, 0.5)
        assert bot.agent_requests("extraction", since=mark) == []
        assert bot.agent_requests("summarizer", since=mark) == []
        assert bot.agent_requests("strategist", since=mark)  # role plan: not moved
        assert bot.agent_requests("coach", since=mark)  # role chat: not moved

        table = await admin(bot, "/models")
        extraction = next(line for line in table.splitlines() if "extraction" in line)
        assert f"Fast one (openai:m-fast)  [role]  set by tg:{ADMIN} (@user{ADMIN})," in extraction
        version = table.splitlines()[-1]
        assert version == "Configuration version 2."  # the entry, then the assignment

    mark = len(llm.requests)
    async with running_bot(settings, tg, llm) as again:
        await again.say("after the restart")
        await again.services.runner.wait_background()
        fast = calls_to(llm, "m-fast", mark)
        assert len(fast) == 2
        assert all(r.body["max_tokens"] == 77 for r in fast)
        assert (await admin(again, "/models")).splitlines()[-1] == version


async def test_pipeline_agent_and_default_targets_on_any_configured_provider(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    # No OpenRouter key at all: an operator on OpenAI and Anthropic alone still switches models.
    settings = make_settings(tmp_path, tg, llm, agent_models={}, openrouter_api_key=None, **backend)
    async with running_bot(settings, tg, llm) as bot:
        reply = await admin(bot, "/setmodel strategist openai:m-planner")
        assert reply.startswith("strategist now runs on openai:m-planner (was openai:m-default")
        reply = await admin(bot, "/setmodel pipeline:learn anthropic:m-lesson")
        assert "Used by: tutor, extraction, summarizer. Not by: strategist (override)." in reply
        reply = await admin(bot, "/setmodel default openai:m-house")
        assert reply.startswith("default is now openai:m-house (was not set).")

        mark = len(llm.requests)
        await bot.say("/learn sleep")
        await bot.services.runner.wait_background()
        lesson = calls_to(llm, "m-lesson", mark)
        assert {r.api for r in lesson} == {"anthropic"}  # on the operator's Anthropic key
        assert len(lesson) == 3  # the tutor, then extraction and the summarizer behind it
        assert len(calls_to(llm, "m-planner", mark)) == 1  # the strategist's own override
        mark = len(llm.requests)
        await bot.say("hello")
        await bot.services.runner.wait_background()
        house = calls_to(llm, "m-house", mark)
        assert len(house) == 3  # extraction, coach, summarizer: the admin's default
        assert calls_to(llm, "m-default", mark) == []

        table = await admin(bot, "/models")
        assert "coach       openai:m-house  [default]  set by tg:" in table
        assert "tutor       anthropic:m-lesson  [pipeline]" in table
        reply = await admin(bot, "/resetmodel default")
        assert reply.startswith("default is no longer set (was openai:m-house).")
        mark = len(llm.requests)
        await bot.say("and now?")
        await bot.services.runner.wait_background()
        assert len(calls_to(llm, "m-default", mark)) == 3  # DEFAULT_MODEL again


async def test_rollback_walks_back_through_the_history(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        await admin(bot, "/setmodel coach openai:m-one")
        await admin(bot, "/setmodel coach openai:m-two")
        reply = await admin(bot, "/rollback coach")
        assert reply.startswith("coach is back on openai:m-one (undid #2 of ")
        assert "openai:m-one -> openai:m-two" in reply
        mark = len(llm.requests)
        assert (await bot.say("hi")) == ["Try a fixed wind-down routine (m-one)."]
        reply = await admin(bot, "/rollback coach")
        assert reply.startswith("coach is back on its configured model (undid #1 of ")
        assert "It runs on anthropic:m-coach [agent]." in reply
        reply = await admin(bot, "/rollback coach")
        assert reply == "Nothing to roll back for coach: it has no change left to undo."
        assert (await bot.say("hi again")) == ["Try a fixed wind-down routine (m-coach)."]
        assert calls_to(llm, "m-two", mark) == []

        roles = {
            line.split()[0]: line.split()[1]
            for line in (await admin(bot, "/agents")).splitlines()[:6]
        }
        assert roles == {
            "extraction": "post",
            "strategist": "plan",
            "coach": "chat",
            "tutor": "chat",
            "trainer": "chat",
            "summarizer": "post",
        }
        history = await admin(bot, "/modelhistory coach")
        lines = history.splitlines()
        assert [line.split("  ", 1)[1] for line in lines] == [
            f"coach: openai:m-one -> configured (rollback)  by tg:{ADMIN} (@user{ADMIN})",
            f"coach: openai:m-two -> openai:m-one (rollback)  by tg:{ADMIN} (@user{ADMIN})",
            f"coach: openai:m-one -> openai:m-two  by tg:{ADMIN} (@user{ADMIN})",
            f"coach: configured -> openai:m-one  by tg:{ADMIN} (@user{ADMIN})",
        ]
        assert [line.split()[0] for line in lines] == ["#4", "#3", "#2", "#1"]


async def test_the_users_menu_is_the_catalogs_entries_for_users(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        await admin(bot, '/catalog add cheap openai:m-cheap name="Cheap & quick" users=yes')
        await bot.say("/model")
        (menu,) = tg.calls_of("sendMessage", chat_id=USER)[-1:]
        # The models, one a row; the last row is the local/online preference.
        buttons = [row[0] for row in menu.params["reply_markup"]["inline_keyboard"][:-1]]
        assert [b["text"] for b in buttons] == ["m-default", "Cheap & quick", "✅ Bot default"]
        mark = len(tg.calls)
        tg.callback_query(f"model:cheap:{USER}", user_id=USER)
        (answer,) = await tg.wait_for_call("answerCallbackQuery", since=mark)
        assert answer.params["text"] == "Saved: Cheap & quick"
        stored = await bot.services.storage.settings.get(USER)
        assert stored is not None
        assert stored.default_model == "cheap"
        assert (await bot.say("hello")) == ["Try a fixed wind-down routine (m-cheap)."]

        reply = await admin(bot, "/catalog edit cheap users=no")
        assert "not offered to users" in reply
        # Off the menu: the user is back on the bot's models at once, and /model says why.
        assert (await bot.say("hello?")) == ["Try a fixed wind-down routine (m-coach)."]
        (menu_text,) = await bot.say("/model")
        assert menu_text.startswith(
            "Your model: cheap, which is no longer offered, so you get the bot's default."
        )
        table = {
            line.split()[0]: " ".join(line.split())
            for line in (await admin(bot, "/catalog")).splitlines()
        }
        assert table["m-default"] == (
            "m-default openai:m-default agent defaults users: yes used by: DEFAULT_MODEL"
        )
        assert table["m-coach"].endswith("users: no used by: AGENT_MODELS[coach]")
        assert table["cheap"] == (
            "cheap Cheap & quick (openai:m-cheap) agent defaults users: no used by: nothing"
        )


async def test_an_edit_applies_to_the_next_message_and_a_used_entry_cannot_be_removed(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        await admin(bot, "/catalog add writer openai:m-writer max_tokens=300")
        await admin(bot, "/setmodel coach writer")
        mark = len(llm.requests)
        await bot.say("one")
        assert [r.body["max_tokens"] for r in calls_to(llm, "m-writer", mark)] == [300]
        reply = await admin(bot, '/catalog edit writer max_tokens=120 name="The writer"')
        assert reply.startswith("writer is now The writer (openai:m-writer), max_tokens=120")
        assert "Used by: coach." in reply
        mark = len(llm.requests)
        await bot.say("two")
        assert [r.body["max_tokens"] for r in calls_to(llm, "m-writer", mark)] == [120]
        reply = await admin(bot, "/catalog edit writer max_tokens=")
        mark = len(llm.requests)
        await bot.say("three")
        # Back to the coach's own bound.
        assert [r.body["max_tokens"] for r in calls_to(llm, "m-writer", mark)] == [
            CoachAgent.max_tokens
        ]

        refused = await admin(bot, "/catalog remove writer")
        assert refused == (
            "Not changed: writer is in use by coach; assign those another model (/setmodel) "
            "or reset them (/resetmodel) first"
        )
        refused = await admin(bot, "/catalog remove m-default")
        assert refused.startswith("Not changed: m-default is named in DEFAULT_MODEL")
        shown = await admin(bot, "/catalog show writer")
        assert "used by: coach" in shown
        assert "max_tokens: the agent's own" in shown
        await admin(bot, "/resetmodel coach")
        removed = await admin(bot, "/catalog remove writer")
        assert removed.startswith("Removed writer (openai:m-writer).")
        history = await admin(bot, "/modelhistory catalog:writer")
        assert [line.split(": ", 1)[1].split("  by")[0] for line in history.splitlines()] == [
            'removed (openai:m-writer name="The writer")',
            'openai:m-writer name="The writer" max_tokens=120 -> openai:m-writer name="The writer"',
            'openai:m-writer max_tokens=300 -> openai:m-writer name="The writer" max_tokens=120',
            "added openai:m-writer max_tokens=300",
        ]


BAD_INPUT = [
    ("/setmodel stratgist fast", "Not changed: unknown target 'stratgist'"),
    ("/setmodel role:writer fast", "Not changed: unknown role 'writer'"),
    ("/setmodel pipeline:chat fast", "Not changed: unknown pipeline 'chat'"),
    ("/setmodel coach fsat", "Not changed: unknown alias 'fsat'; did you mean fast?"),
    ("/setmodel coach groq:llama", "Not changed: groq:llama needs GROQ_API_KEY, which is not set"),
    ("/setmodel coach mlx:tiny", "Not changed: mlx:tiny needs MLX_MODEL_PATH"),
    (
        "/setmodel coach anthropic/claude-sonet-4.5",
        "Not changed: 'anthropic/claude-sonet-4.5' is not in OpenRouter's model catalog. "
        f"Did you mean: {OPENROUTER_ID}",
    ),
    ("/catalog add fast openai:m-other", "Not changed: fast is already in the catalog"),
    ("/catalog add Bad! openai:m-x", "Not changed: alias 'bad!' must be 1-32 of a-z 0-9"),
    ("/catalog add new openai:m-x colour=red", "Not changed: unknown key 'colour'; keys: name"),
    ("/catalog add new openai:m-x max_tokens=lots", "Not changed: max_tokens must be a whole"),
    ("/catalog add new openai:m-x temperature=3", "Not changed: temperature must be a number"),
    ("/catalog add new openai:m-x users=maybe", "Not changed: users must be yes or no"),
    ('/catalog add new openai:m-x name="Half open', 'Not changed: the quote in name="Half open'),
    ("/catalog add new wrong:m-x", "Not changed: unknown provider 'wrong'"),
    ("/catalog add new groq:m-x", "Not changed: groq:m-x needs GROQ_API_KEY"),
    ("/catalog edit nope max_tokens=3", "Not changed: unknown alias 'nope'"),
    ("/catalog edit fast spec=openai:x", "Not changed: unknown key 'spec'"),
    ("/catalog remove nope", "Not changed: unknown alias 'nope'"),
    ("/rollback role:nobody", "Not changed: unknown role 'nobody'"),
]


async def test_bad_input_changes_nothing_and_says_what_is_wrong_in_one_line(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer, backend: dict[str, Any]
) -> None:
    llm.catalog.append({"id": OPENROUTER_ID, "name": "Claude Sonnet 4.5"})
    settings = make_settings(tmp_path, tg, llm, **backend)
    async with running_bot(settings, tg, llm) as bot:
        await admin(bot, "/catalog add fast openai:m-fast")
        storage = bot.services.storage
        before = (
            await storage.model_catalog.list(),
            await storage.model_config.get_all_active(),
            await storage.model_history.latest_id(),
        )
        for command, expected in BAD_INPUT:
            reply = await admin(bot, command)
            assert reply.startswith(expected), (command, reply)
            assert "\n" not in reply, (command, reply)
        after = (
            await storage.model_catalog.list(),
            await storage.model_config.get_all_active(),
            await storage.model_history.latest_id(),
        )
        assert after == before
