"""Change reports: after a change of an agent's model, the agent before and after, side by side.

    reports = ChangeReports(storage.ledger, storage.model_history, after_calls=100, after_hours=24)
    for report in await reports.due():     # each taken by this replica alone
        send report.text to every admin, with a "Roll back" button for report.change

A change is a line of the model configuration history (`set`, `reset`, `rollback`) of any
target: an agent, `role:<role>`, `pipeline:<name>` or `default`; it concerns the agents of that
target. Its report is due once the agent has made `after_calls` calls on the configuration the
change made (config_version from the change's id up to the agent's next change) or `after_hours`
have passed, whichever is first. "Before" is the agent over the `after_hours` before the change.
An agent whose models did not change (it has an override of its own, say, under a role change)
gets no report. Each (change, agent) is claimed in the database first (`claim_report`), so with
several replicas exactly one sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.config import AGENT_NAMES
from bot.observatory.stats import ScoreSource, ms, percent, short_rating, usd
from bot.pipeline.steps import Background, Parallel, Pipeline
from bot.services.model_levels import AGENT_ROLES
from bot.storage.ledger_models import CallStats
from bot.storage.models import ModelConfigChange
from bot.storage.repositories import LedgerRepo, ModelConfigHistoryRepo
from bot.storage.task_models import ScoreStats

log = logging.getLogger(__name__)

CHANGE_ACTIONS = frozenset({"set", "reset", "rollback"})
# How many history lines (newest first) are looked at, and how far back.
HISTORY_DEPTH = 100
LOOKBACK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ChangeReport:
    change: ModelConfigChange
    agent: str
    text: str

    @property
    def target(self) -> str:
        return self.change.agent_name


def pipeline_agents(pipelines: Mapping[str, Pipeline]) -> dict[str, list[str]]:
    """Each pipeline's agents, in order (what a `pipeline:<name>` change concerns)."""
    found: dict[str, list[str]] = {}
    for name, pipeline in pipelines.items():
        agents: list[str] = []
        for stage in pipeline.stages:
            steps = stage.steps if isinstance(stage, Parallel | Background) else (stage,)
            agents.extend(
                step.name for step in steps if step.uses_model and step.name not in agents
            )
        found[name] = agents
    return found


def agents_of(target: str, pipelines: Mapping[str, Sequence[str]]) -> list[str]:
    """The agents whose model a change of `target` may change."""
    if target == "default":
        return list(AGENT_NAMES)
    kind, _, name = target.partition(":")
    if kind == "role":
        return [agent for agent in AGENT_NAMES if AGENT_ROLES.get(agent) == name]
    if kind == "pipeline":
        return list(pipelines.get(name, ()))
    return [target] if target in AGENT_NAMES else []


class ChangeReports:
    def __init__(
        self,
        ledger: LedgerRepo,
        history: ModelConfigHistoryRepo,
        *,
        after_calls: int,
        after_hours: float,
        pipelines: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.ledger = ledger
        self.history = history
        self.after_calls = after_calls
        self.after = timedelta(hours=after_hours)
        self.pipelines = pipelines or {}
        # The score tasks' results (`/task ... kind=score`): a row next to the 👍.
        self.scores: ScoreSource | None = None
        # (change, agent) pairs settled on this replica: reported, or found to change nothing.
        self._settled: set[tuple[int, str]] = set()

    async def due(self, *, now: datetime | None = None) -> list[ChangeReport]:
        """The reports due now, each claimed by this replica (send them)."""
        moment = now or datetime.now(UTC)
        lines = await self.history.list(None, HISTORY_DEPTH)
        changes = sorted(
            (
                line
                for line in lines
                if line.id is not None
                and line.action in CHANGE_ACTIONS
                and not line.agent_name.startswith("catalog:")
                and line.changed_at >= moment - LOOKBACK
            ),
            key=lambda line: line.id or 0,
        )
        if not changes:
            return []
        self._settled |= await self.ledger.reported(changes[0].id or 0)
        reports: list[ChangeReport] = []
        for index, change in enumerate(changes):
            assert change.id is not None
            for agent in agents_of(change.agent_name, self.pipelines):
                if (change.id, agent) in self._settled:
                    continue
                later = [
                    c.id
                    for c in changes[index + 1 :]
                    if c.id is not None and agent in agents_of(c.agent_name, self.pipelines)
                ]
                report = await self._report(change, agent, later[0] if later else None, moment)
                if report is not None:
                    reports.append(report)
        return reports

    async def _report(
        self, change: ModelConfigChange, agent: str, until_version: int | None, now: datetime
    ) -> ChangeReport | None:
        assert change.id is not None
        end = now + timedelta(seconds=1)
        after = await self.ledger.stats(
            change.changed_at, end, agent=agent, versions=(change.id, until_version)
        )
        after_total = _total(after)
        calls = after_total.calls if after_total is not None else 0
        if calls < self.after_calls and now - change.changed_at < self.after:
            return None
        if calls == 0:
            self._settled.add((change.id, agent))  # the agent made no call since: nothing to say
            return None
        before = await self.ledger.stats(
            change.changed_at - self.after,
            change.changed_at,
            agent=agent,
            versions=(None, change.id),
        )
        if after and before and _models(before) == _models(after):
            self._settled.add((change.id, agent))  # the agent's model did not change
            return None
        if not await self.ledger.claim_report(change.id, agent):
            self._settled.add((change.id, agent))  # another replica sends it
            return None
        self._settled.add((change.id, agent))
        judged: list[tuple[str, str, str]] = []
        if self.scores is not None:
            judged = judge_rows(
                await self.scores.score_stats(
                    change.changed_at - self.after,
                    change.changed_at,
                    agent=agent,
                    versions=(None, change.id),
                ),
                await self.scores.score_stats(
                    change.changed_at, end, agent=agent, versions=(change.id, until_version)
                ),
            )
        return ChangeReport(change, agent, format_report(change, agent, before, after, judged))


def _total(rows: Sequence[CallStats]) -> CallStats | None:
    return next((row for row in rows if row.model is None), None)


def _models(rows: Sequence[CallStats]) -> set[str]:
    return {row.model for row in rows if row.model is not None}


def judge_rows(
    before: Sequence[ScoreStats], after: Sequence[ScoreStats]
) -> list[tuple[str, str, str]]:
    """A row per score task: its mean over each side's turns (every model of the agent)."""
    rows = []
    for task in sorted({s.task for s in [*before, *after]}):
        sides = []
        for scores in (before, after):
            mine = [s for s in scores if s.task == task]
            n = sum(s.n for s in mine)
            if not n:
                sides.append("-")
                continue
            merged = ScoreStats(
                task,
                "",
                "",
                n,
                sum(s.mean * s.n for s in mine) / n,
                sum(s.mean_square * s.n for s in mine) / n,
            )
            sides.append(merged.text())
        rows.append((f"judge {task}", sides[0], sides[1]))
    return rows


def format_report(
    change: ModelConfigChange,
    agent: str,
    before: Sequence[CallStats],
    after: Sequence[CallStats],
    judged: Sequence[tuple[str, str, str]] = (),
) -> str:
    old = change.old_model_id or "(configured)"
    new = change.new_model_id or "(configured)"
    lines = [
        f"Change report: {agent}",
        f"{change.agent_name}: {old} -> {new} ({change.action} by {change.changed_by or '?'}, "
        f"{change.changed_at:%Y-%m-%d %H:%M} UTC; configuration version {change.id})",
        "",
    ]
    rows = [("", "before", "after")]
    b, a = _total(before), _total(after)
    figures: tuple[tuple[str, Callable[[CallStats], str]], ...] = (
        ("models", lambda r: ", ".join(sorted(_models(before if r is b else after))) or "-"),
        ("calls", lambda r: str(r.calls)),
        ("turns", lambda r: str(r.turns)),
        ("p50 latency", lambda r: ms(r.p50_ms)),
        ("p95 latency", lambda r: ms(r.p95_ms)),
        ("first token p50", lambda r: ms(r.ttft_p50_ms)),
        ("cost", lambda r: usd(r.cost_usd) + (f" (+{r.unpriced} unpriced)" if r.unpriced else "")),
        ("cost per turn", lambda r: usd(r.cost_usd / r.turns) if r.turns else "-"),
        ("errors", lambda r: f"{r.errors} ({percent(r.errors, r.calls)})"),
        ("fallbacks", lambda r: f"{r.fallbacks} ({percent(r.fallbacks, r.calls)})"),
        ("👍", lambda r: short_rating(r.ratings_up, r.ratings)),
    )
    for name, figure in figures:
        rows.append(
            (name, figure(b) if b is not None else "-", figure(a) if a is not None else "-")
        )
    rows.extend(judged)
    return "\n".join(lines + _side_by_side(rows))


def _side_by_side(rows: list[tuple[str, str, str]]) -> list[str]:
    width = max(len(row[0]) for row in rows)
    middle = max(len(row[1]) for row in rows)
    return [f"{name:<{width}}  {left:<{middle}}  {right}".rstrip() for name, left, right in rows]
