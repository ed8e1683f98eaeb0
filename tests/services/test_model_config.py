"""The override cache: TTL, single-flight refresh, stale-on-failure, write-through."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.services.model_config import ModelConfigService, UnknownAgentError
from tests.services.fakes import FakeClock, FakeConfigRepo, FakeHistoryRepo, FakeProviders


def make(
    repo: FakeConfigRepo | None = None, *, enabled: bool = True, ttl: float = 60.0
) -> tuple[ModelConfigService, FakeConfigRepo, FakeHistoryRepo, FakeClock, FakeProviders]:
    repo = repo or FakeConfigRepo()
    history = FakeHistoryRepo()
    clock = FakeClock()
    providers = FakeProviders()
    service = ModelConfigService(
        repo,
        history,
        providers=providers,
        overrides_enabled=enabled,
        ttl=ttl,
        clock=clock,
        retry_backoff=5.0,
    )
    return service, repo, history, clock, providers


async def test_no_database_read_within_the_ttl_and_exactly_one_after() -> None:
    service, repo, _, clock, _ = make()
    repo.put("strategist", "anthropic/claude-sonnet-4.5")

    assert await service.get_override("strategist") == "anthropic/claude-sonnet-4.5"
    assert repo.reads == 1
    for _ in range(50):
        clock.advance(1.0)
        await service.get_override("strategist")
        await service.get_all()
    assert clock.now - 1000.0 == 50.0
    assert repo.reads == 1

    repo.put("strategist", "openai/gpt-4o")  # changed behind our back (another replica)
    clock.advance(10.0)  # now past the 60 s TTL
    assert await service.get_override("strategist") == "openai/gpt-4o"
    assert repo.reads == 2
    await service.get_override("coach")
    assert repo.reads == 2
    await service.close()


async def test_one_hundred_concurrent_lookups_after_expiry_make_one_read() -> None:
    service, repo, _, clock, _ = make()
    repo.put("coach", "x/one")
    await service.get_all()
    repo.put("coach", "x/two")
    clock.advance(61)
    repo.gate = asyncio.Event()

    lookups = [asyncio.create_task(service.get_override("coach")) for _ in range(100)]
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in lookups)  # all wait for the single refresh
    repo.gate.set()
    results = await asyncio.gather(*lookups)

    assert results == ["x/two"] * 100
    assert repo.reads == 2  # the initial load and exactly one refresh
    await service.close()


async def test_a_failing_refresh_keeps_the_stale_overrides_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, repo, _, clock, _ = make()
    repo.put("strategist", "x/stale")
    await service.get_all()
    repo.fail = True
    clock.advance(61)

    with caplog.at_level(logging.WARNING):
        assert await service.get_override("strategist") == "x/stale"
    assert repo.reads == 2
    assert "keeping the 1 cached assignment" in caplog.text
    # Within the backoff no message pays for another failing query.
    for _ in range(20):
        assert await service.get_override("strategist") == "x/stale"
    assert repo.reads == 2
    assert service.failed_reads == 1

    repo.fail = False
    repo.put("strategist", "x/fresh")
    clock.advance(5.0)
    assert await service.get_override("strategist") == "x/fresh"
    assert repo.reads == 3
    await service.close()


async def test_first_load_failing_means_no_overrides_not_a_failed_message() -> None:
    repo = FakeConfigRepo()
    repo.put("coach", "x/y")
    repo.fail = True
    service, *_ = make(repo)
    assert await service.get_override("coach") is None
    assert await service.resolve_override("coach") is None
    await service.close()


async def test_set_override_is_visible_at_once_and_recorded() -> None:
    service, repo, history, _clock, _ = make()
    assert await service.get_override("strategist") is None  # cache now fresh for 60 s
    published: list[str] = []

    async def publish(agent: str) -> None:
        published.append(agent)

    service.add_change_listener(publish)
    await service.set_override("strategist", "openrouter:anthropic/claude-sonnet-4.5", "admin:7")

    assert await service.get_override("strategist") == "anthropic/claude-sonnet-4.5"
    assert repo.rows["strategist"].model_id == "anthropic/claude-sonnet-4.5"
    assert published == ["strategist"]
    [change] = history.changes
    assert (change.action, change.old_model_id, change.new_model_id, change.changed_by) == (
        "set",
        None,
        "anthropic/claude-sonnet-4.5",
        "admin:7",
    )

    await service.set_override("strategist", "openai/gpt-4o", "admin:7")
    assert history.changes[-1].old_model_id == "anthropic/claude-sonnet-4.5"

    reset = await service.reset_override("strategist", "admin:8")
    assert (reset.changed, reset.previous_model_id, reset.history_written) == (
        True,
        "openai/gpt-4o",
        True,
    )
    assert reset.replicas_notified is True
    assert await service.get_override("strategist") is None
    assert history.changes[-1].action == "reset"
    assert history.changes[-1].old_model_id == "openai/gpt-4o"
    again = await service.reset_override("strategist", "admin:8")
    assert again.changed is False
    assert len(history.changes) == 3
    assert published == ["strategist"] * 3  # nothing changed the last time: nothing to tell
    await service.close()


async def test_a_failing_history_write_after_a_set_is_reported_and_replicas_still_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, repo, history, _clock, _ = make()
    published: list[str] = []
    service.add_change_listener(published.append)
    history.fail = True
    with caplog.at_level(logging.ERROR):
        change = await service.set_override("coach", "x/new", "admin:7")
    # The override is stored and live, and the result says the history line is missing.
    assert repo.rows["coach"].model_id == "x/new"
    assert await service.get_override("coach") == "x/new"
    assert (change.changed, change.history_written, change.replicas_notified) == (
        True,
        False,
        True,
    )
    assert change.row is not None
    assert change.row.model_id == "x/new"
    assert published == ["coach"]
    [record] = [
        r for r in caplog.records if "history line" in r.getMessage() and r.levelno >= logging.ERROR
    ]
    assert record.levelno == logging.ERROR
    assert "coach" in record.getMessage()
    assert "x/new" in record.getMessage()
    assert "history table is down" in record.getMessage()
    await service.close()


async def test_a_failing_history_write_after_a_reset_is_reported_and_replicas_still_told() -> None:
    service, repo, history, _clock, _ = make()
    published: list[str] = []
    service.add_change_listener(published.append)
    await service.set_override("coach", "x/new", "admin:7")
    history.fail = True
    change = await service.reset_override("coach", "admin:7")
    assert not repo.rows["coach"].is_active
    assert await service.get_override("coach") is None
    assert (change.changed, change.previous_model_id, change.history_written) == (
        True,
        "x/new",
        False,
    )
    assert published == ["coach", "coach"]
    await service.close()


async def test_a_reset_is_a_change_when_the_row_was_active_whatever_deactivate_answers() -> None:
    service, repo, history, _clock, _ = make()
    published: list[str] = []
    service.add_change_listener(published.append)
    await service.set_override("coach", "x/new", "admin:7")
    repo.deactivated_by_another = True  # a concurrent reset got True from the repository
    change = await service.reset_override("coach", "admin:8")
    assert change.changed is True
    assert change.previous_model_id == "x/new"
    assert await service.get_override("coach") is None
    # The call that got True writes the one history line; this one adds none.
    assert [c.action for c in history.changes] == ["set"]
    assert change.history_written is True
    assert published == ["coach", "coach"]
    await service.close()


async def test_a_listener_that_could_not_pass_the_change_on_is_reported() -> None:
    service, *_ = make()
    assert (await service.set_override("coach", "x/a", "admin")).replicas_notified is None

    async def publish_failed(agent: str) -> bool:
        return False  # what OverrideEvents.publish answers when Redis is down

    service.add_change_listener(publish_failed)
    assert (await service.set_override("coach", "x/b", "admin")).replicas_notified is False

    await service.close()

    def broken(agent: str) -> None:
        raise RuntimeError("listener bug")

    service, *_ = make()
    service.add_change_listener(broken)
    assert (await service.set_override("coach", "x/c", "admin")).replicas_notified is False
    assert await service.get_override("coach") == "x/c"
    await service.close()


async def test_set_override_stays_visible_when_the_next_refresh_fails() -> None:
    service, repo, _, _, _ = make()
    await service.get_all()
    await service.set_override("coach", "x/new", "admin")
    repo.fail = True
    assert await service.get_override("coach") == "x/new"
    await service.close()


async def blocked_refresh(
    service: ModelConfigService, repo: FakeConfigRepo
) -> asyncio.Task[str | None]:
    """A lookup on an expired cache whose refresh has taken its snapshot and is now blocked."""
    repo.gate = asyncio.Event()
    lookup = asyncio.create_task(service.get_override("coach"))
    reads = repo.reads
    for _ in range(10):
        await asyncio.sleep(0)
        if repo.reads > reads:
            break
    assert repo.reads == reads + 1, "the refresh should be reading now"
    return lookup


async def test_a_refresh_in_flight_during_a_write_does_not_hide_the_write() -> None:
    service, repo, _, clock, _ = make()
    await service.get_all()
    clock.advance(61)
    stale_lookup = await blocked_refresh(service, repo)  # its snapshot has no override
    await service.set_override("coach", "x/new", "admin")
    gate, repo.gate = repo.gate, None
    assert gate is not None
    gate.set()
    await stale_lookup
    # The re-read after the write fails: the local write must survive the older rows that
    # landed in between, for the whole backoff.
    repo.fail = True
    assert await service.get_override("coach") == "x/new"
    assert service.failed_reads == 1
    for _ in range(5):
        clock.advance(1.0)
        assert await service.get_override("coach") == "x/new"
    await service.close()


async def test_the_next_lookup_after_a_write_does_not_join_a_refresh_started_before_it() -> None:
    service, repo, _, clock, _ = make()
    await service.get_all()
    clock.advance(61)
    stale_lookup = await blocked_refresh(service, repo)
    await service.set_override("coach", "x/new", "admin")  # the admin is told: effective now
    next_message = asyncio.create_task(service.get_override("coach"))
    await asyncio.sleep(0)
    assert repo.gate is not None
    repo.gate.set()
    await stale_lookup
    assert await next_message == "x/new"
    # It read the table itself (a refresh started after the write), and that read counts.
    assert repo.reads == 3
    repo.gate = None
    assert await service.get_override("coach") == "x/new"
    assert repo.reads == 3  # fresh now: no further read within the TTL
    await service.close()


async def test_an_invalidation_during_a_refresh_is_not_undone_by_that_refresh() -> None:
    # Another replica changed the table while our refresh was reading it; Redis tells us.
    service, repo, _, clock, _ = make()
    repo.put("coach", "x/old")
    await service.get_all()
    clock.advance(61)
    stale_lookup = await blocked_refresh(service, repo)  # snapshot: x/old
    repo.put("coach", "x/other-replica")
    service.invalidate()
    next_message = asyncio.create_task(service.get_override("coach"))
    await asyncio.sleep(0)
    assert repo.gate is not None
    repo.gate.set()
    await stale_lookup
    assert await next_message == "x/other-replica"
    repo.gate = None
    # The older rows did not become the fresh copy either.
    assert await service.get_override("coach") == "x/other-replica"
    assert repo.reads == 3
    await service.close()


async def test_a_superseded_refresh_that_fails_sets_no_backoff_for_the_newer_one() -> None:
    service, repo, _, clock, _ = make()
    await service.get_all()
    clock.advance(61)
    stale_lookup = await blocked_refresh(service, repo)
    repo.fail = True  # the old read fails when it ends
    repo.put("coach", "x/other-replica")
    service.invalidate()
    assert repo.gate is not None
    repo.gate.set()
    await stale_lookup
    repo.gate = None
    repo.fail = False
    # The failure belonged to a read nobody needs any more: the next lookup reads at once.
    assert await service.get_override("coach") == "x/other-replica"
    await service.close()


async def test_close_cancels_every_refresh_in_flight() -> None:
    service, repo, _, clock, _ = make()
    await service.get_all()
    clock.advance(61)
    first = await blocked_refresh(service, repo)
    service.invalidate()
    second = asyncio.create_task(service.get_override("coach"))
    for _ in range(10):
        await asyncio.sleep(0)
    assert repo.reads == 3  # two reads blocked at once: the old one and the current one
    await asyncio.wait_for(service.close(), 1.0)
    # The waiting lookups are not left hanging on a cancelled refresh: they answer from memory.
    assert await asyncio.wait_for(first, 1.0) is None
    assert await asyncio.wait_for(second, 1.0) is None


async def test_unknown_agents_are_refused_with_the_list() -> None:
    service, *_ = make()
    with pytest.raises(UnknownAgentError, match="strategist") as info:
        await service.set_override("stratgist", "x/y", "admin")
    assert "'stratgist'" in str(info.value)
    with pytest.raises(UnknownAgentError):
        await service.reset_override("nobody", "admin")
    with pytest.raises(ValueError, match="empty"):
        await service.set_override("coach", "  ", "admin")
    await service.close()


async def test_one_provider_per_override_model_id() -> None:
    service, repo, _, _, providers = make()
    repo.put("coach", "x/shared")
    repo.put("tutor", "x/shared")
    repo.put("trainer", "x/other")
    coach = await service.get_provider_for_agent("coach")
    tutor = await service.get_provider_for_agent("tutor")
    again = await service.get_provider_for_agent("coach")
    trainer = await service.get_provider_for_agent("trainer")
    assert coach is tutor is again
    assert trainer is not coach
    assert coach is not None
    assert coach.spec == "openrouter:x/shared"
    assert providers.built == [("openrouter:x/shared", None), ("openrouter:x/other", None)]
    assert await service.get_provider_for_agent("summarizer") is None
    await service.close()


async def test_without_the_shared_key_overrides_are_ignored_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, repo, *_ = make(enabled=False)
    repo.put("coach", "x/y")
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            assert await service.get_provider_for_agent("coach") is None
    warnings = [r for r in caplog.records if "OPENROUTER_API_KEY" in r.getMessage()]
    assert len(warnings) == 1
    # The stored override is still reported (so /models can say it is ignored).
    assert await service.get_override("coach") == "x/y"
    await service.close()


async def test_invalidate_forces_one_read_and_a_cancelled_waiter_does_not_cancel_the_refresh() -> (
    None
):
    service, repo, _, _, _ = make()
    await service.get_all()
    service.invalidate()
    repo.gate = asyncio.Event()
    impatient = asyncio.create_task(service.get_override("coach"))
    patient = asyncio.create_task(service.get_override("coach"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    repo.gate.set()
    assert await patient is None
    assert repo.reads == 2
    await service.close()


async def test_ttl_comes_from_settings() -> None:
    from bot.config import Settings

    settings = Settings(model_config_ttl=5, openrouter_api_key="sk-or-test")
    service = ModelConfigService.from_settings(settings, FakeConfigRepo(), None, FakeProviders())
    assert service.ttl == 5
    assert service.overrides_enabled
    assert ModelConfigService.CACHE_TTL == 60.0
    await service.close()


async def test_every_change_moves_the_configuration_version_and_other_replicas_read_it() -> None:
    from bot.llm.specs import parse_spec
    from bot.services.model_catalog import CatalogEntry
    from tests.services.fakes import FakeCatalogRepo

    repo, history, catalog = FakeConfigRepo(), FakeHistoryRepo(), FakeCatalogRepo()
    clock = FakeClock()
    service = ModelConfigService(repo, history, catalog=catalog, ttl=60, clock=clock)
    told: list[str] = []
    service.add_change_listener(told.append)
    assert (await service.snapshot()).version == 0
    entry = CatalogEntry("fast", parse_spec("openai:x"))
    added = await service.save_entry(entry, "tg:1", previous=None)
    assert (added.action, added.version, service.version) == ("add", 1, 1)
    assert (await service.set_override("role:chat", "fast", "tg:1")).version == 2
    line = await service.rollback_candidate("role:chat")
    assert line is not None
    undone = await service.rollback("role:chat", line, "tg:2")
    assert (undone.changed, undone.row, undone.version) == (True, None, 3)
    assert await service.rollback_candidate("role:chat") is None  # nothing left to undo
    removed = await service.remove_entry(entry, "tg:1")
    assert removed.version == service.version == 4
    assert told == ["catalog:fast", "role:chat", "role:chat", "catalog:fast"]
    assert [(c.agent_name, c.action, c.reverts_id) for c in history.changes] == [
        ("catalog:fast", "add", None),
        ("role:chat", "set", None),
        ("role:chat", "rollback", 2),
        ("catalog:fast", "remove", None),
    ]

    # Another replica's change: read with the next refresh, version included.
    await history.append(history.changes[0].model_copy(update={"idempotency_key": "x"}))
    service.invalidate()
    assert (await service.snapshot()).version == 5
    # A change whose history line cannot be written leaves the version where it was.
    history.fail = True
    change = await service.set_override("coach", "x/y", "tg:1")
    assert (change.history_written, change.version) == (False, 5)
    await service.close()


async def test_unknown_targets_roles_and_pipelines_are_refused() -> None:
    service, *_ = make()
    for target, message in [
        ("role:writer", "unknown role 'writer'"),
        ("pipeline:chat", "unknown pipeline 'chat'"),
        ("everything", "unknown target 'everything'"),
    ]:
        with pytest.raises(UnknownAgentError, match=message):
            await service.set_override(target, "x/y", "admin")
    await service.close()
