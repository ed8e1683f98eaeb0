"""The replay's words: the estimate before it runs, the side-by-side report after.

    estimate_text(plan)            # what it will send, what it may cost, what it left out
    report_messages(plan, rows)    # one block per input, packed into Telegram-sized messages

Outputs are trimmed (`TRIM` characters each); every message stays under Telegram's 4096 UTF-16
units (`LIMIT`, with room to spare), a block is never split across two messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from bot.observatory.stats import usd
from bot.replay.run import ReplayPlan, ReplayRow, last_user_text, winner

TRIM = 400
INPUT_GLIMPSE = 100
LIMIT = 4000


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def trim(text: str, size: int = TRIM) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= size else flat[: size - 1] + "…"


def money(value: float | None) -> str:
    return "unpriced" if value is None else usd(value)


def skipped_lines(plan: ReplayPlan) -> list[str]:
    lines = []
    if plan.skipped_local:
        lines.append(
            f"{plan.skipped_local} input(s) left out: their user prefers local models "
            f"(/prefer local) and {plan.picked.label} is a cloud model."
        )
    if plan.skipped_schema:
        lines.append(
            f"{plan.skipped_schema} input(s) left out: their output schema is not in this "
            "version of the bot."
        )
    return lines


def estimate_text(plan: ReplayPlan) -> str:
    n = len(plan.inputs)
    estimate = plan.estimate
    head = (
        f"Replay of {plan.agent}'s last {n} input(s) on {plan.picked.label}"
        + (f" (asked for {plan.asked}, {n} kept)" if n < plan.asked else "")
        + "."
    )
    cost = (
        f"Estimated cost: {money(estimate.usd)} "
        f"({estimate.prompt_tokens} prompt tokens as sent before, about "
        f"{estimate.completion_tokens} completion tokens as the originals wrote)."
    )
    if estimate.usd is None:
        cost += " The candidate's price is not known here."
    judges = sorted({task.name for task in plan.judges.values()})
    judged = (
        [
            f"The score task {', '.join(judges)} judges both answers of each input (two more "
            "calls an input, not in the estimate)."
        ]
        if judges
        else []
    )
    return "\n".join([head, cost, *judged, *skipped_lines(plan)])


def judge_summary(rows: Sequence[ReplayRow]) -> str | None:
    """The judge's verdict over the inputs it judged, or None without a judge."""
    judged = [row.judged for row in rows if row.judged is not None]
    failed = sum(row.judge_error is not None for row in rows)
    if not judged and not failed:
        return None
    if not judged:
        return f"the judge failed on all {failed} input(s)"
    verdicts = [winner(j) for j in judged]
    original = sum(j[1] for j in judged) / len(judged)
    candidate = sum(j[2] for j in judged) / len(judged)
    better, worse, ties = (
        verdicts.count("candidate better"),
        verdicts.count("original better"),
        verdicts.count("tie"),
    )
    overall = (
        "the candidate is better"
        if better > worse
        else "the original is better"
        if worse > better
        else "no difference"
    )
    return (
        f"{overall}: candidate better on {better}, original on {worse}, ties {ties} of "
        f"{len(judged)} judged; mean score original {original:.2f}, candidate {candidate:.2f}"
        + (f" ({failed} not judged: the judge failed)" if failed else "")
    )


def _block(number: int, row: ReplayRow, label: str) -> str:
    item = row.item
    asked = last_user_text(item)
    lines = [
        f"#{number} · {item.at:%Y-%m-%d %H:%M} UTC · {item.pipeline} · "
        f"input: {trim(asked, INPUT_GLIMPSE)!s}",
        f"original ({item.model}) {item.latency_ms:.0f} ms, {money(row.original_cost_usd)}:",
        trim(item.output),
    ]
    if row.error is not None:
        lines.append(f"candidate ({label}) failed after {row.latency_ms:.0f} ms: {row.error}")
    else:
        lines.append(f"candidate ({label}) {row.latency_ms:.0f} ms, {money(row.cost_usd)}:")
        lines.append(trim(row.output or ""))
    if row.verdict is not None:
        lines.append(f"judge: {row.verdict}")
    return "\n".join(lines)


def _total(costs: Sequence[float | None]) -> str:
    priced = [c for c in costs if c is not None]
    text = usd(sum(priced)) if priced else "unpriced"
    missing = len(costs) - len(priced)
    return text + (f" ({missing} unpriced, not counted)" if priced and missing else "")


def totals_text(plan: ReplayPlan, rows: Sequence[ReplayRow], overall: str | None) -> str:
    answered = [r for r in rows if r.error is None]
    original_ms = [r.item.latency_ms for r in rows]
    candidate_ms = [r.latency_ms for r in answered]
    original_cost = _total([r.original_cost_usd for r in rows])
    lines = [
        f"Totals over {len(rows)} input(s):",
        f"original: median {median(original_ms):.0f} ms, cost {original_cost}"
        if rows
        else "original: -",
        f"candidate: {len(answered)}/{len(rows)} answered, "
        + (f"median {median(candidate_ms):.0f} ms, " if candidate_ms else "")
        + f"cost {_total([r.cost_usd for r in answered])}",
    ]
    if overall is not None:
        lines.append(f"judge: {overall}")
    lines.extend(skipped_lines(plan))
    return "\n".join(lines)


def report_messages(plan: ReplayPlan, rows: Sequence[ReplayRow]) -> list[str]:
    overall = judge_summary(rows)
    label = plan.picked.alias or str(plan.picked.spec)
    head = f"Replay of {plan.agent} on {plan.picked.label}: {len(rows)} input(s), side by side."
    blocks = [head, *(_block(n, row, label) for n, row in enumerate(rows, 1))]
    blocks.append(totals_text(plan, rows, overall))
    messages: list[str] = []
    current = ""
    for block in blocks:
        block = block if _units(block) <= LIMIT else block[: LIMIT // 2] + "…"
        joined = f"{current}\n\n{block}" if current else block
        if _units(joined) > LIMIT:
            messages.append(current)
            joined = block
        current = joined
    if current:
        messages.append(current)
    return messages
