"""What tracing costs: `e2e_load` with tracing off and on, alternated in one run.

    python -m tests.bench.tracing_cost                         # 300 chats x 4 at 30 msg/s, 3 pairs
    python -m tests.bench.tracing_cost --rate 100 --pairs 4

This VM's speed drifts by ±10 % between minutes, so the two settings run in turn (off, on, off,
on...) and the ratio is taken pair by pair; the median of the pairs' ratios is the figure. Tracing
on exports to the loopback Langfuse (`tests/fakes/otlp_receiver.py`) through the export process,
in the way LANGFUSE_EXPORT names (direct by default; `LANGFUSE_EXPORT=sdk` for the Langfuse SDK).

Per run it prints the bot's CPU per message, its child processes' CPU per message (a span
exporter running beside the bot, if any), added latency, and for tracing on the spans that
arrived at the receiver against the spans the bot made (after its shutdown flushed the last).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from typing import Any

from tests.bench.e2e_load import Options, run
from tests.bench.harness import print_table


def _row(label: str, r: dict[str, Any]) -> tuple[str, str]:
    a50, _, a99 = r["added_ms"]
    spans = f"  spans {r['spans_received']}/{r['spans_made']}" if label.startswith("on") else ""
    cpu, children = r["cpu_ms_per_message"], r["children_cpu_ms_per_message"]
    return (
        label,
        f"CPU {cpu:.2f} ms/msg (+children {children:.2f})"
        f"  added p50 {a50:.1f} p99 {a99:.1f} ms  answered {r['answered']}/{r['sent']}{spans}",
    )


async def compare(base: Options, pairs: int) -> dict[str, Any]:
    off_runs: list[dict[str, Any]] = []
    on_runs: list[dict[str, Any]] = []
    rows: list[tuple[str, str]] = []
    for index in range(pairs):
        # Alternate which goes first, so neither side always gets the warmer machine.
        order = (False, True) if index % 2 == 0 else (True, False)
        for tracing in order:
            options = Options(**{**base.__dict__, "tracing": tracing, "quiet": True})
            result = await run(options)
            (on_runs if tracing else off_runs).append(result)
            rows.append(_row(f"{'on ' if tracing else 'off'} #{index + 1}", result))
            print(*rows[-1], flush=True)
    ratios = [
        on["cpu_ms_per_message"] / off["cpu_ms_per_message"]
        for on, off in zip(on_runs, off_runs, strict=True)
    ]
    ratios_all = [
        (on["cpu_ms_per_message"] + on["children_cpu_ms_per_message"])
        / (off["cpu_ms_per_message"] + off["children_cpu_ms_per_message"])
        for on, off in zip(on_runs, off_runs, strict=True)
    ]
    lost = sum(r["spans_made"] - r["spans_received"] for r in on_runs)
    summary = {
        "off_ms": statistics.median(r["cpu_ms_per_message"] for r in off_runs),
        "on_ms": statistics.median(r["cpu_ms_per_message"] for r in on_runs),
        "on_children_ms": statistics.median(r["children_cpu_ms_per_message"] for r in on_runs),
        "ratio": statistics.median(ratios),
        "ratio_with_children": statistics.median(ratios_all),
        "spans_lost": lost,
        "spans_made": sum(r["spans_made"] for r in on_runs),
    }
    rate = f"{base.rate:g} msg/s" if base.rate > 0 else "closed loop"
    print_table(
        f"tracing cost: {base.chats} chats x {base.messages} messages at {rate}, "
        f"{pairs} pairs off/on alternated",
        [
            *rows,
            (
                "bot CPU per message, median",
                f"off {summary['off_ms']:.2f} ms, on {summary['on_ms']:.2f} ms",
            ),
            (
                "on / off, median of pairs",
                f"{summary['ratio']:.2f} x (" + " ".join(f"{x:.2f}" for x in ratios) + ")",
            ),
            (
                "with child processes' CPU",
                f"{summary['ratio_with_children']:.2f} x "
                f"(exporter child {summary['on_children_ms']:.2f} ms/msg)",
            ),
            ("spans lost (made - received)", f"{lost} of {summary['spans_made']}"),
        ],
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.tracing_cost", description=__doc__)
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--messages", type=int, default=4, help="per chat")
    parser.add_argument("--rate", type=float, default=30.0, help="messages/s; 0: closed loop")
    parser.add_argument("--pairs", type=int, default=3, help="off/on pairs")
    parser.add_argument("--webhook", action="store_true")
    args = parser.parse_args(argv)
    base = Options(chats=args.chats, messages=args.messages, rate=args.rate, webhook=args.webhook)
    summary = asyncio.run(compare(base, args.pairs))
    return 0 if summary["spans_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
