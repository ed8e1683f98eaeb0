"""StoredCopy: read at most once per TTL, one read for callers that wait, the last copy (and a
back-off) while storage fails."""

from __future__ import annotations

import asyncio

from bot.services.stored_copy import StoredCopy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_reads_once_per_ttl_and_again_when_invalidated() -> None:
    clock, reads = Clock(), []

    async def load() -> int:
        reads.append(clock.now)
        return len(reads)

    copy = StoredCopy(load, 0, what="the numbers", ttl=60, clock=clock)
    assert await copy.get() == 1
    clock.now = 59.9
    assert await copy.get() == 1
    clock.now = 60.0
    assert await copy.get() == 2
    copy.invalidate()
    assert await copy.get() == 3
    assert reads == [0.0, 60.0, 60.0]


async def test_callers_that_wait_share_one_read() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    reads = 0

    async def load() -> str:
        nonlocal reads
        reads += 1
        started.set()
        await release.wait()
        return "fresh"

    copy = StoredCopy(load, "", what="the words", ttl=60)
    first = asyncio.create_task(copy.get())
    await started.wait()
    others = [asyncio.create_task(copy.get()) for _ in range(5)]
    release.set()
    assert await asyncio.gather(first, *others) == ["fresh"] * 6
    assert reads == 1


async def test_a_failed_read_keeps_the_last_copy_and_backs_off() -> None:
    clock, fail, reads = Clock(), False, 0

    async def load() -> dict[str, int]:
        nonlocal reads
        reads += 1
        if fail:
            raise OSError("storage down")
        return {"coach": reads}

    copy = StoredCopy(load, {}, what="the trials", ttl=60, clock=clock)
    assert await copy.get() == {"coach": 1}
    fail, clock.now = True, 61.0
    assert await copy.get() == {"coach": 1}  # the stale copy, not an error
    clock.now = 61.0 + StoredCopy.RETRY_BACKOFF - 0.1
    assert await copy.get() == {"coach": 1}
    assert reads == 2  # no read on every call while storage is down
    fail, clock.now = False, 61.0 + StoredCopy.RETRY_BACKOFF
    assert await copy.get() == {"coach": 3}
    assert copy.peek() == {"coach": 3}
