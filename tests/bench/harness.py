"""What the end-to-end benchmark and the fault suite share: fakes that keep score, the bot process,
the load generator, and the figures.

Process layout (a decision, measured): the fake Bot API server, the fake model server, the
optional fake InsForge / OTLP receiver and the load generator run in ONE driver process, on one
event loop; the bot runs alone in its own process (`python -m bot`). On this 2-core machine that
caps the driver at one core and leaves the other to the bot, so the bot's figures are not
distorted by the generator competing for its core. The driver's own CPU use is printed with
every run: when it nears 100 % of one core, the figures are driver-bound and say so.

How a message is followed:

- each user message carries a tag `q<chat>x<seq>`; the model server puts the tag of the message it
  is answering in every reply (`bench_reply`), so the bot's final `sendMessage` names the message it
  answers, and each model request names the message it serves;
- a `sendMessage` without a tag is the bot telling the user something else (an apology): it is
  matched to the message it replies to (`reply_parameters`), else to the chat's oldest open one;
- every model request is timed by the model server (`TimedLLMServer.calls`), so the model time on
  a message's critical path is max(extraction, strategist) + coach, measured, not assumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench.cpu_cap import CpuCap
from tests.fakes.agent_replies import SCHEMA_REPLIES, schema_title
from tests.fakes.bot_process import BotProcess, clean_env
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest
from tests.fakes.ports import free_port
from tests.fakes.telegram_server import BotAPIError, Call, FakeTelegramServer, unique_token

TAG_RE = re.compile(r"\bq(\d+)x(\d+)\b")
MODEL = "gpt-4o-mini"
BACKUP_MODEL = "gpt-4o-backup"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tag_for(chat: int, seq: int) -> str:
    return f"q{chat}x{seq}"


def last_tag(text: str) -> str | None:
    """The newest tag in a prompt: the message being answered (history comes before it)."""
    found = TAG_RE.findall(text or "")
    return tag_for(int(found[-1][0]), int(found[-1][1])) if found else None


# --------------------------------------------------------------------------- the model server


def agent_of(request: RecordedRequest) -> str:
    title = schema_title(request)
    if title == "ExtractedFacts":
        return "extraction"
    if title == "ReplyPlan":
        return "strategist"
    if request.stream:
        return "coach"
    return "summarizer"


def bench_reply(request: RecordedRequest) -> str:
    """A valid answer for every agent of the support pipeline, naming the message it serves."""
    title = schema_title(request)
    if title in SCHEMA_REPLIES:
        return json.dumps(SCHEMA_REPLIES[title])
    tag = last_tag(request.last_user_text) or "untagged"
    if request.stream:
        return (
            f"Reply {tag}: keep a fixed wind-down routine, dim the lights an hour before bed, "
            "and put the phone in another room."
        )
    return f"The user asked {tag} about sleep."


@dataclass(slots=True)
class ModelCall:
    tag: str | None
    agent: str
    model: str
    start: float  # time.monotonic() in the driver
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class TimedLLMServer(FakeLLMServer):
    """The loopback model server, timing every request from arrival to the last byte sent."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ModelCall] = []

    async def _dispatch(self, request: RecordedRequest, writer: asyncio.StreamWriter) -> bool:
        start = time.monotonic()
        try:
            return await super()._dispatch(request, writer)
        finally:
            self.calls.append(
                ModelCall(
                    last_tag(request.last_user_text),
                    agent_of(request),
                    request.model,
                    start,
                    time.monotonic(),
                )
            )
            # Bodies are not needed afterwards; thousands of prompts would only cost memory.
            if len(self.requests) > 10_000:
                del self.requests[:5_000]

    def critical_model_time(self) -> dict[str, float]:
        """Per message tag: max(extraction, strategist) + coach, from the measured calls."""
        by_tag: dict[str, dict[str, float]] = defaultdict(dict)
        for call in self.calls:
            if call.tag is None or call.agent == "summarizer":
                continue
            agents = by_tag[call.tag]
            # Several calls of one agent (retries, fallback): the time they took together.
            agents[call.agent] = agents.get(call.agent, 0.0) + call.seconds
        return {
            tag: max(a.get("extraction", 0.0), a.get("strategist", 0.0)) + a.get("coach", 0.0)
            for tag, a in by_tag.items()
        }


# --------------------------------------------------------------------------- the Bot API server


@dataclass(slots=True)
class Message:
    """One user message and what became of it."""

    chat: int
    seq: int
    tag: str
    message_id: int
    pushed_at: float
    answered_at: float | None = None
    delivered_at: float | None = None  # the webhook delivery the bot took (webhook mode)
    apologies: list[tuple[float, str]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def resolved_at(self) -> float | None:
        times = [t for t, _ in self.apologies]
        if self.answered_at is not None:
            times.append(self.answered_at)
        return min(times) if times else None


class TrackingTelegramServer(FakeTelegramServer):
    """The fake Bot API, matching the bot's messages to the user messages they answer.

    Faults beyond the base fake: `flood_every(n, methods)` answers every n-th call of `methods`
    with 429 `retry_after=1` until `flood_every(0)`.
    """

    def __init__(self) -> None:
        # A bot id of its own: a run on Redis never meets an earlier run's keys.
        super().__init__(token=unique_token())
        self.messages: dict[str, Message] = {}
        self._open: defaultdict[int, deque[Message]] = defaultdict(deque)
        self._by_message_id: dict[tuple[int, int], Message] = {}
        self.unmatched: list[Call] = []
        self._flood_every = 0
        self._flood_methods: frozenset[str] = frozenset()
        self._flood_count = itertools.count()
        self.floods_sent = 0
        # Every Bot API call the bot made, by method: what a message costs on Telegram's side.
        self.method_counts: Counter[str] = Counter()
        # Webhook deliveries in flight at once (Telegram's `max_connections`, 40 by default):
        # 1 delivers strictly one after the other.
        self.webhook_connections = 1
        self._webhook_workers: list[asyncio.Task[None]] = []
        # Over several connections Telegram still sends a chat's next update only once the
        # previous one was taken: one FIFO lock per chat, taken in queue order.
        self._webhook_chat_locks: defaultdict[Any, asyncio.Lock] = defaultdict(asyncio.Lock)

    def send_user_message(self, chat: int, seq: int, text: str | None = None) -> Message:
        tag = tag_for(chat, seq)
        if tag in self.messages:
            # Replies are matched to messages by tag: a second message with it would hide the
            # first one's outcome (and count it as lost).
            raise ValueError(f"message {tag} was already sent")
        update = self.user_message(
            text or f"I sleep badly after night shifts, what should I do? ({tag})", user_id=chat
        )
        message = Message(chat, seq, tag, update["message"]["message_id"], time.monotonic())
        self.messages[tag] = message
        self._open[chat].append(message)
        self._by_message_id[(chat, message.message_id)] = message
        return message

    def flood_every(self, n: int, methods: Iterable[str] = ("sendMessage",)) -> None:
        self._flood_every = n
        self._flood_methods = frozenset(methods)

    def _raise_fault(self, method: str, params: dict[str, Any]) -> None:
        if (
            self._flood_every
            and method in self._flood_methods
            and next(self._flood_count) % self._flood_every == 0
        ):
            self.floods_sent += 1
            raise BotAPIError(429, "Too Many Requests: retry after 1", {"retry_after": 1})
        super()._raise_fault(method, params)

    def _ensure_webhook_worker(self) -> None:
        super()._ensure_webhook_worker()
        while len(self._webhook_workers) < self.webhook_connections - 1:
            self._webhook_workers.append(asyncio.create_task(self._webhook_worker()))

    async def close(self) -> None:
        for task in self._webhook_workers:
            task.cancel()
        self._webhook_workers.clear()
        await super().close()

    async def _webhook_worker(self) -> None:
        # Like Telegram, keep re-delivering an update until the bot takes it (the base fake gives
        # up after five tries, which would count a bot restart as lost messages).
        assert self._webhook_queue is not None
        while True:
            update = await self._webhook_queue.get()
            message = update.get("message") or {}
            chat = (message.get("chat") or {}).get("id", ("update", update["update_id"]))
            # Taken before any await: the worker that took the chat's earlier update from the
            # queue holds its lock or waits ahead of this one.
            async with self._webhook_chat_locks[chat]:
                while True:
                    try:
                        status = await self.post_to_webhook(update)
                    except (OSError, aiohttp.ClientError):
                        status = 0
                    if status == 200:
                        self._delivered(message, chat)
                        break
                    self.webhook_deliveries.append((update["update_id"], status))
                    await asyncio.sleep(0.2)

    def _delivered(self, message: dict[str, Any], chat: Any) -> None:
        sent = self._by_message_id.get((chat, message.get("message_id")))
        if sent is not None and sent.delivered_at is None:
            sent.delivered_at = time.monotonic()

    def _record(self, call: Call) -> None:
        super()._record(call)
        self.method_counts[call.method] += 1
        if call.method == "sendMessage" and call.ok:
            self._on_sent(call)
        # The benchmark needs outcomes, not a transcript: keep the call log from growing.
        if len(self.calls) > 20_000:
            del self.calls[:10_000]

    def _on_sent(self, call: Call) -> None:
        chat = call.chat_id
        text = call.text or ""
        match = TAG_RE.search(text)
        if match and text.startswith("Reply "):
            message = self.messages.get(match.group(0))
            if message is None:
                self.unmatched.append(call)
                return
            if message.answered_at is None:
                message.answered_at = call.at
            self._close(message)
            return
        message = None
        reply = call.params.get("reply_parameters")
        if isinstance(reply, dict) and isinstance(chat, int):
            message = self._by_message_id.get((chat, reply.get("message_id")))  # type: ignore[arg-type]
        if message is None and isinstance(chat, int) and self._open[chat]:
            message = self._open[chat][0]
        if message is None:
            self.unmatched.append(call)
            return
        message.apologies.append((call.at, text))
        self._close(message)

    def _close(self, message: Message) -> None:
        queue = self._open[message.chat]
        with contextlib.suppress(ValueError):
            queue.remove(message)
        message.done.set()

    def open_messages(self) -> list[Message]:
        return [m for q in self._open.values() for m in q]


# --------------------------------------------------------------------------- the bot process


def read_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def read_status_kb(pid: int, key: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class BotConfig:
    webhook: bool = False
    tracing: bool = False
    llm_timeout: float = 30.0
    fallback: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    # Bot processes behind one webhook address (`tests.fakes.webhook_front`), and how the front
    # picks one: `chat` (by the chat's hash) or `round-robin`. Webhook mode only.
    replicas: int = 1
    front: bool = False
    route: str = "chat"
    # Each bot process held to this many cores (`tests.bench.cpu_cap`); None: uncapped.
    cpu_cap: float | None = None


class RunningBot:
    """`python -m bot` with a bench environment; CPU, memory and `/metrics` readings."""

    def __init__(
        self, env: dict[str, str], log_path: Path, port: int, *, cpu_cap: float | None = None
    ) -> None:
        self.env = env
        self.port = port
        self.process = BotProcess(env, log_path, port=port)
        self.restarts = 0
        self.cpu_cap = cpu_cap
        self.cap: CpuCap | None = None

    @property
    def pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    async def start(self) -> None:
        if self.cap is not None:
            self.cap.remove()  # a restart: the old process has exited
        await self.process.start()
        if self.cpu_cap is not None:
            # Placed before the bot starts its own children (the export process): they share it.
            self.cap = CpuCap.place(self.pid, self.cpu_cap)
            if self.cap is None:
                raise RuntimeError("--replica-cpu needs a writable cpu cgroup (Linux, as root)")
        await self.process.wait_healthy(timeout=120)

    async def stop(self, timeout: float = 60.0) -> int:
        code = await self.process.stop(timeout)
        if self.cap is not None:
            self.cap.remove()
        return code

    async def restart(self) -> int:
        """SIGTERM, wait for a clean exit, start again; the old exit code."""
        code = await self.stop()
        self.restarts += 1
        self.process = BotProcess(self.env, self.process.log_path, port=self.port)
        await self.start()
        return code

    async def kill_and_start(self) -> int:
        """SIGKILL (no shutdown at all), start again; the old exit code (-9)."""
        code = await self.process.kill()
        self.restarts += 1
        self.process = BotProcess(self.env, self.process.log_path, port=self.port)
        await self.start()
        return code

    def cpu_seconds(self) -> float:
        return read_cpu_seconds(self.pid)

    def children_cpu_seconds(self) -> float:
        """CPU of the bot's live child processes (e.g. a span exporter), not in `cpu_seconds`."""
        total = 0.0
        for children in Path(f"/proc/{self.pid}/task").glob("*/children"):
            for child in children.read_text().split():
                with contextlib.suppress(OSError, ValueError):
                    total += read_cpu_seconds(int(child))
        return total

    def peak_rss_mb(self) -> float:
        return read_status_kb(self.pid, "VmHWM") / 1024

    async def metrics(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.process.url}/metrics") as response,
        ):
            if response.status != 200:
                return {}
            return dict(await response.json())

    def tail(self) -> str:
        return self.process.tail()


# --------------------------------------------------------------------------- storage


@dataclass
class Storage:
    """Where the bot stores messages, and how to read them back afterwards."""

    env: dict[str, str]
    sqlite_path: Path | None = None
    pg_dsn: str | None = None
    insforge: Any = None  # FakeInsForge, when used

    async def stored(self) -> set[tuple[str, str]]:
        """(role, tag) of every stored message that carries a tag."""
        rows: list[tuple[str, str]] = []
        if self.sqlite_path is not None:
            rows = await asyncio.to_thread(_sqlite_rows, self.sqlite_path)
        elif self.pg_dsn is not None:
            import asyncpg

            conn = await asyncpg.connect(self.pg_dsn)
            try:
                records = await conn.fetch("SELECT role, text FROM messages")
                rows = [(r["role"], r["text"]) for r in records]
            finally:
                await conn.close()
        found: set[tuple[str, str]] = set()
        for role, text in rows:
            tag = last_tag(text)
            if tag is not None:
                found.add((role, tag))
        return found


def _sqlite_rows(path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(path)
    try:
        return [(str(r), str(t)) for r, t in conn.execute("SELECT role, text FROM messages")]
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def open_storage(kind: str, workdir: Path) -> AsyncIterator[Storage]:
    """`sqlite`: a fresh file; `insforge`: the fake InsForge over a fresh PostgreSQL database."""
    if kind == "sqlite":
        path = workdir / "bot.db"
        yield Storage({"DATABASE_URL": f"sqlite:///{path}"}, sqlite_path=path)
        return
    from bot.storage.insforge_client import InsForgeClient
    from bot.storage.migrate import apply_insforge_migrations
    from tests.fakes.insforge_server import FakeInsForge, create_database, drop_database, dsn_for

    admin = os.environ.get("BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    database = await create_database(admin)
    dsn = dsn_for(admin, database)
    insforge = FakeInsForge(dsn)
    try:
        await insforge.start()
        client = InsForgeClient(insforge.url, insforge.api_key)
        try:
            await apply_insforge_migrations(client)
        finally:
            await client.aclose()
        env = {
            "INSFORGE_URL": insforge.url,
            "INSFORGE_API_KEY": insforge.api_key,
            "INTAKE_PATH": str(workdir / "intake.db"),
        }
        yield Storage(env, pg_dsn=dsn, insforge=insforge)
    finally:
        await insforge.stop()
        await drop_database(admin, database)


# --------------------------------------------------------------------------- the set-up


@dataclass
class Rig:
    """Everything a run needs: fakes, storage, the bot."""

    tg: TrackingTelegramServer
    llm: TimedLLMServer
    storage: Storage
    bot: RunningBot
    otlp: Any = None
    # Every replica (`bot` is the first), and the webhook front before them when there is one.
    bots: list[RunningBot] = field(default_factory=list)
    front: Any = None


def bot_env(
    tg: FakeTelegramServer,
    llm: FakeLLMServer,
    storage: Storage,
    config: BotConfig,
    port: int,
    otlp: Any = None,
) -> dict[str, str]:
    values = {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_BASE": tg.url,
        "DEFAULT_MODEL": f"openai:{MODEL}",
        "OPENAI_BASE_URL": llm.openai_base_url,
        "OPENAI_API_KEY": "sk-bench-openai-key-000000",
        "LOG_LEVEL": "WARNING",
        "WEBHOOK_HOST": "127.0.0.1",
        "WEBHOOK_PORT": str(port),
        "LLM_TIMEOUT": f"{config.llm_timeout:g}",
        "SHUTDOWN_TIMEOUT": "30",
        **storage.env,
    }
    if config.fallback:
        values["FALLBACK_MODELS"] = f"openai:{BACKUP_MODEL}"
    if config.webhook:
        values["WEBHOOK_URL"] = f"http://127.0.0.1:{port}/webhook"
        values["WEBHOOK_SECRET"] = "bench-webhook-secret"
    if config.tracing and otlp is not None:
        values["LANGFUSE_PUBLIC_KEY"] = "pk-lf-bench"
        values["LANGFUSE_SECRET_KEY"] = "sk-lf-bench-secret"
        values["LANGFUSE_BASE_URL"] = otlp.base_url
        # The export process's way to make spans (decision 0026): direct, or sdk to compare.
        values["LANGFUSE_EXPORT"] = os.environ.get("LANGFUSE_EXPORT", "direct")
    values.update(config.extra)
    return clean_env(**values)


@contextlib.asynccontextmanager
async def rig(
    workdir: Path,
    *,
    storage_kind: str = "sqlite",
    config: BotConfig | None = None,
    latency: float = 0.1,
    token_delay: float = 0.005,
) -> AsyncIterator[Rig]:
    """Start the fakes, the storage and the bot; stop everything (bot first) on exit."""
    config = config or BotConfig()
    otlp = None
    if config.tracing:
        from tests.fakes.otlp_receiver import OtlpReceiver

        otlp = OtlpReceiver()
    try:
        async with (
            TrackingTelegramServer() as tg,
            TimedLLMServer() as llm,
            open_storage(storage_kind, workdir) as storage,
        ):
            assert isinstance(tg, TrackingTelegramServer)
            assert isinstance(llm, TimedLLMServer)
            llm.default.text = bench_reply
            llm.default.latency = latency
            llm.default.token_delay = token_delay
            async with _replicas(workdir, tg, llm, storage, config, otlp) as (bots, front):
                yield Rig(tg, llm, storage, bots[0], otlp, bots=bots, front=front)
    finally:
        if otlp is not None:
            otlp.close()


@contextlib.asynccontextmanager
async def _replicas(
    workdir: Path,
    tg: TrackingTelegramServer,
    llm: TimedLLMServer,
    storage: Storage,
    config: BotConfig,
    otlp: Any,
) -> AsyncIterator[tuple[list[RunningBot], Any]]:
    """`config.replicas` bot processes; with more than one (or `config.front`), behind one
    webhook front that every replica registers as its address."""
    ports = [free_port() for _ in range(config.replicas)]
    front = None
    if config.webhook and (config.front or config.replicas > 1):
        from tests.fakes.webhook_front import WebhookFront

        front = WebhookFront(ports, route=config.route)
        await front.__aenter__()
    bots: list[RunningBot] = []
    try:
        for index, port in enumerate(ports):
            env = bot_env(tg, llm, storage, config, port, otlp)
            if front is not None:
                env["WEBHOOK_URL"] = front.url
                # Each replica's own local files (the intake's fallback file on Redis).
                env["INTAKE_PATH"] = str(workdir / f"intake-{index}.db")
            log = workdir / ("bot.log" if index == 0 else f"bot-{index}.log")
            bots.append(RunningBot(env, log, port, cpu_cap=config.cpu_cap))
        await asyncio.gather(*(bot.start() for bot in bots))
        yield bots, front
    finally:
        for bot in bots:
            if bot.process.process is None:
                continue
            code = await bot.stop()
            if code != 0:
                print(f"!! the bot exited with {code}; its log:\n{bot.tail()}")
        if front is not None:
            await front.__aexit__(None, None, None)


# --------------------------------------------------------------------------- load


class Load:
    """Sends messages and waits for their outcomes.

    Closed loop (`rate=0`): every chat sends its next message as soon as the previous one is
    answered (or apologised for) - the bot's maximum throughput with `chats` users in flight.
    Open loop (`rate>0`): messages leave at `rate` per second whatever the bot does (chats take
    turns, so one chat's messages are `chats/rate` seconds apart) - latency at a given load.
    """

    def __init__(self, tg: TrackingTelegramServer, *, first_chat: int = 100_000) -> None:
        self.tg = tg
        self.first_chat = first_chat
        self.sent: list[Message] = []

    def send(self, chat: int, seq: int) -> Message:
        message = self.tg.send_user_message(chat, seq)
        self.sent.append(message)
        return message

    async def closed_loop(
        self, chats: int, messages: int, *, timeout: float = 120.0, ramp: float = 1.0
    ) -> None:
        async def one_chat(index: int) -> None:
            await asyncio.sleep(ramp * index / max(1, chats))
            chat = self.first_chat + index
            for seq in range(messages):
                message = self.send(chat, seq)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(message.done.wait(), timeout)

        await asyncio.gather(*(one_chat(i) for i in range(chats)))

    async def open_loop(
        self,
        chats: int,
        messages: int,
        rate: float,
        *,
        stop: Callable[[], bool] | None = None,
        seq_start: int = 0,
    ) -> None:
        """`messages` rounds over `chats`, `rate` messages per second (until `stop()`)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        n = 0
        for seq in range(seq_start, seq_start + messages):
            for index in range(chats):
                if stop is not None and stop():
                    return
                due = started + n / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.send(self.first_chat + index, seq)
                n += 1

    async def settle(self, timeout: float) -> None:
        """Wait until every sent message has an outcome, or `timeout`."""
        pending = [m.done.wait() for m in self.sent if not m.done.is_set()]
        if pending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending), timeout)


# --------------------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[rank]


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def print_grid(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def calibration_ms() -> float:
    """This machine's speed right now: CPU ms for a fixed pure-Python workload (best of 5).

    The VM this project is measured on drifts by 20-30 % within an hour and by more between days;
    printing this beside CPU-per-message figures says how fast the machine was when they were
    taken (lower is faster). The work is interpreter-bound like the bot's: dicts, strings, JSON.
    """

    def work() -> None:
        for i in range(2000):
            doc = {"id": i, "text": f"message {i} " * 8, "tags": [str(j) for j in range(10)]}
            json.loads(json.dumps(doc))
            "".join(sorted(doc["text"].split()))

    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        work()
        best = min(best, time.process_time() - started)
    return best * 1000


_ECHO = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = s.recv(4096)
    if not data:
        break
    s.sendall(data)
"""


def loopback_us(round_trips: int = 2000) -> tuple[float, float]:
    """What a loopback round trip to another process costs right now: (wall us, this process's
    CPU us) per 64-byte ping-pong over TCP on 127.0.0.1, best of 3.

    `calibration_ms` is interpreter-bound and does not see syscall cost. On 2026-12-04 two
    machines of the same kind gave the same calibration (~13 ms) while the bot took 9.4 and 15
    ms a message: its CPU goes largely into socket writes, each of which runs the peer's receive
    path and its wake-up. This figure tells such a machine from slower code."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        server.settimeout(30)  # a child that never connects fails the figure, not the run's wait
        child = subprocess.Popen([sys.executable, "-c", _ECHO, str(port)])
        try:
            conn, _ = server.accept()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                payload = b"x" * 64
                best_wall = best_cpu = float("inf")
                for _ in range(3):
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(round_trips):
                        conn.sendall(payload)
                        got = 0
                        while got < len(payload):
                            got += len(conn.recv(4096))
                    best_wall = min(best_wall, time.perf_counter() - wall)
                    best_cpu = min(best_cpu, time.process_time() - cpu)
        finally:
            child.kill()
            child.wait()
    return best_wall / round_trips * 1e6, best_cpu / round_trips * 1e6


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"
