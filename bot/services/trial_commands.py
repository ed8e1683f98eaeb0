"""`/trial` (admins), shared by Telegram and the console: text in, text out.

    /trial                                      the running trials, each arm side by side
    /trial <agent> <model> [share=<percent>] [min=<calls>]    start one (default 10 %, 100)
    /trial stop <agent>
    /trial promote <agent>                      the candidate becomes the agent's model

Every figure has its n and a 95 % interval (`bot.trials.figures`): latency quantiles and cost
per turn over a bounded window of raw calls (the candidate's last 2,000, the incumbent's over
the same time), calls, errors and 👍 over the whole trial. Bad input changes nothing and says
why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from bot.config import AGENT_NAMES
from bot.observatory.stats import ScoreSource
from bot.services.command_replies import STORAGE_PROBLEM
from bot.services.model_catalog import Picked
from bot.services.model_levels import task_names
from bot.services.trials import DEFAULT_SHARE, TrialError, Trials
from bot.storage.ledger_models import CallStats
from bot.storage.models import utcnow
from bot.storage.repositories import LedgerRepo, StorageError
from bot.storage.trial_models import TrialRow
from bot.trials.figures import Row, figure_rows, side_by_side
from bot.trials.guardrails import ArmData
from bot.trials.window import CANDIDATE_WINDOW, read_window

log = logging.getLogger(__name__)

TRIAL_USAGE = (
    "Usage: /trial (the running trials), /trial <agent> <model> [share=<percent>] "
    "[min=<calls>], /trial stop <agent>, /trial promote <agent>"
)

# What the commands need from the model commands: the model check, and /setmodel itself.
Check = Callable[[str], Awaitable[tuple[Picked, list[str]]]]
SetModel = Callable[[str, str, str], Awaitable[str]]  # agent, model, by


@dataclass(slots=True)
class TrialCommands:
    trials: Trials
    ledger: LedgerRepo | None
    check: Check
    set_model: SetModel
    default_min_calls: int = 100
    # The score tasks' results (`/task ... kind=score`): a judge row per task.
    scores: ScoreSource | None = None

    async def handle(self, args: str | None, *, by: str) -> tuple[str, bool]:
        """The reply and whether it reads best in monospace."""
        words = (args or "").split()
        try:
            if not words:
                return await self.show(), True
            verb = words[0].lower()
            if verb in ("stop", "promote"):
                if len(words) != 2:
                    return TRIAL_USAGE, False
                agent = _agent(words[1])
                if verb == "stop":
                    return await self.stop(agent, by=by), False
                return await self.promote(agent, by=by), False
            if len(words) < 2:
                return TRIAL_USAGE, False
            return await self.start(_agent(words[0]), words[1], words[2:], by=by), False
        except TrialError as exc:
            return f"Not changed: {exc}", False
        except StorageError as exc:
            log.error("/trial %s by %s failed: %s", (args or "")[:80], by, exc)
            return STORAGE_PROBLEM, False

    async def start(self, agent: str, model: str, options: list[str], *, by: str) -> str:
        share, min_calls = DEFAULT_SHARE, self.default_min_calls
        for option in options:
            key, sep, value = option.partition("=")
            try:
                if sep and key.lower() == "share":
                    share = float(value.rstrip("%"))
                elif sep and key.lower() == "min":
                    min_calls = int(value)
                else:
                    raise TrialError(f"I don't know {option[:40]!r}. {TRIAL_USAGE}")
            except ValueError as exc:
                if isinstance(exc, TrialError):
                    raise
                raise TrialError(f"{option[:40]!r} is not a number. {TRIAL_USAGE}") from None
        try:
            picked, notes = await self.check(model)
        except ValueError as exc:  # ModelProblem, a bad alias or spec
            raise TrialError(str(exc)) from None
        trial = await self.trials.start(
            agent,
            picked.entry.alias if picked.entry else str(picked.spec),
            share=share,
            min_calls=min_calls,
            by=by,
        )
        lines = [
            f"Trial {trial.id} started: {share:g}% of {agent}'s users run on {picked.label}, "
            f"the rest on its current model. Each user stays on their arm.",
            f"Guardrails watch errors, p95 latency and cost per turn once the candidate has "
            f"{min_calls} calls. /trial shows the figures.",
        ]
        return "\n".join([*lines, *notes])

    async def stop(self, agent: str, *, by: str) -> str:
        trial = await self.trials.end(agent, "stopped", by=by, reason="stopped by an admin")
        if trial is None:
            return f"{agent} has no running trial."
        return f"Trial {trial.id} of {agent} stopped: every user is back on its model."

    async def promote(self, agent: str, *, by: str) -> str:
        trial = (await self.trials.running()).get(agent)
        if trial is None:
            return f"{agent} has no running trial."
        changed = await self.set_model(agent, trial.candidate, by)
        if changed.startswith("Not changed"):
            return changed
        await self.trials.end(agent, "promoted", by=by, reason="promoted")
        return f"Trial {trial.id} promoted.\n{changed}"

    async def show(self) -> str:
        running = await self.trials.running()
        blocks = [await self._block(trial) for trial in running.values()]
        if not blocks:
            blocks.append(
                "No trials are running. Start one with /trial <agent> <model> [share=10] [min=100]."
            )
        ended = await self.trials.ended()
        if ended:
            # A trial the guardrails stopped says why here too (its admins' message may be gone).
            blocks.append("\n".join(["Ended lately:", *(_ended_line(trial) for trial in ended)]))
        return "\n\n".join(blocks)

    async def _block(self, trial: TrialRow) -> str:
        lines = [_heading(trial)]
        if self.ledger is None:
            return "\n".join([*lines, "  The call ledger is off (LEDGER_ENABLED): no figures."])
        whole: dict[str, CallStats] = {
            row.model or "": row for row in await self.ledger.trial_stats(trial.id)
        }
        window = await read_window(self.ledger, trial.id)
        rows = figure_rows(ArmData.of(window.candidate), ArmData.of(window.incumbent), whole)
        lines += side_by_side(rows + await self._judge_rows(trial))
        if window.full:
            lines.append(
                f"  latency and cost: the candidate's last {CANDIDATE_WINDOW} calls and the "
                "incumbent's over the same time"
            )
        return "\n".join(lines)

    async def _judge_rows(self, trial: TrialRow) -> list[Row]:
        """Per score task, each arm's judge score (mean, 95 % interval, turns scored)."""
        if self.scores is None:
            return []
        found = await self.scores.score_stats(
            trial.started_at, utcnow() + timedelta(seconds=1), trial_id=trial.id
        )
        rows: list[Row] = []
        for task in sorted({s.task for s in found if s.agent == trial.agent}):
            arms = {s.group: s.text() for s in found if s.agent == trial.agent and s.task == task}
            rows.append(
                (
                    f"judge {task}",
                    arms.get("incumbent", "- (n=0)"),
                    arms.get("candidate", "- (n=0)"),
                )
            )
        return rows


def _heading(trial: TrialRow) -> str:
    return (
        f"{trial.agent}: trial {trial.id}, candidate {trial.candidate} on {trial.share:g}% of "
        f"users, since {trial.started_at:%Y-%m-%d %H:%M} UTC by {trial.started_by or 'an admin'}; "
        f"guardrails after {trial.min_calls} candidate calls"
    )


def _ended_line(trial: TrialRow) -> str:
    when = f"{trial.ended_at:%Y-%m-%d %H:%M} UTC" if trial.ended_at else "?"
    return (
        f"  {trial.agent}: trial {trial.id} ({trial.candidate}) {trial.status} {when} by "
        f"{trial.ended_by or '?'}: {trial.reason or '-'}"
    )


def _agent(text: str) -> str:
    agent = text.lower()
    if agent not in AGENT_NAMES and agent not in task_names():  # a /task is trialled by name
        raise TrialError(f"{text[:40]!r} is not an agent ({', '.join(AGENT_NAMES)}).")
    return agent
