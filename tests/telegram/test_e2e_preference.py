"""`/prefer local|online|any`, end to end: the real Dispatcher long-polls the fake Bot API, the
cloud models answer on one loopback server (OpenAI, Anthropic, OpenRouter wire formats) and the
operator's vLLM on another (OpenAI-compatible), each through the real SDK. What a `local` user's
turns cost is checked at the servers: every request on the vLLM one, none on the cloud one, an
admin's cloud override on the coach notwithstanding."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.telegram.routers.settings import PickModel
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.telegram_server import FakeTelegramServer
from tests.telegram.conftest import agent_llm_server
from tests.telegram.e2e_kit import ADMIN, OVERRIDE, USER, Harness, make_settings, running_bot

OTHER = 902
LOCAL = "vllm:m-local"


@pytest.fixture
async def vllm() -> AsyncIterator[FakeLLMServer]:
    """The operator's vLLM server (OpenAI-compatible), apart from the cloud providers' one."""
    async with agent_llm_server() as server:
        yield server


async def turns(bot: Harness, user_id: int) -> list[str]:
    """A chat message, a lesson and an exercise, and everything they start in the background."""
    replies = [
        *(await bot.say("I work night shifts and sleep badly", user_id=user_id)),
        *(await bot.say("/learn sleep hygiene", user_id=user_id)),
        *(await bot.say("/train sleep", user_id=user_id)),
    ]
    await bot.services.runner.wait_background()
    return replies


async def test_a_local_user_gets_only_local_model_calls_even_with_an_admins_cloud_override(
    tmp_path: Path,
    tg: FakeTelegramServer,
    llm: FakeLLMServer,
    vllm: FakeLLMServer,
    backend: dict[str, Any],
) -> None:
    settings = make_settings(
        tmp_path,
        tg,
        llm,
        vllm_base_url=vllm.openai_base_url,
        local_model=LOCAL,
        fallback_models=["openai:m-fallback", LOCAL],
        **backend,
    )
    async with running_bot(settings, tg, llm) as bot:
        (set_reply,) = await bot.say(f"/setmodel coach {OVERRIDE}", user_id=ADMIN)
        assert set_reply.startswith(f"coach now runs on openrouter:{OVERRIDE}")
        (saved,) = await bot.say("/prefer local")
        assert saved.startswith("Saved. Your preference: local only: every agent serving you")
        assert LOCAL in saved

        cloud, local = len(llm.requests), len(vllm.requests)
        replies = await turns(bot, USER)
        assert replies[0] == "Try a fixed wind-down routine (m-local)."
        assert replies[1] == "Try a fixed wind-down routine (m-local)."
        assert llm.requests[cloud:] == []  # nothing of this user's reached a cloud model
        served = vllm.requests[local:]
        assert {r.model for r in served} == {"m-local"}
        # Every agent of the three pipelines asked (extraction twice: support and learn).
        assert len(served) >= 7

        # Another user's turn still runs on the admin's override and the configured models.
        cloud, local = len(llm.requests), len(vllm.requests)
        (theirs,) = await bot.say("hello", user_id=OTHER)
        await bot.services.runner.wait_background()
        assert theirs == f"Try a fixed wind-down routine ({OVERRIDE})."
        assert vllm.requests[local:] == []

        # What the user and the admins see.
        (menu,) = await bot.say("/model")
        assert "Your preference: local only" in menu
        (table,) = await bot.say(f"/models {USER}", user_id=ADMIN)
        assert table.startswith(f"For user {USER}: model not chosen, preference local.")
        coach = next(line for line in table.splitlines() if line.strip().startswith("coach"))
        assert f"{LOCAL}  [preference]  from LOCAL_MODEL" in coach
        assert "passed over: it is a cloud model" in coach

        # Online: never a local model, and a local pick on /model is refused, saying so.
        (online,) = await bot.say("/prefer online")
        assert online == "Saved. Your preference: online only: never a local model."
        await bot.press(PickModel(alias="m-local", user=USER).pack())
        [refusal] = tg.calls_of("answerCallbackQuery")[-1:]
        assert "is a local model, and your preference is online" in str(refusal.params["text"])
        local = len(vllm.requests)
        await turns(bot, USER)
        assert vllm.requests[local:] == []

        (usage,) = await bot.say("/prefer offline")
        assert usage.startswith("Usage: /prefer local|online|any")


async def test_local_is_refused_saying_so_when_no_local_model_is_configured(
    tmp_path: Path, tg: FakeTelegramServer, llm: FakeLLMServer
) -> None:
    async with running_bot(make_settings(tmp_path, tg, llm), tg, llm) as bot:
        (refused,) = await bot.say("/prefer local")
        assert refused.startswith("This bot has no local model set up")
        row = await bot.services.storage.settings.get(USER)
        assert row is None or row.model_preference == "any"
