"""The console: the full pipelines on real SQLite, admin commands, and `run_console` itself
against the loopback LLM server through the real OpenAI SDK."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.app import build_services
from bot.config import Settings
from bot.console import ConsoleSession, run_console
from bot.pipeline.observer import NullObserver
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest, unused_port_url
from tests.services.fakes import FakeProviders

DEFAULT = "openai:gpt-4o-mini"


def make_settings(tmp_path: Path, **extra: object) -> Settings:
    """Every endpoint on loopback: where a test gives no server, nothing listens (so a stray
    request, e.g. `/setmodel` asking OpenRouter's catalog, fails at once instead of leaving the
    machine)."""
    values: dict[str, object] = {
        "_env_file": None,
        "database_url": f"sqlite:///{tmp_path / 'bot.db'}",
        "default_model": DEFAULT,
        "openai_api_key": "sk-openai-test",
        "openrouter_api_key": "sk-or-test",
        "openai_base_url": unused_port_url(),
        "openrouter_base_url": unused_port_url(),
        "shutdown_timeout": 5,
    }
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


def scripted_input(lines: list[str]):  # type: ignore[no-untyped-def]
    feed: Iterator[str] = iter(lines)

    async def read_line() -> str | None:
        return next(feed, None)

    return read_line


def schemas(infos: list) -> list[str | None]:  # type: ignore[type-arg]
    return [i.schema.__name__ if i.schema else ("stream" if i.streaming else "text") for i in infos]


async def test_support_answers_and_setmodel_changes_only_the_strategist_on_the_next_message(
    tmp_path: Path,
) -> None:
    providers = FakeProviders()
    out: list[str] = []
    override = "openrouter:anthropic/claude-sonnet-4.5"
    async with FakeLLMServer() as catalog:  # OpenRouter's model list, on loopback
        settings = make_settings(tmp_path, openrouter_base_url=catalog.openrouter_base_url)
        async with build_services(
            settings, providers=providers, observer=NullObserver()
        ) as services:
            session = ConsoleSession(
                services,
                scripted_input(
                    [
                        "I am learning Go and keep procrastinating",
                        "/setmodel strategist anthropic/claude-sonnet-4.5",
                        "any advice for today?",
                        "/models",
                        "/quit",
                    ]
                ),
                out.append,
                user_id=42,
                chat_id=42,
            )
            assert await session.run() == 0
            await services.runner.wait_background()

            text = "".join(out)
            assert "bot> Reply from gpt-4o-mini." in text
            assert f"strategist now runs on {override}" in text

            default_calls = schemas(providers.calls(DEFAULT))
            override_calls = schemas(providers.calls(override))
            # First message: everything on the default. Second: the strategist alone moved.
            assert override_calls == ["ReplyPlan"]
            assert default_calls.count("ReplyPlan") == 1
            assert default_calls.count("ExtractedFacts") == 2
            assert default_calls.count("stream") == 2
            # The coach of the second message followed the plan written by the override model.
            [coach_second] = [
                msgs
                for p in providers.made[DEFAULT]
                for msgs, info in p.calls
                if info.streaming and "any advice" in msgs[-1].content
            ]
            # As background in a user turn, never in the system role.
            assert "plan by anthropic/claude-sonnet-4.5" not in coach_second[0].content
            assert "plan by anthropic/claude-sonnet-4.5" in coach_second[1].content

            assert f"strategist  {override}  [override]" in text
            assert f"coach       {DEFAULT}  [default]" in text

            stored = await services.storage.messages.recent(42)
            assert [(m.role, m.pipeline) for m in stored] == [
                ("user", "support"),
                ("assistant", "support"),
            ] * 2
            assert stored[1].text == "Reply from gpt-4o-mini."
            assert [f.fact for f in await services.storage.facts.list(42)] == ["Is learning Go."]
            summary = await services.storage.summaries.get(42)
            assert summary is not None
            assert summary.summary == "Summary by gpt-4o-mini."
            history = await services.storage.model_history.list("strategist")
            assert history[0].new_model_id == "anthropic/claude-sonnet-4.5"
            assert history[0].changed_by == "console:42"
            # The id was checked against the loopback catalog, not left unverified.
            assert [r.api for r in catalog.requests] == ["models"]
            assert "could not be fetched" not in text
    assert providers.closed


async def test_train_learn_and_admin_command_errors(tmp_path: Path) -> None:
    providers = FakeProviders()
    out: list[str] = []
    async with build_services(
        make_settings(tmp_path), providers=providers, observer=NullObserver()
    ) as services:
        session = ConsoleSession(
            services,
            scripted_input(
                [
                    "/train fractions",
                    "1/2 + 1/4 = 3/4",
                    "/chat",
                    "/learn recursion",
                    "/setmodel stratgist x/y",
                    "/resetmodel coach",
                    "/nonsense",
                ]
            ),
            out.append,
        )
        assert await session.run() == 0  # end of input leaves cleanly
        await services.runner.wait_background()
        text = "".join(out)

        assert "Exercise (fractions):\nExercise from gpt-4o-mini?" in text
        assert "Score: 8/10. Nearly right." in text
        exercises = await services.storage.exercises.list_for_user(1)
        graded = [e for e in exercises if e.grade is not None]
        assert len(exercises) == 2
        assert len(graded) == 1
        assert graded[0].answer == "1/2 + 1/4 = 3/4"
        assert graded[0].topic == "fractions"
        assert "Reply from gpt-4o-mini." in text  # the tutor's lesson
        assert "Not changed: unknown target 'stratgist'; did you mean 'strategist'?" in text
        assert "coach had no override" in text
        assert "Unknown command /nonsense" in text


def reply_for(request: RecordedRequest) -> str:
    """The loopback model: valid JSON for each agent's schema, prose otherwise."""
    fmt = request.body.get("response_format")
    title = fmt["json_schema"]["schema"].get("title") if fmt else None
    if title == "ExtractedFacts":
        return json.dumps({"facts": ["Works night shifts."]})
    if title == "ReplyPlan":
        return json.dumps({"intent": "sleep advice", "key_points": ["keep a fixed wind-down"]})
    if request.stream:
        return f"Try a fixed wind-down routine ({request.model})."
    return "The user works night shifts."


@pytest.fixture
def stdin_lines(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def feed(lines: list[str]) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))

    return feed


async def test_run_console_end_to_end_over_the_real_sdk(
    tmp_path: Path,
    stdin_lines,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    async with FakeLLMServer() as server:
        server.default.text = reply_for
        settings = make_settings(
            tmp_path,
            openai_base_url=server.openai_base_url,
            openrouter_base_url=server.openrouter_base_url,
        )
        stdin_lines(
            [
                "I work night shifts and sleep badly",
                "/setmodel strategist anthropic/claude-sonnet-4.5",
                "what should I do tonight?",
                "/quit",
            ]
        )
        assert await run_console(settings) == 0
        shown = capsys.readouterr().out
        assert "bot> Try a fixed wind-down routine (gpt-4o-mini)." in shown
        plans = [
            r.model
            for r in server.requests
            if "ReplyPlan" in json.dumps(r.body.get("response_format") or {})
        ]
        assert plans == ["gpt-4o-mini", "anthropic/claude-sonnet-4.5"]
        # The override went to OpenRouter with the shared key; the rest to OpenAI with its key.
        override_request = next(r for r in server.requests if r.model.startswith("anthropic/"))
        assert override_request.headers["authorization"] == "Bearer sk-or-test"
        coach = [r for r in server.requests if r.stream]
        assert {r.model for r in coach} == {"gpt-4o-mini"}
        assert all(r.headers["authorization"] == "Bearer sk-openai-test" for r in coach)


async def test_console_model_pins_every_agent_and_the_admin_commands_match_telegram(
    tmp_path: Path,
    stdin_lines,
    capsys: pytest.CaptureFixture[str],  # type: ignore[no-untyped-def]
) -> None:
    async with FakeLLMServer() as server:
        server.default.text = reply_for
        settings = make_settings(
            tmp_path,
            openai_base_url=server.openai_base_url,
            openrouter_base_url=server.openrouter_base_url,
            agent_models={"strategist": "openai:m-planner"},
        )
        # First session: the catalog and an assignment, with the Telegram syntax.
        stdin_lines(
            [
                '/catalog add pinned openai:m-pinned name="Pinned one" max_tokens=99 users=yes',
                "/setmodel role:chat pinned",
                "/models",
                "/model",
                "/model pinned",
                "/model default",
                "/rollback role:chat",
                "/modelhistory",
                "/catalog show pinned",
                "/quit",
            ]
        )
        assert await run_console(settings) == 0
        shown = capsys.readouterr().out
        assert "Added pinned: Pinned one (openai:m-pinned), max_tokens=99, offered to users." in (
            shown
        )
        assert "role:chat is now Pinned one (openai:m-pinned) (was not set)." in shown
        assert "Used by: coach, tutor, trainer." in shown
        assert "coach       Pinned one (openai:m-pinned)  [role]  set by console:1" in shown
        assert "  pinned  Pinned one (openai:m-pinned)" in shown  # /model lists it
        assert "Your model is now pinned." in shown
        assert "Your model is now the bot default." in shown
        assert "role:chat is back on its configured model (undid #2 of " in shown
        assert "catalog:pinned: added openai:m-pinned" in shown
        assert "  max_tokens: 99" in shown

        # Second session on --model: every agent on it, with its parameters, whatever the
        # levels say (the strategist has AGENT_MODELS).
        mark = len(server.requests)
        stdin_lines(["I work night shifts", "/models", "/quit"])
        assert await run_console(settings, model="pinned") == 0
        out = capsys.readouterr()
        assert "Every agent runs on pinned in this session." in out.err
        assert "bot> Try a fixed wind-down routine (m-pinned)." in out.out
        asked = [r for r in server.requests[mark:] if r.api == "openai"]
        assert {r.model for r in asked} == {"m-pinned"}
        assert len(asked) == 4  # extraction, strategist, coach, summarizer
        assert {r.body.get("max_tokens") for r in asked} == {99}
        assert "strategist  Pinned one (openai:m-pinned)  [session]  set by console --model" in (
            out.out
        )

        # A model that cannot run is refused before the session starts.
        assert await run_console(settings, model="groq:llama") == 2
        assert "Cannot run on --model groq:llama: groq:llama needs GROQ_API_KEY" in (
            capsys.readouterr().err
        )


def test_the_command_line_takes_model_for_the_console_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import bot.__main__ as entry

    seen: list[str | None] = []
    monkeypatch.setattr(entry, "_run_console", lambda settings, model=None: seen.append(model) or 0)
    monkeypatch.setattr(entry, "load_settings", lambda: Settings(_env_file=None))  # type: ignore[call-arg]
    monkeypatch.setattr("bot.observability.logs.install_log_scrubbing", lambda *a: None)
    assert entry.main(["console", "--model", "fast"]) == 0
    assert seen == ["fast"]
    with pytest.raises(SystemExit):
        entry.main(["migrate", "--model", "fast"])
    assert "--model is for `python -m bot console`" in capsys.readouterr().err
