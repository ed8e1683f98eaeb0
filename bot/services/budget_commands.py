"""`/budget` (admins) and `/usage`: the budgets' commands, as text in and text out.

    /budget                              every limit with what is spent, the policies
    /budget bot 20/day                   the whole bot
    /budget user 0.50/day                every user's default (and `5/month`)
    /budget user <id> 2/day              one user's own
    /budget agent strategist 1/day
    /budget <bot|user|user <id>|agent <name>> off     no limit (over the environment's)

    /usage                  your spend today and this month, your limits, when they reset
    /usage <user id>        (admins) someone's
    /usage bot              (admins) the bot's and each agent's

Amounts are USD (`0.50`, `$2`). Bad input changes nothing and says why.
"""

from __future__ import annotations

import re

from bot.config import AGENT_NAMES
from bot.services.budgets import Budgets, Period, ScopeKey, scope_name
from bot.storage.repositories import LedgerRepo, StorageError

BUDGET_USAGE = (
    "Usage: /budget, /budget bot <usd>/day, /budget user <usd>/day|month, "
    "/budget user <id> <usd>/day|month, /budget agent <name> <usd>/day, "
    "or <...> off instead of an amount."
)
_AMOUNT = re.compile(r"^\$?(\d+(?:\.\d+)?)/(day|month)$")
_OFF = re.compile(r"^off(?:/(day|month))?$")


def _money(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def _limit(value: float | None) -> str:
    return "no limit" if value is None else f"${value:.2f}"


def _parse_target(words: list[str]) -> tuple[str, str | None, list[str]] | str:
    """(kind, subject, rest) or an error message."""
    if not words:
        return BUDGET_USAGE
    kind = words[0].lower()
    if kind == "bot":
        return "bot", None, words[1:]
    if kind == "user":
        if len(words) > 1 and words[1].lstrip("-").isdigit():
            return "user", words[1], words[2:]
        return "user", None, words[1:]
    if kind == "agent":
        if len(words) < 2 or words[1].lower() not in AGENT_NAMES:
            return f"Not changed: name an agent ({', '.join(AGENT_NAMES)})."
        return "agent", words[1].lower(), words[2:]
    return f"Not changed: {BUDGET_USAGE}"


async def handle_budget(budgets: Budgets, args: str | None, *, by: str) -> str:
    words = (args or "").split()
    if not words:
        return await render_budgets(budgets)
    target = _parse_target(words)
    if isinstance(target, str):
        return target
    kind, subject, rest = target
    if len(rest) != 1:
        return f"Not changed: {BUDGET_USAGE}"
    value = rest[0].lower()
    periods: tuple[Period, ...]
    off = _OFF.match(value)
    usd: float | None
    if off:
        usd = None
        periods = (off.group(1),) if off.group(1) else ("day", "month")  # type: ignore[assignment]
    else:
        amount = _AMOUNT.match(value)
        if amount is None:
            return f"Not changed: {rest[0][:40]!r} is not an amount like 0.50/day or 5/month."
        usd = float(amount.group(1))
        periods = (amount.group(2),)  # type: ignore[assignment]
    if kind in ("bot", "agent"):
        if "month" in periods and usd is not None:
            return "Not changed: the bot's and the agents' budgets are per day (…/day)."
        periods = ("day",)
    try:
        for period in periods:
            await budgets.set_limit(scope_name(kind, subject, period), usd, by=by)
    except StorageError:
        return "Not changed: the database did not answer. Please try again in a minute."
    what = {"bot": "the bot", "agent": f"agent {subject}"}.get(
        kind, f"user {subject}" if subject else "every user (default)"
    )
    if usd is None:
        return f"Budget of {what}: off ({'/'.join(periods)})."
    return f"Budget of {what}: ${usd:.2f}/{periods[0]}. It applies from the next call."


async def render_budgets(budgets: Budgets) -> str:
    try:
        limits = await budgets.limits()
    except StorageError:
        return "The database did not answer. Please try again in a minute."
    day, month = budgets.period_id("day"), budgets.period_id("month")
    keys = {"bot": f"bot:day:{day}"}
    for agent in AGENT_NAMES:
        keys[agent] = f"agent:{agent}:day:{day}"
    spent, unpriced = await budgets.spent(list(keys.values()))
    lines = [
        f"Budgets (USD). Days start at midnight {budgets.timezone}: the next reset is "
        f"{budgets.reset_text('day')}."
    ]

    def row(label: str, limit: float | None, key: str | None) -> str:
        text = f"{label}: {_limit(limit)}/day" if limit is not None else f"{label}: no limit"
        if limit is not None and key is not None:
            used = spent.get(key, 0.0)
            text += f", spent {_money(used)} today ({used / limit:.0%})" if limit else ""
        return text

    lines.append(row("bot", limits.get("bot:day"), keys["bot"]))
    user_day, user_month = limits.get("user:day"), limits.get("user:month")
    lines.append(
        f"every user: {_limit(user_day)}/day, {_limit(user_month)}/month (see /usage <id>)"
    )
    for scope, usd in sorted(limits.rows.items()):
        parts = scope.split(":")
        if parts[0] == "user" and len(parts) == 3:
            lines.append(f"user {parts[1]}: {_limit(usd)}/{parts[2]} (their own)")
    for agent in AGENT_NAMES:
        limit = limits.get(scope_name("agent", agent, "day"))
        if limit is not None:
            lines.append(row(f"agent {agent}", limit, keys[agent]))
    lines.append(
        "When spent: " + ", ".join(f"{agent} {budgets.policy(agent)}" for agent in AGENT_NAMES)
    )
    missing = unpriced.get(keys["bot"], 0)
    if missing:
        lines.append(f"Unpriced calls today: {missing} (no price known; not in the figures).")
    lines.append(
        f"Admins are {'held to the budgets' if budgets.budget_admins else 'exempt'} "
        f"(BUDGET_ADMINS). This month: {month}."
    )
    return "\n".join(lines)


async def handle_usage(
    budgets: Budgets,
    ledger: LedgerRepo | None,
    args: str | None,
    *,
    user_id: int,
    is_admin: bool,
) -> str:
    """A user's spend today and this month (the ledger's figures, days in BUDGET_TIMEZONE),
    their limits and when they reset."""
    words = (args or "").split()
    if words and not is_admin:
        return "Only the bot's admins can see someone else's usage. Send /usage for yours."
    if words and words[0].lower() == "bot":
        return await render_budgets(budgets)
    target = user_id
    if words:
        if not words[0].lstrip("-").isdigit():
            return "Usage: /usage, /usage <user id>, /usage bot."
        target = int(words[0])
    try:
        keys = [k for k in await budgets.scope_keys("coach", target) if k.scope.startswith("user")]
        figures: list[tuple[ScopeKey, float, int, int | None]] = []
        if ledger is not None:
            for key in keys:
                cost = await ledger.user_cost(target, budgets.period_start(key.period))
                figures.append((key, cost.cost_usd, cost.unpriced, cost.calls))
        else:  # LEDGER_ENABLED=false: only the budgets' own counters (scopes with a limit)
            spent, unpriced = await budgets.spent([k.key for k in keys])
            figures = [(k, spent.get(k.key, 0.0), unpriced.get(k.key, 0), None) for k in keys]
    except StorageError:
        return "The database did not answer. Please try again in a minute."
    who = "Your" if target == user_id else f"User {target}'s"
    lines = [f"{who} usage (USD):"]
    for key, spent_usd, _, calls in figures:
        period = "Today" if key.period == "day" else "This month"
        text = f"{period}: "
        if calls is not None:
            text += f"{calls} model calls, "
        text += _money(spent_usd)
        if key.limit is not None:
            reached = spent_usd >= key.limit - 1e-9
            text += f" of {_limit(key.limit)}" + (" (spent)" if reached else "")
        else:
            text += ", no limit"
        lines.append(f"{text}; resets {budgets.reset_text(key.period)}.")
    unpriced_month = figures[-1][2] if figures else 0
    if unpriced_month:
        lines.append(
            f"({unpriced_month} calls this month have no known price and are not counted.)"
        )
    if budgets.exempt(target):
        lines.append("Admins are exempt from the budgets (BUDGET_ADMINS=false).")
    return "\n".join(lines)
