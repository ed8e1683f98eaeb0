"""`StoredCopy`: a process's copy of something read from storage, fresh within a TTL.

    running = StoredCopy(load_running_trials, {}, what="the running trials", ttl=60)
    trials = await running.get()   # read at most once per ttl; the last copy while storage fails
    running.invalidate()           # after a local change, or another replica's (Redis)

One read at a time (callers that wait for it get its result); a failed read keeps the last copy
and is tried again after RETRY_BACKOFF rather than on every call. Shared by the trials and the
post-completion tasks, which both follow the model configuration's rhythm (MODEL_CONFIG_TTL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoredCopy(Generic[T]):
    RETRY_BACKOFF = 5.0

    def __init__(
        self,
        load: Callable[[], Awaitable[T]],
        empty: T,
        *,
        what: str,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._value = empty
        self._what = what
        self.ttl = ttl
        self._clock = clock
        self._expires_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> T:
        expires = self._expires_at
        if expires is None or self._clock() >= expires:
            await self._refresh()
        return self._value

    def peek(self) -> T:
        """The copy as it is, without reading."""
        return self._value

    def invalidate(self) -> None:
        self._expires_at = None

    async def _refresh(self) -> None:
        async with self._lock:
            expires = self._expires_at
            if expires is not None and self._clock() < expires:
                return  # another caller refreshed while this one waited
            try:
                value = await self._load()
            except Exception as exc:
                self._expires_at = self._clock() + self.RETRY_BACKOFF
                log.warning("could not read %s, keeping the last copy: %s", self._what, exc)
                return
            self._value = value
            self._expires_at = self._clock() + self.ttl
