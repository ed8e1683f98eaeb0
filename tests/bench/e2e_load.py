"""End-to-end load benchmark: the real bot process under many chats, measured from outside.

    python -m tests.bench.e2e_load                       # 500 chats x 4 messages at 100 msg/s
    python -m tests.bench.e2e_load --rate 0              # closed loop: maximum throughput
    python -m tests.bench.e2e_load --webhook --insforge --tracing on
    python -m tests.bench.e2e_load --ledger off          # without the call ledger (A/B: on)
    python -m tests.bench.e2e_load --production --rate 30 --burst 100:20
    python -m tests.bench.e2e_load --rate 0 --webhook --replicas 2
    python -m tests.bench.e2e_load --rate 0 --webhook --replicas 2 --replica-cpu 0.3
    python -m tests.bench.e2e_load --store-prompts off   # keeping no replay inputs (A/B: on)

`--production` is what operators run (tests/bench/production.py): webhook, InsForge (the fake over
the real PostgreSQL), Redis, tracing on, the call ledger, a user budget with a limit, the
allowlist, and archives for one chat in ten. `--replicas <n>` runs n bot processes behind one
webhook address (a round-robin front on loopback, `--route chat` for a per-chat-hash one; on
InsForge and Redis, as the compose file runs them). `--burst <rate>:<seconds>` adds that many
messages a second from other chats, 5 s into the steady load. `--replica-cpu <cores>` holds
each bot process to that many cores (a cgroup, tests/bench/cpu_cap.py): on a small machine the
replicas otherwise share its cores with the fakes and the driver, and the machine, not a
replica, bounds both one replica and two.

`python -m bot` runs as a child process against the fake Bot API server and a fake
OpenAI-compatible model server on 127.0.0.1 (replies after `--latency`, default 100 ms, then
stream ~20 tokens `--token-delay` apart). Each user message runs the `support` pipeline:
Parallel(extraction, strategist) -> coach (streamed) -> Background(summarizer).

Figures (nothing asserts: it prints):
- messages per second: answered messages / (last answer - first message);
- end-to-end latency: the user's message queued at the fake Bot API -> the bot's final
  `sendMessage` of the answer arriving there (same clock, one process);
- the bot's added latency: end to end minus the model time on the critical path, measured per
  message by the model server: max(extraction, strategist) + coach (streaming included);
- bot CPU ms per message: utime+stime of the bot process (/proc/<pid>/stat) over the run, per
  answered message (background summaries included: they are part of each message's cost);
- peak memory: VmHWM of the bot process; override table reads per minute: `GET /metrics`;
- the driver's CPU: when it nears 100 % of one core the figures are bounded by the driver;
- InsForge requests per turn (InsForge only): the fake's request log over the run, per answered
  message and by kind, and the requests of one plain turn of a warm chat sent alone afterwards;
- with `--burst`, the added latency by when the message was sent (2 s windows): a tail that grows
  through the burst and drains after it is the CPUs behind; spikes here and there are stalls;
- beside the calibration, a loopback round trip to another process (`harness.loopback_us`): the
  bot's CPU goes largely into socket writes, which the pure-Python calibration does not see.

Load model: open loop at `--rate` messages/s by default (latency at a known load; chats take turns
so a chat's messages are chats/rate seconds apart); `--rate 0` is a closed loop where each chat
sends its next message as soon as the previous is answered (the bot's maximum throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.harness import (
    BotConfig,
    Load,
    calibration_ms,
    load_average,
    loopback_us,
    percentile,
    print_table,
    rig,
    self_cpu_seconds,
)
from tests.bench.production import (
    ARCHIVE_EVERY,
    InsForgeCount,
    empty_redis,
    format_kinds,
    plain_turn,
    production_env,
    replica_env,
    seed_archives,
)

LOAD_CHAT, WARM_CHAT, BURST_CHAT = 100_000, 900_000, 500_000
BURST_AFTER = 5.0  # seconds into the steady load
WEBHOOK_CONNECTIONS = 40  # Telegram's default `max_connections`


@dataclass
class Options:
    chats: int = 500
    messages: int = 4
    rate: float = 100.0
    latency: float = 0.1
    token_delay: float = 0.005
    webhook: bool = False
    storage: str = "sqlite"
    tracing: bool = False
    # The call ledger (LEDGER_ENABLED); its cost per message is on minus off, same hour.
    ledger: bool = True
    # STORE_PROMPTS: each agent's newest inputs kept for /replay (tests/bench/replay_inputs.py).
    store_prompts: bool = True
    warmup: int = 20
    py_spy: str | None = None
    keep_log: bool = False  # copy the bot's log out even when every message was answered
    quiet: bool = False
    production: bool = False
    replicas: int = 1
    # `--replicas` given (even 1): the replicas' set-up (front, InsForge, Redis), so one replica
    # and two are measured the same way.
    fronted: bool = False
    route: str = "round-robin"
    burst: tuple[float, float] | None = None  # (messages/s, seconds)
    replica_cpu: float | None = None  # cores each bot process may use (tests/bench/cpu_cap.py)

    def normalized(self) -> Options:
        """`--production` and `--replicas` bring what they need (webhook, InsForge, tracing)."""
        if self.production:
            self.webhook, self.storage, self.tracing, self.ledger = True, "insforge", True, True
        if self.replicas > 1:
            self.fronted = True
        if self.fronted:
            self.webhook, self.storage = True, "insforge"
        return self

    def burst_chats(self) -> int:
        if self.burst is None:
            return 0
        rate, seconds = self.burst
        return max(1, round(rate * seconds / self.messages))

    def users(self) -> list[int]:
        """Every user the run's messages come from (the allowlist of `--production`)."""
        return [
            *range(LOAD_CHAT, LOAD_CHAT + self.chats),
            *range(WARM_CHAT, WARM_CHAT + self.warmup),
            *range(BURST_CHAT, BURST_CHAT + self.burst_chats()),
        ]


def _extra_env(options: Options) -> dict[str, str]:
    extra = {
        "LEDGER_ENABLED": "true" if options.ledger else "false",
        "STORE_PROMPTS": "true" if options.store_prompts else "false",
    }
    if options.production:
        extra.update(production_env(options.users()))
    elif options.fronted:
        extra.update(replica_env())
    return extra


async def _burst(load: Load, options: Options) -> None:
    assert options.burst is not None
    rate, _ = options.burst
    await asyncio.sleep(BURST_AFTER)
    await load.open_loop(options.burst_chats(), options.messages, rate)


async def run(options: Options) -> dict[str, Any]:
    """One benchmark run; returns the figures (and prints them unless `quiet`)."""
    options.normalized()
    config = BotConfig(
        webhook=options.webhook,
        tracing=options.tracing,
        extra=_extra_env(options),
        replicas=options.replicas,
        front=options.fronted,
        route=options.route,
        cpu_cap=options.replica_cpu,
    )
    calibration = calibration_ms()
    loopback = loopback_us()
    if options.production or options.fronted:
        await empty_redis()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        workdir = Path(tmp)
        async with rig(
            workdir,
            storage_kind=options.storage,
            config=config,
            latency=options.latency,
            token_delay=options.token_delay,
        ) as r:
            # Warm-up: connections opened, caches filled, first-call costs paid; not measured.
            if options.fronted or options.production:
                # Telegram's webhook delivers over up to 40 connections (`max_connections`).
                r.tg.webhook_connections = WEBHOOK_CONNECTIONS
            if options.warmup:
                warm = Load(r.tg, first_chat=WARM_CHAT)
                await warm.closed_loop(min(options.warmup, options.chats), 1, ramp=0.2)
                await warm.settle(30)
            archives = 0
            if options.production:
                keepers = list(range(LOAD_CHAT, LOAD_CHAT + options.chats, ARCHIVE_EVERY))
                archives = await seed_archives(r.tg, keepers)
                # "Added" is shown before the ingest's last writes: wait for every update.
                await _wait_background(r.bots, timeout=120, updates=True)
            load = Load(r.tg, first_chat=LOAD_CHAT)
            burst = Load(r.tg, first_chat=BURST_CHAT)
            metrics_before = await _metrics(r.bots)
            cpu_before = _cpu(r.bots)
            children_before = sum(bot.children_cpu_seconds() for bot in r.bots)
            calls_before = r.tg.method_counts.copy()
            driver_before = self_cpu_seconds()
            insforge = r.storage.insforge
            requests = InsForgeCount.from_now(insforge) if insforge is not None else None
            profiler = _start_py_spy(r.bot.pid, options.py_spy)
            started = time.monotonic()
            if options.rate > 0:
                steady = load.open_loop(options.chats, options.messages, options.rate)
                if options.burst is not None:
                    await asyncio.gather(steady, _burst(burst, options))
                else:
                    await steady
            else:
                await load.closed_loop(options.chats, options.messages)
            await load.settle(timeout=120)
            await burst.settle(timeout=120)
            # Let the background steps of the last messages finish: they cost CPU too (and may
            # have waited for the replies of a burst: decision 0028, up to 30 s).
            await _wait_background(r.bots, timeout=60)
            wall = time.monotonic() - started
            cpu = _cpu(r.bots) - cpu_before
            children_cpu = sum(bot.children_cpu_seconds() for bot in r.bots) - children_before
            driver_cpu = self_cpu_seconds() - driver_before
            _stop_py_spy(profiler)
            calls = r.tg.method_counts - calls_before
            metrics_after = await _metrics(r.bots)
            peak_mb = max(bot.peak_rss_mb() for bot in r.bots)
            answered_now = sum(1 for m in [*load.sent, *burst.sent] if m.answered_at is not None)
            per_turn = requests.summary(answered_now) if requests is not None else None
            plain: list[list[str]] | None = None
            if insforge is not None:
                # Three more turns of a chat whose messages are all answered (not one of the
                # archive keepers), one at a time: the summary is rewritten in one of three.
                plain = [
                    await plain_turn(
                        r.tg, insforge, LOAD_CHAT + 1, options.messages + n, lambda: _idle(r.bots)
                    )
                    for n in range(3)
                ]
            # After the turns sent alone, which make spans too.
            spans_made = int((await _metrics(r.bots)).get("spans_made", 0))
            model_time = r.llm.critical_model_time()
            forwarded = list(r.front.forwarded) if r.front is not None else None
            # Read back what the bot stored once it has stopped (everything it wrote is in),
            # while the database still exists (the rig drops a PostgreSQL one on exit).
            for bot in r.bots:
                await bot.stop()
            stored = await r.storage.stored()
            # Counted after the stop: the bot's shutdown flushes the last spans.
            received = r.otlp.spans() if r.otlp is not None else []
            spans_received = len(received)
            span_ms = _span_durations(received)
        kept_log = _keep_log_if_failed(
            workdir / "bot.log", [*load.sent, *burst.sent], always=options.keep_log
        )

    sent = [*load.sent, *burst.sent]
    answered = [m for m in sent if m.answered_at is not None]
    apologised = [m for m in sent if m.apologies]
    e2e = [m.answered_at - m.pushed_at for m in answered if m.answered_at is not None]
    added = _added(answered, model_time)
    span = (
        max(m.answered_at for m in answered if m.answered_at is not None)
        - min(m.pushed_at for m in sent)
        if answered
        else 0.0
    )
    reads = metrics_after.get("model_config_reads", 0) - metrics_before.get("model_config_reads", 0)
    missing_in_db = sum(
        1 for m in answered if ("user", m.tag) not in stored or ("assistant", m.tag) not in stored
    )
    result: dict[str, Any] = {
        "sent": len(sent),
        "answered": len(answered),
        "apologised": len(apologised),
        "answered_share": len(answered) / len(sent) if sent else 0.0,
        "messages_per_second": len(answered) / span if span > 0 else 0.0,
        "e2e_ms": [percentile(e2e, p) * 1000 for p in (50, 95, 99)],
        "added_ms": [percentile(added, p) * 1000 for p in (50, 95, 99)],
        "model_ms_mean": statistics.fmean(model_time[m.tag] for m in answered) * 1000
        if answered and all(m.tag in model_time for m in answered)
        else float("nan"),
        "cpu_ms_per_message": cpu * 1000 / len(answered) if answered else float("nan"),
        "bot_cpu_share": cpu / wall if wall else 0.0,
        "children_cpu_ms_per_message": children_cpu * 1000 / len(answered)
        if answered
        else float("nan"),
        # Warm-up included on both sides: every span the bot made, against what arrived.
        "spans_made": spans_made,
        "spans_received": spans_received,
        "driver_cpu_share": driver_cpu / wall if wall else 0.0,
        "peak_rss_mb": peak_mb,
        "override_reads": reads,
        # Background steps that waited for replies, were replaced by a later turn's, or started
        # after the longest wait (`bot.pipeline.background_lane`), summed over the replicas.
        "background_lane": [
            int(metrics_after.get(f"background_{k}", 0))
            for k in ("deferred", "superseded", "overdue")
        ],
        "override_reads_per_minute": reads * 60 / wall if wall else 0.0,
        "missing_in_db": missing_in_db,
        "wall_s": wall,
        "apology_texts": sorted({text for m in apologised for _, text in m.apologies})[:5],
        "kept_log": kept_log,
        "bot_api_calls_per_message": {
            method: count / len(sent) for method, count in sorted(calls.items())
        }
        if sent
        else {},
        "load": load_average(),
        "calibration_ms": calibration,
        "loopback_us": loopback,
        "insforge_per_turn": per_turn,
        "insforge_plain_turn": plain,
        "archives_seeded": archives,
        "forwarded": forwarded,
        # Pushed at the fake Bot API -> taken by the bot's webhook: time queued on Telegram's
        # side (its connections busy with the bot's slow answers), inside the added latency.
        "delivery_wait_ms": [
            percentile(
                [m.delivered_at - m.pushed_at for m in sent if m.delivered_at is not None], p
            )
            * 1000
            for p in (50, 99)
        ]
        if any(m.delivered_at is not None for m in sent)
        else None,
        "span_ms": span_ms if options.tracing else None,
        "timeline": _timeline(answered, model_time, started) if options.burst else None,
        "burst_sent": len(burst.sent),
        "burst_answered": sum(1 for m in burst.sent if m.answered_at is not None),
        "burst_added_ms": [percentile(_added(burst.sent, model_time), p) * 1000 for p in (50, 99)],
    }
    if not options.quiet:
        _print(options, result)
    return result


def _added(messages: list[Any], model_time: dict[str, float]) -> list[float]:
    """Each answered message's added latency (seconds): end to end minus its model time."""
    return [
        (m.answered_at - m.pushed_at) - model_time[m.tag]
        for m in messages
        if m.answered_at is not None and m.tag in model_time
    ]


def _timeline(
    answered: list[Any], model_time: dict[str, float], started: float, *, step: float = 2.0
) -> list[tuple[float, int, float, float]]:
    """The added latency by when the message was sent (`step`-second windows from the start):
    (window start s, messages, p50 ms, p99 ms). It tells a tail that grows over a burst (the
    CPUs behind) from stalls spread over the run (a pause that hits whoever is in flight)."""
    windows: dict[int, list[float]] = {}
    for m in answered:
        for added in _added([m], model_time):
            windows.setdefault(int((m.pushed_at - started) // step), []).append(added)
    return [
        (n * step, len(v), percentile(v, 50) * 1000, percentile(v, 99) * 1000)
        for n, v in sorted(windows.items())
    ]


def _span_durations(spans: list[Any]) -> dict[str, tuple[float, float]]:
    """p50 and p99 (ms) of the traced durations by kind: a pipeline run (the root), an agent
    step, a model call. Against the added latency they say where a turn's time went."""
    kinds: dict[str, list[float]] = {"run": [], "agent": [], "generation": []}
    for span in spans:
        kind = "run" if span.parent_id is None else span.observation_type
        if kind not in kinds:
            continue
        seconds = (span.end_ns - span.start_ns) / 1e9
        kinds[kind].append(seconds)
        if kind == "agent":
            kinds.setdefault(f"agent:{span.name}", []).append(seconds)
    return {
        kind: (percentile(values, 50) * 1000, percentile(values, 99) * 1000)
        for kind, values in kinds.items()
        if values
    }


def _keep_log_if_failed(log: Path, sent: list[Any], *, always: bool = False) -> str | None:
    """Copy the bot's log out of the temporary folder when a message was not answered (or
    `always`)."""
    if not log.exists():
        return None
    if not always and all(m.answered_at is not None and not m.apologies for m in sent):
        return None
    fd, kept = tempfile.mkstemp(prefix="bench-e2e-bot-", suffix=".log")
    with open(fd, "wb") as out:
        out.write(log.read_bytes())
    return kept


async def _wait_background(bots: list[Any], timeout: float, *, updates: bool = False) -> None:
    """Until no background step runs (and, with `updates`, no update is being handled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        metrics = await _metrics(bots)
        busy = metrics.get("background_steps", 0)
        if updates:
            busy += metrics.get("updates_in_flight", 0)
        if busy == 0:
            return
        await asyncio.sleep(0.05)


async def _idle(bots: list[Any]) -> None:
    """Background steps done and the ledger writer's interval (0.5 s) past."""
    await _wait_background(bots, timeout=30)
    await asyncio.sleep(0.8)


async def _metrics(bots: list[Any]) -> dict[str, Any]:
    """Every replica's `/metrics`, numbers summed."""
    total: dict[str, Any] = {}
    for bot in bots:
        for key, value in (await bot.metrics()).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


def _cpu(bots: list[Any]) -> float:
    return sum(bot.cpu_seconds() for bot in bots)


def _start_py_spy(pid: int, path: str | None) -> subprocess.Popen[bytes] | None:
    if not path:
        return None
    fmt = "raw" if path.endswith((".txt", ".raw")) else "flamegraph"
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "-p",
            str(pid),
            "-o",
            path,
            "-f",
            fmt,
            "-r",
            "200",
            "--nonblocking",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop_py_spy(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.send_signal(2)  # SIGINT: py-spy writes its output and exits
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


def _print(options: Options, r: dict[str, Any]) -> None:
    mode = "webhook" if options.webhook else "polling"
    if options.fronted:
        mode += f", {options.replicas} replica(s) ({options.route} front)"
        if options.replica_cpu is not None:
            mode += f", each held to {options.replica_cpu:g} cores"
    if options.production:
        mode = "production: " + mode + ", Redis, ledger, budget, allowlist, archives"
    loop_kind = f"open loop {options.rate:g} msg/s" if options.rate > 0 else "closed loop"
    e50, e95, e99 = r["e2e_ms"]
    a50, a95, a99 = r["added_ms"]
    print_table(
        f"e2e load: {options.chats} chats x {options.messages} messages, {loop_kind}, {mode}, "
        f"{options.storage}, tracing {'on' if options.tracing else 'off'}, ledger "
        f"{'on' if options.ledger else 'off'}, store prompts "
        f"{'on' if options.store_prompts else 'off'}, model latency "
        f"{options.latency * 1000:.0f} ms + stream ({options.token_delay * 1000:g} ms/token)",
        [
            ("messages sent", f"{r['sent']}"),
            ("answered", f"{r['answered']} ({r['answered_share']:.1%})"),
            ("apologies", f"{r['apologised']}"),
            ("messages per second", f"{r['messages_per_second']:.1f}"),
            ("end-to-end latency ms", f"p50 {e50:.1f}  p95 {e95:.1f}  p99 {e99:.1f}"),
            ("model time on critical path", f"mean {r['model_ms_mean']:.1f} ms"),
            ("bot added latency ms", f"p50 {a50:.1f}  p95 {a95:.1f}  p99 {a99:.1f}"),
            *(
                [
                    (
                        "of which webhook queue ms",
                        "p50 {:.1f}  p99 {:.1f}".format(*r["delivery_wait_ms"]),
                    )
                ]
                if r["delivery_wait_ms"] is not None
                else []
            ),
            ("bot CPU per message", f"{r['cpu_ms_per_message']:.2f} ms"),
            ("bot CPU use", f"{r['bot_cpu_share']:.0%} of one core"),
            ("child processes' CPU per message", f"{r['children_cpu_ms_per_message']:.2f} ms"),
            ("driver CPU use", f"{r['driver_cpu_share']:.0%} of one core"),
            ("bot peak memory (VmHWM)", f"{r['peak_rss_mb']:.0f} MB"),
            (
                "override table reads",
                f"{r['override_reads']} in {r['wall_s']:.1f} s "
                f"({r['override_reads_per_minute']:.2f}/min)",
            ),
            ("answered but not in the DB", f"{r['missing_in_db']}"),
            (
                "background steps",
                "{} waited for replies, {} replaced by a later turn's, {} overdue".format(
                    *r["background_lane"]
                ),
            ),
            *(
                [
                    (
                        "spans received / made",
                        f"{r['spans_received']} / {r['spans_made']} "
                        f"({r['spans_made'] - r['spans_received']} lost)",
                    )
                ]
                if options.tracing
                else []
            ),
            *(
                [
                    (
                        "traced durations ms",
                        "  ".join(
                            f"{kind} p50 {p50:.0f} p99 {p99:.0f}"
                            for kind, (p50, p99) in r["span_ms"].items()
                        ),
                    )
                ]
                if r["span_ms"]
                else []
            ),
            *_production_rows(options, r),
            (
                "Bot API calls per message",
                " ".join(f"{m}={n:.2f}" for m, n in r["bot_api_calls_per_message"].items()),
            ),
            ("load average (1/5/15 min)", r["load"]),
            ("machine speed (calibration)", f"{r['calibration_ms']:.1f} ms (lower is faster)"),
            (
                "loopback round trip",
                f"{r['loopback_us'][0]:.1f} us ({r['loopback_us'][1]:.1f} us of this process's "
                "CPU; the bot's writes cost like this)",
            ),
        ],
    )
    for text in r["apology_texts"]:
        print(f"apology sent: {text!r}")
    if r["kept_log"]:
        print(f"the bot's log: {r['kept_log']}")


def _production_rows(options: Options, r: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    if r["insforge_per_turn"] is not None:
        per_turn = r["insforge_per_turn"]
        rows.append(
            (
                "InsForge requests per turn",
                f"{per_turn['per_turn']:.2f} ({format_kinds(per_turn['by_kind'])})",
            )
        )
    for n, turn in enumerate(r["insforge_plain_turn"] or (), 1):
        rows.append((f"InsForge requests, turn {n} alone", f"{len(turn)} ({', '.join(turn)})"))
    if options.production:
        rows.append(("archives seeded", f"{r['archives_seeded']} chats (one in {ARCHIVE_EVERY})"))
    if r["forwarded"] is not None:
        rows.append(("updates per replica", " / ".join(str(n) for n in r["forwarded"])))
    if options.burst is not None:
        rate, seconds = options.burst
        b50, b99 = r["burst_added_ms"]
        rows.append(
            (
                "added by time sent (s: p50/p99 ms)",
                "  ".join(f"{t:g}: {p50:.0f}/{p99:.0f}" for t, _, p50, p99 in r["timeline"]),
            )
        )
        rows.append(
            (
                f"burst {rate:g} msg/s x {seconds:g} s",
                f"{r['burst_answered']}/{r['burst_sent']} answered, added p50 {b50:.1f} "
                f"p99 {b99:.1f} ms",
            )
        )
    return rows


def _burst_arg(text: str) -> tuple[float, float]:
    try:
        rate, seconds = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected <rate>:<seconds>, e.g. 100:20") from None
    if rate <= 0 or seconds <= 0:
        raise argparse.ArgumentTypeError("rate and seconds must be positive")
    return rate, seconds


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.e2e_load", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--polling", dest="webhook", action="store_false", help="(default)")
    mode.add_argument("--webhook", dest="webhook", action="store_true")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--sqlite", dest="storage", action="store_const", const="sqlite")
    store.add_argument("--insforge", dest="storage", action="store_const", const="insforge")
    parser.add_argument("--tracing", choices=("on", "off"), default="off")
    parser.add_argument("--ledger", choices=("on", "off"), default="on", help="LEDGER_ENABLED")
    parser.add_argument(
        "--store-prompts", choices=("on", "off"), default="on", help="STORE_PROMPTS"
    )
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--messages", type=int, default=4, help="per chat")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="messages/s, open loop; 0: closed loop"
    )
    parser.add_argument("--latency", type=float, default=0.1, help="model latency, seconds")
    parser.add_argument("--token-delay", type=float, default=0.005, help="seconds per token")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up messages (not measured)")
    parser.add_argument("--py-spy", metavar="FILE", help="profile the bot (.svg or .txt)")
    parser.add_argument(
        "--keep-log", action="store_true", help="keep the bot's log (its path is printed)"
    )
    parser.add_argument(
        "--production",
        action="store_true",
        help="webhook, InsForge, Redis, tracing, ledger, budget, allowlist, archives",
    )
    parser.add_argument(
        "--replicas", type=int, help="bot processes behind one webhook address (InsForge, Redis)"
    )
    parser.add_argument(
        "--route", choices=("round-robin", "chat"), default="round-robin", help="the front's"
    )
    parser.add_argument(
        "--burst", type=_burst_arg, metavar="RATE:SECONDS", help="extra msg/s on top, e.g. 100:20"
    )
    parser.add_argument(
        "--replica-cpu",
        type=float,
        metavar="CORES",
        help="hold each bot process to this many cores (a cgroup; Linux, root), so that on a "
        "small machine a replica, not the machine, is the bottleneck",
    )
    parser.set_defaults(webhook=False, storage="sqlite")
    args = parser.parse_args(argv)
    return Options(
        chats=args.chats,
        messages=args.messages,
        rate=args.rate,
        latency=args.latency,
        token_delay=args.token_delay,
        webhook=args.webhook,
        storage=args.storage,
        tracing=args.tracing == "on",
        ledger=args.ledger == "on",
        store_prompts=args.store_prompts == "on",
        warmup=args.warmup,
        py_spy=args.py_spy,
        keep_log=args.keep_log,
        production=args.production,
        replicas=max(1, args.replicas or 1),
        fronted=args.replicas is not None,
        route=args.route,
        burst=args.burst,
        replica_cpu=args.replica_cpu,
    )


def main(argv: list[str] | None = None) -> int:
    result = asyncio.run(run(parse_args(argv)))
    return 0 if result["answered_share"] == 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
