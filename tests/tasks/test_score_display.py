"""Judge scores where admins compare models: `/trial`'s judge row per arm and the change
report's row next to the 👍, over real SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from bot.observatory.reports import format_report, judge_rows
from bot.services.trial_commands import TrialCommands
from bot.services.trials import Trials
from bot.storage.models import ModelConfigChange, utcnow
from bot.storage.sqlite import SQLiteStorage
from bot.storage.task_models import ScoreStats, TaskRow
from tests.storage.test_ledger_contract import call
from tests.storage.test_tasks_contract import result


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SQLiteStorage]:
    store = SQLiteStorage(str(tmp_path / "bot.db"))
    await store.connect()
    yield store
    await store.close()


async def _no_check(model: str) -> object:
    raise AssertionError("not asked")


async def test_trial_shows_each_arms_judge_score(storage: SQLiteStorage) -> None:
    trials = Trials(storage.trials)
    trial = await trials.start("coach", "fast", share=50, min_calls=10, by="tg:1")
    await storage.tasks.add(TaskRow(name="judge", model="fast", kind="score", instruction="x"))
    now = utcnow()
    arms = ["incumbent", "candidate", "candidate", "incumbent"]
    await storage.ledger.add_many(
        [
            replace(call(n, turn=n, at=now), trial_id=trial.id, trial_arm=arm)
            for n, arm in enumerate(arms, 1)
        ]
    )
    for n, score in enumerate((0.2, 0.9, 0.7, 0.4), 1):
        await storage.tasks.add_result(result("judge", n, chat=7, user=7, score=score))
    commands = TrialCommands(
        trials,
        storage.ledger,
        _no_check,  # type: ignore[arg-type]
        _no_check,  # type: ignore[arg-type]
        scores=storage.tasks,
    )
    shown = await commands.show()
    incumbent = ScoreStats("judge", "coach", "incumbent", 2, 0.3, (0.04 + 0.16) / 2)
    candidate = ScoreStats("judge", "coach", "candidate", 2, 0.8, (0.81 + 0.49) / 2)
    (line,) = [text for text in shown.splitlines() if text.startswith("  judge judge")]
    assert line.split() == ["judge", "judge", *incumbent.text().split(), *candidate.text().split()]


def test_the_change_report_puts_the_judge_next_to_the_thumbs() -> None:
    before = [ScoreStats("judge", "coach", "m-a", 4, 0.5, 0.3)]
    after = [
        ScoreStats("judge", "coach", "m-b", 2, 0.9, 0.82),
        ScoreStats("judge", "coach", "m-c", 2, 0.7, 0.5),
    ]
    rows = judge_rows(before, after)
    merged = ScoreStats("judge", "", "", 4, 0.8, 0.66)
    assert rows == [("judge judge", before[0].text(), merged.text())]
    change = ModelConfigChange(
        id=5,
        agent_name="coach",
        action="set",
        old_model_id="m-a",
        new_model_id="m-b",
        changed_by="tg:1",
        changed_at=utcnow() - timedelta(hours=1),
    )
    text = format_report(change, "coach", [], [], rows)
    lines = text.splitlines()
    thumbs = next(i for i, line in enumerate(lines) if line.startswith("👍"))
    assert lines[thumbs + 1].split()[:2] == ["judge", "judge"]
    assert merged.text() in lines[thumbs + 1]
