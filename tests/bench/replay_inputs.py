"""What keeping replay inputs (STORE_PROMPTS) costs per message: `e2e_load` with it on and
off, alternated in one run (on, off, on, off, ...) so the VM's drift hits both alike.

    python -m tests.bench.replay_inputs                  # 3 pairs of 500 chats x 4 messages
    python -m tests.bench.replay_inputs --pairs 5 --chats 300

Prints each run's bot CPU ms per message and added latency, then the medians of each side and
of the pairwise differences (on - off). Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from dataclasses import replace

from tests.bench.e2e_load import Options, run


async def main(args: argparse.Namespace) -> int:
    base = Options(chats=args.chats, messages=args.messages, rate=args.rate, quiet=True)
    figures: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for pair in range(args.pairs):
        for on in (True, False):
            result = await run(replace(base, store_prompts=on))
            row = {
                "cpu": result["cpu_ms_per_message"],
                "added_p50": result["added_ms"][0],
                "added_p99": result["added_ms"][2],
                "answered": result["answered_share"],
            }
            figures[on].append(row)
            print(
                f"pair {pair + 1} store_prompts={'on ' if on else 'off'}: "
                f"cpu {row['cpu']:.2f} ms/msg, added p50 {row['added_p50']:.1f} ms, "
                f"p99 {row['added_p99']:.1f} ms, answered {row['answered']:.1%}",
                flush=True,
            )
    diffs = [a["cpu"] - b["cpu"] for a, b in zip(figures[True], figures[False], strict=True)]
    for on in (True, False):
        rows = figures[on]
        print(
            f"median store_prompts={'on ' if on else 'off'}: "
            f"cpu {statistics.median(r['cpu'] for r in rows):.2f} ms/msg, added p50 "
            f"{statistics.median(r['added_p50'] for r in rows):.1f} ms, p99 "
            f"{statistics.median(r['added_p99'] for r in rows):.1f} ms"
        )
    print(f"median pairwise difference (on - off): {statistics.median(diffs) * 1000:.0f} us/msg")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.replay_inputs", description=__doc__
    )
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--chats", type=int, default=500)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
