"""Benchmark: the InsForge roll-up's time as the ledger grows, migration 016's `ledger_roll_up`
against the one the migrations leave now (023), side by side in one run.

    python -m tests.bench.ledger_roll_up [--turns 4000] [--batch 400]

Two fresh databases behind the fake InsForge, every migration applied; in the first, 016's
function is put back. Both get the same rows: `--batch` turns at a time (four or five agents'
calls each, all in the current hour, as a busy bot writes them), and after each batch one
`ledger_roll_up()` in each, alternated. Prints the milliseconds of each roll-up and the ledger's
size then; nothing asserts. The bot's ledger writer rolls up every 5 s, so a roll-up that takes
longer than that at some size is one the bot cannot keep up with there.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg

from tests.bench.harness import open_storage, print_grid

MIGRATIONS = Path(__file__).resolve().parents[2] / "insforge" / "migrations"
AGENTS = ("extraction", "strategist", "coach", "summarizer", "tutor")
INSERT = (
    "INSERT INTO ledger_calls (call_id, at, turn_id, chat_id, user_id, pipeline, agent, spec, "
    "model, provider, outcome, latency_ms, ttft_ms, prompt_tokens, completion_tokens, cost_usd, "
    "cost_source) VALUES ($1, now(), $2, $3, $3, 'support', $4, 'openai:m1', 'm1', 'openai', "
    "'ok', 100, 20, 10, 10, 0.001, 'provider')"
)


def roll_up_of_016() -> str:
    """016's `CREATE OR REPLACE FUNCTION ledger_roll_up()` statement, as it first landed."""
    text = (MIGRATIONS / "016_ledger_rollups.sql").read_text()
    found = re.search(r"CREATE OR REPLACE FUNCTION ledger_roll_up\(\).*?\n\$\$;", text, re.S)
    assert found is not None, "016 no longer defines ledger_roll_up"
    return found.group(0)


async def run(turns: int, batch: int) -> None:
    async with AsyncExitStack() as stack:
        conns: dict[str, asyncpg.Connection] = {}
        for name in ("016", "023"):
            storage = await stack.enter_async_context(
                open_storage("insforge", Path(tempfile.mkdtemp()))
            )
            conn = await asyncpg.connect(storage.pg_dsn)
            stack.push_async_callback(conn.close)
            if name == "016":
                await conn.execute(roll_up_of_016())
            conns[name] = conn
        rows: list[list[str]] = []
        calls = 0
        for start in range(0, turns, batch):
            values = []
            for turn in range(start, min(turns, start + batch)):
                for agent in AGENTS[: 4 + turn % 2]:
                    calls += 1
                    values.append((f"c{calls}", turn + 1, turn % 300, agent))
            took: dict[str, float] = {}
            for name, conn in conns.items():
                await conn.executemany(INSERT, values)
                started = time.perf_counter()
                rolled = await conn.fetchval("SELECT ledger_roll_up()")
                took[name] = (time.perf_counter() - started) * 1000
                assert rolled == len(values), (name, rolled, len(values))
            rows.append(
                [f"{calls:,}", f"{len(values):,}", f"{took['016']:.1f}", f"{took['023']:.1f}"]
            )
        print_grid(
            f"ledger_roll_up() after each {batch} turns (ms)",
            ["ledger rows", "new calls", "016", "now (023)"],
            rows,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(run(args.turns, args.batch))


if __name__ == "__main__":
    main()
