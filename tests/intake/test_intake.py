"""The intake's contract on both backends: the SQLite file and the Redis stream (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as redis

from bot.intake import REPLY, UPDATE, Intake
from bot.intake.redis import LOCAL, RedisIntake
from bot.intake.sqlite import SqliteIntake
from tests.fakes.ports import free_port

MakeIntake = Callable[[], Awaitable[Intake]]


@pytest.fixture(params=["sqlite", "redis"])
async def make_intake(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeIntake]:
    """A factory of intakes over the same storage: each call is a new process's."""
    opened: list[Intake] = []
    prefix = f"test-intake-{uuid.uuid4().hex[:8]}"

    async def make() -> Intake:
        local = SqliteIntake(str(tmp_path / f"intake-{len(opened)}.db"))
        intake: Intake = local
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            intake = RedisIntake.from_url(url, bot_id=1, fallback=local, prefix=prefix)
        else:
            local.path = str(tmp_path / "intake.db")
        await intake.start()
        opened.append(intake)
        return intake

    yield make
    for intake in opened:
        await intake.close()


async def test_what_is_stored_and_not_done_is_taken_up_by_the_next_run_in_update_order(
    make_intake: MakeIntake,
) -> None:
    first = await make_intake()
    keys = await first.put([(12, 5, '{"update_id": 12}'), (11, 6, '{"update_id": 11}')], offset=13)
    assert all(keys)
    more = await first.put([(13, 5, '{"update_id": 13}')], offset=14)
    await first.done(keys[0] or "")
    reply = await first.defer_reply(more[0], 13, 5, '{"chat": 5}')
    assert await first.offset() == 14
    await first.close()

    second = await make_intake()
    open_entries = await second.reclaim(everything=True)
    assert [(e.update_id, e.kind, e.chat_id) for e in open_entries] == [
        (11, UPDATE, 6),
        (13, REPLY, 5),  # update 13 itself was closed by its stored reply
    ]
    assert open_entries[1].key == reply
    assert open_entries[1].body == '{"chat": 5}'
    assert all(e.attempts == 1 for e in open_entries)
    assert await second.offset() == 14


async def test_an_update_stored_twice_is_taken_once(make_intake: MakeIntake) -> None:
    intake = await make_intake()
    (key,) = await intake.put([(7, 1, "{}")], offset=None)
    await intake.done(key or "")
    # A webhook re-delivery after the 200 was lost: known, even though answered already.
    again = await intake.put([(7, 1, "{}"), (8, 1, "{}")], offset=None)
    assert again[0] is None
    assert again[1] is not None


async def test_a_live_replicas_entries_are_not_taken_a_dead_ones_are(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = f"test-intake-{uuid.uuid4().hex[:8]}"

    def replica(name: str) -> RedisIntake:
        local = SqliteIntake(str(tmp_path / f"{name}.db"))
        return RedisIntake.from_url(redis_url, bot_id=1, fallback=local, prefix=prefix, lease=60)

    a, b = replica("a"), replica("b")
    await a.start()
    await b.start()
    try:
        (key,) = await a.put([(1, 9, "{}")], offset=None)
        assert await b.reclaim() == []  # a is alive: its update is in flight there
        assert await a.reclaim() == []  # and never its own
        await a.close()  # a stops; its lease goes with it
        taken = await b.reclaim()
        assert [e.key for e in taken] == [key]
        assert await b.reclaim() == []  # b holds it now
    finally:
        await b.close()


async def test_without_redis_updates_go_to_the_file_and_are_taken_up_from_there(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "intake.db")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    intake = RedisIntake.from_url(dead, bot_id=1, fallback=SqliteIntake(path))
    await intake.start()
    (key,) = await intake.put([(3, 2, '{"update_id": 3}')], offset=4)
    assert key is not None
    assert key.startswith(LOCAL)
    assert await intake.offset() == 4
    await intake.close()

    again = RedisIntake.from_url(dead, bot_id=1, fallback=SqliteIntake(path))
    await again.start()
    try:
        taken = await again.reclaim(everything=True)
        assert [(e.key, e.update_id) for e in taken] == [(key, 3)]
        await again.done(taken[0].key)
    finally:
        await again.close()
    final = SqliteIntake(path)
    await final.start()
    assert await final.reclaim() == []
    await final.close()


async def test_redis_keys_are_the_bots_own(redis_url: str, tmp_path: Path) -> None:
    prefix = f"test-intake-{uuid.uuid4().hex[:8]}"
    intake = RedisIntake.from_url(
        redis_url, bot_id=77, fallback=SqliteIntake(str(tmp_path / "i.db")), prefix=prefix
    )
    await intake.start()
    try:
        await intake.put([(1, 1, "{}")], offset=2)
        client = redis.from_url(redis_url)
        keys = sorted(k.decode() for k in await client.keys(f"{prefix}:*"))
        await client.aclose()
        assert keys
        assert all(k.startswith(f"{prefix}:77:") for k in keys)
    finally:
        await intake.close()
