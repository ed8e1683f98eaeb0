"""Several replicas, as deployed: real `python -m bot` processes in webhook mode sharing one
database (InsForge over the real PostgreSQL) and one Redis; Telegram and the models on loopback.

- `/setmodel` taken by replica A changes the next message's model on replica B at once (Redis),
  and within MODEL_CONFIG_TTL when Redis is down, which never stops replies;
- one chat's updates alternating between replicas are answered in order;
- SIGTERM during a pipeline finishes the reply and writes the background summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.storage.insforge_client import InsForgeClient
from bot.storage.migrate import apply_insforge_migrations
from bot.storage.sqlite import SQLiteStorage
from tests.fakes.agent_replies import agent_reply, schema_title
from tests.fakes.bot_process import REPO, BotProcess, clean_env
from tests.fakes.insforge_server import FakeInsForge, create_database, drop_database, dsn_for
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.ports import free_port
from tests.fakes.tcp_proxy import TcpProxy
from tests.fakes.telegram_server import FakeTelegramServer, unique_token

ADMIN = 1001
OVERRIDE = "anthropic/claude-sonnet-4.5"
SECRET = "webhook-secret-for-tests"


def new_user() -> int:
    return 10_000 + uuid.uuid4().int % 1_000_000_000


def strategist_models(llm: FakeLLMServer, since: int = 0) -> list[str]:
    return [
        r.model
        for r in llm.requests[since:]
        if "ReplyPlan" in json.dumps(r.body.get("response_format") or {})
    ]


@dataclass
class Deployment:
    tg: FakeTelegramServer
    llm: FakeLLMServer
    replicas: list[BotProcess]

    async def send(self, replica: int, text: str, *, user: int) -> None:
        update = self.tg.user_message(text, user_id=user)
        status = await self.tg.post_to_webhook(
            update, secret=SECRET, url=f"{self.replicas[replica].url}/webhook"
        )
        assert status == 200, f"replica {replica} answered {status}"

    async def replies(self, chat: int, count: int, timeout: float = 30.0) -> list[str]:
        calls = await self.tg.wait_for_call(
            "sendMessage", chat_id=chat, count=count, timeout=timeout
        )
        return [str(c.text) for c in calls]

    def logs(self) -> str:
        return "\n\n".join(f"--- replica {i}\n{p.tail()}" for i, p in enumerate(self.replicas))


@asynccontextmanager
async def deployment(
    tmp_path: Path,
    postgres_dsn: str,
    redis_url: str,
    *,
    replicas: int = 2,
    ttl: float = 60.0,
    llm_server: FakeLLMServer | None = None,
) -> AsyncIterator[Deployment]:
    llm = llm_server or FakeLLMServer()
    async with FakeTelegramServer(token=unique_token()) as tg, llm:
        llm.default.text = agent_reply
        llm.catalog.append({"id": OVERRIDE, "name": "Claude Sonnet 4.5"})
        database = await create_database(postgres_dsn)
        insforge = FakeInsForge(dsn_for(postgres_dsn, database))
        procs: list[BotProcess] = []
        try:
            await insforge.start()
            client = InsForgeClient(insforge.url, insforge.api_key)
            try:
                await apply_insforge_migrations(client)
            finally:
                await client.aclose()
            for index in range(replicas):
                port = free_port()
                env = clean_env(
                    TELEGRAM_BOT_TOKEN=tg.token,
                    TELEGRAM_API_BASE=tg.url,
                    ADMIN_IDS=str(ADMIN),
                    DEFAULT_MODEL="openai:gpt-4o-mini",
                    OPENAI_API_KEY="sk-test-openai-key-000000",
                    OPENAI_BASE_URL=llm.openai_base_url,
                    OPENROUTER_API_KEY="sk-or-test-key-0000000000",
                    OPENROUTER_BASE_URL=llm.openrouter_base_url,
                    INSFORGE_URL=insforge.url,
                    INSFORGE_API_KEY=insforge.api_key,
                    INTAKE_PATH=str(tmp_path / f"intake-{index}.db"),
                    REDIS_URL=redis_url,
                    WEBHOOK_URL=f"http://127.0.0.1:{port}/webhook",
                    WEBHOOK_SECRET=SECRET,
                    WEBHOOK_HOST="127.0.0.1",
                    WEBHOOK_PORT=str(port),
                    MODEL_CONFIG_TTL=str(ttl),
                    LLM_TIMEOUT="10",
                    SHUTDOWN_TIMEOUT="20",
                    LOG_LEVEL="INFO",
                )
                proc = BotProcess(env, tmp_path / f"replica-{index}.log", port=port)
                await proc.start()
                procs.append(proc)
            for proc in procs:
                await proc.wait_healthy()
            await tg.wait_for_call("setWebhook", count=replicas, timeout=30)
            # Each test says which replica gets which update; the fake must not deliver them
            # a second time to the last registered webhook.
            tg.webhook_url = ""
            dep = Deployment(tg, llm, procs)
            try:
                yield dep
            except BaseException:
                print(dep.logs())
                raise
        finally:
            codes = [await proc.stop() for proc in procs]
            await insforge.stop()
            await drop_database(postgres_dsn, database)
        assert codes == [0] * len(procs), f"replicas exited with {codes}"


async def test_setmodel_on_one_replica_changes_the_next_message_on_the_other(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    async with deployment(tmp_path, postgres_dsn, redis_url, ttl=60.0) as dep:
        user = new_user()
        # Replica B answers once, so its override cache is warm (and would stay so for 60 s).
        await dep.send(1, "hello", user=user)
        await dep.replies(user, 1)
        assert strategist_models(dep.llm) == ["gpt-4o-mini"]

        seen = len(dep.llm.requests)
        await dep.send(0, f"/setmodel strategist {OVERRIDE}", user=ADMIN)
        (confirmation,) = await dep.replies(ADMIN, 1)
        assert OVERRIDE in confirmation
        loop = asyncio.get_running_loop()
        confirmed_at = loop.time()

        await dep.send(1, "and now?", user=user)
        assert loop.time() - confirmed_at < 1.0
        await dep.replies(user, 2)
        # Only Redis can have told replica B: its cache TTL is 60 s.
        assert strategist_models(dep.llm, seen) == [OVERRIDE]
        # The other agents kept their model.
        others = {
            r.model
            for r in dep.llm.requests[seen:]
            # (the catalog lookup behind /setmodel is a GET /models, not a model call)
            if r.api != "models"
            and "ReplyPlan" not in json.dumps(r.body.get("response_format") or {})
        }
        assert others == {"gpt-4o-mini"}


async def test_catalog_changes_reach_the_other_replica_at_once_with_one_configuration_version(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    async with deployment(tmp_path, postgres_dsn, redis_url, ttl=60.0) as dep:
        user = new_user()
        await dep.send(1, "hello", user=user)
        await dep.replies(user, 1)  # replica B's configuration is now cached for 60 s

        await dep.send(0, "/catalog add planner openai:m-planner max_tokens=55", user=ADMIN)
        await dep.send(0, "/setmodel role:plan planner", user=ADMIN)
        confirmations = await dep.replies(ADMIN, 2)
        assert "Effective now, here and on every other replica." in confirmations[1]

        def plans(since: int) -> list[tuple[str, object]]:
            return [
                (r.model, r.body.get("max_tokens"))
                for r in dep.llm.requests[since:]
                if "ReplyPlan" in json.dumps(r.body.get("response_format") or {})
            ]

        seen = len(dep.llm.requests)
        await dep.send(1, "and now?", user=user)
        await dep.replies(user, 2)
        assert plans(seen) == [("m-planner", 55)]  # only Redis can have told replica B

        await dep.send(0, "/catalog edit planner max_tokens=44", user=ADMIN)
        await dep.replies(ADMIN, 3)
        seen = len(dep.llm.requests)
        await dep.send(1, "once more", user=user)
        await dep.replies(user, 3)
        assert plans(seen) == [("m-planner", 44)]

        # Both replicas are on the same configuration version: the entry, the assignment, the
        # edit.
        await dep.send(1, "/models", user=ADMIN)
        await dep.send(0, "/models", user=ADMIN)
        tables = await dep.replies(ADMIN, 5)
        for table in tables[3:]:
            assert "Configuration version 3." in table
            assert "openai:m-planner  [role]" in table


async def test_with_redis_down_the_change_arrives_within_the_ttl_and_replies_go_on(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    async with TcpProxy("127.0.0.1", 6379) as proxy:
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        ttl = 3.0
        async with deployment(tmp_path, postgres_dsn, proxied, ttl=ttl) as dep:
            user = new_user()
            await dep.send(1, "hello", user=user)
            await dep.replies(user, 1)

            await proxy.cut()
            await dep.send(0, f"/setmodel strategist {OVERRIDE}", user=ADMIN)
            (confirmation,) = await dep.replies(ADMIN, 1)
            assert OVERRIDE in confirmation
            loop = asyncio.get_running_loop()
            changed_at = loop.time()

            # Replies never stop while Redis is away...
            await dep.send(1, "still there?", user=user)
            await dep.replies(user, 2)
            # ...and once the TTL has run out, replica B has re-read the overrides.
            await asyncio.sleep(max(0.0, ttl + 0.5 - (loop.time() - changed_at)))
            seen = len(dep.llm.requests)
            await dep.send(1, "and now?", user=user)
            await dep.replies(user, 3)
            assert strategist_models(dep.llm, seen) == [OVERRIDE]
            await proxy.restore()


class PacedLLM(FakeLLMServer):
    """Answers each user message's model calls after that message's own delay, and records, as
    they arrive, which message each call of the foreground agents (extraction, strategist, coach)
    serves. Background calls (the summarizer) are neither delayed nor recorded."""

    def __init__(self, delays: dict[int, float]) -> None:
        super().__init__()
        self.delays = delays
        self.arrivals: list[int] = []

    async def _dispatch(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        number = _message_number(request)
        if number is not None:
            self.arrivals.append(number)
            await asyncio.sleep(self.delays.get(number, 0.0))
        return await super()._dispatch(request, writer)


def _message_number(request: RecordedRequest) -> int | None:
    foreground = request.stream or schema_title(request) in {"ExtractedFacts", "ReplyPlan"}
    # The new message is the last one the prompt quotes (the history comes before it).
    numbers = re.findall(r"message (\d+)", request.last_user_text)
    return int(numbers[-1]) if foreground and numbers else None


async def test_one_chats_updates_alternating_between_replicas_are_answered_in_order(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    def reply(request: RecordedRequest) -> str:
        if request.stream:
            return f"reply to {request.last_user_text}"
        return agent_reply(request)

    # Replica A gets the slow messages 1 and 3, replica B the fast 2 and 4: without ordering
    # across replicas, B would answer 2 while A is still on 1 (and A's own 3 could overtake B's 2).
    llm = PacedLLM({1: 0.8, 3: 0.8})
    async with deployment(tmp_path, postgres_dsn, redis_url, llm_server=llm) as dep:
        dep.llm.default.text = reply
        user = new_user()
        for n, replica in enumerate((0, 1, 0, 1), start=1):
            await dep.send(replica, f"message {n}", user=user)
        texts = await dep.replies(user, 4, timeout=60)
        assert [t.split("reply to ")[-1].strip() for t in texts] == [
            "message 1",
            "message 2",
            "message 3",
            "message 4",
        ]
        # Not only the replies: each message's pipeline ran whole before the next one started.
        assert llm.arrivals == sorted(llm.arrivals), llm.arrivals
        assert [llm.arrivals.count(n) for n in (1, 2, 3, 4)] == [3, 3, 3, 3], llm.arrivals


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_sigterm_during_a_pipeline_finishes_the_reply_and_the_summary(
    tmp_path: Path, mode: str
) -> None:
    async with FakeTelegramServer(token=unique_token()) as tg, FakeLLMServer() as llm:
        llm.default.text = agent_reply
        llm.script("coach-model", agent_reply, latency=1.0)
        llm.script("summary-model", agent_reply, latency=0.8)
        database = tmp_path / "bot.db"
        port = free_port()
        webhook = (
            {"WEBHOOK_URL": f"http://127.0.0.1:{port}/webhook", "WEBHOOK_SECRET": SECRET}
            if mode == "webhook"
            else {}
        )
        env = clean_env(
            TELEGRAM_BOT_TOKEN=tg.token,
            TELEGRAM_API_BASE=tg.url,
            DEFAULT_MODEL="openai:gpt-4o-mini",
            AGENT_MODELS="coach=openai:coach-model,summarizer=openai:summary-model",
            OPENAI_API_KEY="sk-test-openai-key-000000",
            OPENAI_BASE_URL=llm.openai_base_url,
            DATABASE_URL=f"sqlite:///{database}",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            SHUTDOWN_TIMEOUT="20",
            SUMMARY_EVERY="1",
            LOG_LEVEL="INFO",
            **webhook,
        )
        proc = BotProcess(env, tmp_path / "bot.log")
        await proc.start()
        try:
            await proc.wait_healthy()
            if mode == "webhook":
                # From here on the fake posts each update to the bot, with the secret.
                (registered,) = await tg.wait_for_call("setWebhook", timeout=30)
                assert registered.params["secret_token"] == SECRET
            user = new_user()
            tg.user_message("I sleep badly", user_id=user)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not llm.requests_for("coach-model") and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert llm.requests_for("coach-model"), proc.tail()
            proc.terminate()  # the coach is still writing the reply
            code = await proc.stop(timeout=30)
        except BaseException:
            print(proc.tail())
            raise
        assert code == 0, proc.tail()
        if mode == "webhook":
            assert tg.webhook_deliveries[0][1] == 200  # it was taken through the webhook

        replies = tg.calls_of("sendMessage", chat_id=user, ok=True)
        assert any("wind-down" in str(c.text) for c in replies), proc.tail()
        assert llm.requests_for("summary-model"), "the background summary never started"

        storage = SQLiteStorage(str(database))
        await storage.connect()
        try:
            summary = await storage.summaries.get(user)
            messages = await storage.messages.recent(user, 10)
        finally:
            await storage.close()
        assert summary is not None
        assert "night shifts" in summary.summary
        assert [m.role for m in messages] == ["user", "assistant"]


def docker_unavailable(timeout: float = 20.0) -> str | None:
    """Why the image cannot be built here, or None when a Docker daemon answers.

    Asked when the test runs, not when the file is collected: a daemon that hangs costs this
    one test `timeout` seconds, never the collection of the other tests.
    """
    if shutil.which("docker") is None:
        return "no docker command here; the image is built where Docker runs"
    try:
        result = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"`docker info` did not answer within {timeout:g} s; the daemon hangs"
    if result.returncode != 0:
        return "no Docker daemon here (only the client); the image is built where one runs"
    return None


def test_a_hanging_docker_daemon_skips_the_image_test_quickly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    reason = docker_unavailable(timeout=0.3)
    assert reason is not None
    assert "did not answer" in reason


def _docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_the_image_builds_and_keeps_its_database_on_the_volume(tmp_path: Path) -> None:
    """As the Dockerfile says to run it: the example .env, a named volume, a non-root user."""
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    built = _docker("build", "-t", "coach-bot:test", str(REPO), timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]

    env_file = tmp_path / ".env"
    env_file.write_text((REPO / ".env.example").read_text())
    volume = f"coach-bot-test-{uuid.uuid4().hex[:12]}"
    try:
        migrated = _docker(
            "run", "--rm", "--env-file", str(env_file), "-v", f"{volume}:/app/data",
            "coach-bot:test", "python", "-m", "bot", "migrate",
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        # A new container on the same volume finds the database: it persisted.
        found = _docker(
            "run", "--rm", "-v", f"{volume}:/app/data", "coach-bot:test",
            "python", "-c", "import os; print(os.path.getsize('/app/data/bot.db'))",
        )  # fmt: skip
        assert found.returncode == 0, found.stderr
        assert int(found.stdout.strip()) > 0
    finally:
        _docker("volume", "rm", "-f", volume)
