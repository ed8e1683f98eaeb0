"""What `/setmodel` and `/resetmodel` answer is what happened: changed or not, history written or
not, other replicas told at once (real Redis on loopback) or only within the TTL."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from bot.config import Settings
from bot.services.admin_commands import HISTORY_PROBLEM, STORAGE_PROBLEM, AdminCommands
from bot.services.model_config import ModelConfigService
from bot.services.model_resolution import ModelResolver, UserModelChoice
from bot.services.override_events import OverrideEvents
from tests.services.fakes import FakeConfigRepo, FakeHistoryRepo, FakeProviders

EVERY_REPLICA = "Effective now, here and on every other replica."


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def no_user_model(user_id: int | None) -> UserModelChoice | None:
    return None


class Admin:
    """AdminCommands over a real ModelConfigService and resolver, with fake repositories."""

    def __init__(self, redis_url: str | None = None) -> None:
        self.settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            default_model="openai:gpt-4o-mini",
            openrouter_api_key="sk-or-test",
            redis_url=redis_url,
        )
        self.repo = FakeConfigRepo()
        self.history = FakeHistoryRepo()
        providers = FakeProviders()
        self.config = ModelConfigService.from_settings(
            self.settings, self.repo, self.history, providers
        )
        self.events: OverrideEvents | None = None
        if redis_url is not None:
            self.events = OverrideEvents(
                redis_url, lambda _agent: None, channel=f"test-admin-{uuid.uuid4().hex}"
            )
            self.config.add_change_listener(self.events.publish)
        self.commands = AdminCommands(
            settings=self.settings,
            model_config=self.config,
            resolver=ModelResolver(self.settings, providers, self.config),
            history=self.history,
            load_user_model=no_user_model,
        )

    async def close(self) -> None:
        await self.config.close()
        if self.events is not None:
            await self.events.close()


@pytest.fixture
async def admin() -> AsyncIterator[Admin]:
    made = Admin()
    yield made
    await made.close()


async def test_a_set_whose_history_fails_says_it_changed(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    admin.history.fail = True
    reply = await admin.commands.set_model("strategist", "x/new", by="tg:1")
    assert not reply.startswith("Not changed")
    assert reply.startswith("strategist now runs on openrouter:x/new (was openai:gpt-4o-mini")
    assert HISTORY_PROBLEM in reply
    assert await admin.config.get_override("strategist") == "x/new"
    assert "history line could not be written" in caplog.text


async def test_a_reset_whose_history_fails_says_it_changed(admin: Admin) -> None:
    await admin.commands.set_model("coach", "x/new", by="tg:1")
    admin.history.fail = True
    reply = await admin.commands.reset_model("coach", by="tg:1")
    assert reply.startswith(
        "coach is back on its configured model openai:gpt-4o-mini [default] (was openrouter:x/new)"
    )
    assert HISTORY_PROBLEM in reply
    assert await admin.config.get_override("coach") is None


async def test_a_reset_counts_the_active_row_read_before_not_only_deactivates_answer(
    admin: Admin,
) -> None:
    await admin.commands.set_model("coach", "x/new", by="tg:1")
    admin.repo.deactivated_by_another = True
    reply = await admin.commands.reset_model("coach", by="tg:1")
    assert "had no override" not in reply
    assert "(was openrouter:x/new)" in reply
    assert HISTORY_PROBLEM not in reply


async def test_a_failing_upsert_is_not_changed(admin: Admin) -> None:
    async def down(*args: object) -> None:
        from bot.storage.repositories import StorageUnavailable

        raise StorageUnavailable("database is down")

    admin.repo.upsert = down  # type: ignore[method-assign,assignment]
    assert await admin.commands.set_model("coach", "x/new", by="tg:1") == STORAGE_PROBLEM
    assert await admin.config.get_override("coach") is None


async def test_without_redis_the_note_gives_the_ttl(admin: Admin) -> None:
    reply = await admin.commands.set_model("coach", "x/new", by="tg:1")
    assert reply.endswith("Effective now here; within 60 s on other replicas (at once with Redis).")


async def test_a_failed_redis_publish_is_not_called_every_replica() -> None:
    admin = Admin(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        reply = await admin.commands.set_model("coach", "x/new", by="tg:1")
        assert EVERY_REPLICA not in reply
        assert (
            "Effective now here; within 60 s on other replicas (they could not be told at once: "
            "the Redis announcement failed)."
        ) in reply
        assert await admin.config.get_override("coach") == "x/new"
        reset = await admin.commands.reset_model("coach", by="tg:1")
        assert EVERY_REPLICA not in reset
        assert "the Redis announcement failed" in reset
    finally:
        await admin.close()


async def test_a_delivered_redis_publish_reaches_every_replica(redis_url: str) -> None:
    admin = Admin(redis_url)
    try:
        reply = await admin.commands.set_model("coach", "x/new", by="tg:1")
        assert reply.endswith(EVERY_REPLICA)
    finally:
        await admin.close()
