"""Trials: the arm is sticky per user and splits by the share; the resolver puts candidate-arm
users on the candidate and marks both arms, never against a user's `/prefer` or own `/model`;
`/trial` starts, shows, stops and promotes (over a real SQLite storage)."""

from __future__ import annotations

import math

import pytest

from bot.services.admin_commands import AdminCommands
from bot.services.model_resolution import UserModelChoice
from bot.services.trials import Trials, arm_of
from bot.storage.sqlite import SQLiteStorage
from bot.storage.trial_models import TrialRow
from tests.services.test_preference import CLOUD, LOCAL, OTHER_CLOUD, resolver, settings


def _trial(share: float, trial_id: int = 1) -> TrialRow:
    return TrialRow(id=trial_id, agent="coach", candidate="x", share=share, min_calls=100)


@pytest.mark.parametrize("share", [10.0, 50.0])
def test_the_arm_splits_by_the_share_within_binomial_bounds(share: float) -> None:
    n = 4000
    on_candidate = sum(arm_of(_trial(share), user) == "candidate" for user in range(n))
    p = share / 100
    # Four standard deviations: a correct hash fails this about once in 16,000 runs.
    assert abs(on_candidate - n * p) < 4 * math.sqrt(n * p * (1 - p))


def test_the_arm_is_sticky_per_user_and_independent_between_trials() -> None:
    first = [arm_of(_trial(50.0, 1), user) for user in range(500)]
    assert first == [arm_of(_trial(50.0, 1), user) for user in range(500)]
    second = [arm_of(_trial(50.0, 2), user) for user in range(500)]
    # Another trial reshuffles the users (not the same half again).
    assert 150 < sum(a == b for a, b in zip(first, second, strict=True)) < 350


@pytest.fixture
def storage(sqlite_storage: SQLiteStorage) -> SQLiteStorage:
    return sqlite_storage


async def test_the_resolver_puts_the_candidate_arm_on_the_candidate(
    storage: SQLiteStorage,
) -> None:
    cfg = settings()
    found, config, _ = resolver(cfg)
    trials = Trials(storage.trials, ttl=60)
    found.trials = trials
    trial = await trials.start("coach", OTHER_CLOUD, share=50, min_calls=10, by="tg:1")
    anyone = UserModelChoice()
    arms: dict[str, set[int]] = {"candidate": set(), "incumbent": set()}
    for user in range(200):
        got = await found.resolve("coach", pipeline="support", user=anyone, user_id=user)
        assert got.trial_id == trial.id
        assert got.trial_arm == arm_of(trial, user)
        expected = (OTHER_CLOUD, "trial") if got.trial_arm == "candidate" else (CLOUD, "default")
        assert (got.model, got.level) == expected
        arms[got.trial_arm].add(user)
    assert arms["candidate"]
    assert arms["incumbent"]
    # Other agents are not in the trial; nor is a call without a user.
    other = await found.resolve("tutor", pipeline="learn", user=anyone, user_id=1)
    assert other.trial_id is None
    assert other.model == CLOUD
    # A local user is never put on a cloud candidate: they stay out of the trial.
    local = UserModelChoice(preference="local")
    for user in arms["candidate"]:
        got = await found.resolve("coach", pipeline="support", user=local, user_id=user)
        assert (got.model, got.trial_arm) == (LOCAL, None)
    # The user's own /model wins too.
    own = UserModelChoice(choice=CLOUD)
    user = next(iter(arms["candidate"]))
    got = await found.resolve("coach", pipeline="support", user=own, user_id=user)
    assert (got.level, got.trial_arm) == ("user", None)
    # Stopped: everyone is back on the incumbent at once on this replica.
    assert await trials.end("coach", "stopped", by="tg:1") is not None
    got = await found.resolve("coach", pipeline="support", user=anyone, user_id=user)
    assert (got.model, got.trial_id) == (CLOUD, None)
    await config.close()


async def test_trial_command_starts_shows_stops_and_promotes(storage: SQLiteStorage) -> None:
    cfg = settings()
    found, config, _ = resolver(cfg)
    trials = Trials(storage.trials, ttl=60)
    found.trials = trials

    async def no_user(user_id: int) -> UserModelChoice | None:
        return None

    admin = AdminCommands(
        settings=cfg,
        model_config=config,
        resolver=found,
        history=storage.model_history,
        load_user_model=no_user,
        trials=trials,
        ledger=storage.ledger,
    )
    reply = await admin.handle("trial", None, by="tg:1")
    assert "No trials are running" in reply.text
    for bad, says in [
        ("coach", "Usage: /trial"),
        ("nobody fast", "'nobody' is not an agent"),
        ("coach openai:m-cloud share=abc", "'share=abc' is not a number"),
        ("coach openai:m-cloud share=100", "between 0 and 100"),
        ("coach openai:m-cloud colour=red", "I don't know 'colour=red'"),
        ("coach nosuchprovider:x", "Not changed"),
    ]:
        assert says in (await admin.handle("trial", bad, by="tg:1")).text
    assert await trials.running() == {}
    started = await admin.handle("trial", f"coach {OTHER_CLOUD} share=30 min=5", by="tg:1")
    assert "Trial" in started.text
    assert "30% of coach's users" in started.text
    again = await admin.handle("trial", f"coach {OTHER_CLOUD}", by="tg:1")
    assert "already has a running trial" in again.text
    shown = await admin.handle("trial", None, by="tg:1")
    assert shown.monospace
    assert "candidate m-other on 30% of users" in shown.text
    assert "incumbent" in shown.text
    assert "errors" in shown.text
    promoted = await admin.handle("trial", "promote coach", by="tg:1 (@ann)")
    assert "promoted" in promoted.text
    assert "coach now runs on" in promoted.text
    assert await trials.running() == {}
    now = await found.resolve("coach", pipeline="support", user=UserModelChoice(), user_id=3)
    assert (now.model, now.level, now.set_by) == (OTHER_CLOUD, "override", "tg:1 (@ann)")
    # A normal /setmodel change: in the model history, undoable with /rollback.
    history = await config.history_of("coach")
    assert history
    assert history[0].new_model_id == "m-other"
    assert "no running trial" in (await admin.handle("trial", "stop coach", by="tg:1")).text
    await config.close()
