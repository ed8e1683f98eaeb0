"""Loaded local models, shared per (runner, folder), each owned by one worker thread.

A model folder is loaded once however many providers point at it (the registry builds one per
spec, but a user's `mlx:` choice and an agent default may name the same folder). Every entry has
an owner thread: the load and every generation of that model run on it, one after the other.
That is the threading rule mlx needs (its streams are bound to one thread, and it does not
promise safe concurrent evaluation on one model), so two requests at once both work: the second
one queues behind the first. Different models run on different threads in parallel.

Entries are reference counted: `acquire` by each provider, `release` by its `close()`; the last
release closes the model on its thread, lets the runner clean up that thread (mlx must destroy
its thread-local streams before the thread ends, or the process aborts at exit) and ends it.
Owner threads are daemons: one still idle when the interpreter exits does not hold it up.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bot.llm.local_runners.base import LocalModel, LocalRunner

T = TypeVar("T")

PoolKey = tuple[str, Path]

_Job = tuple[Callable[[], Any], Future[Any]]


class OwnerThread:
    """One daemon thread running submitted callables in order; `stop(cleanup)` ends it."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cleanup: Callable[[], None] | None = None
        self._stopped = False
        # Done once the thread has run its clean-up and is about to end.
        self.ended: Future[None] = Future()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if self._stopped:
            raise RuntimeError("the model's worker thread has been stopped")
        future: Future[T] = Future()
        self._jobs.put((fn, future))
        return future

    def stop(self, cleanup: Callable[[], None] | None = None) -> Future[None]:
        """Finish the queued jobs, run `cleanup` on the thread, then end it.

        Does not wait; the returned future is done when the thread is about to end.
        """
        self._stopped = True
        self._cleanup = cleanup
        self._jobs.put(None)
        return self.ended

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                result = fn()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del job, fn, future  # do not keep the last job's objects alive while idle
        try:
            if self._cleanup is not None:
                self._cleanup()
        except BaseException as exc:
            self.ended.set_exception(exc)
        else:
            self.ended.set_result(None)


@dataclass(eq=False)
class PooledModel:
    key: PoolKey
    runner: LocalRunner
    owner: OwnerThread
    loaded: Future[LocalModel]
    refs: int = 0
    closed: bool = False

    def submit(self, fn: Callable[[LocalModel], T]) -> Future[T]:
        """Run `fn(model)` on the owner thread, after any earlier work (loading included)."""
        return self.owner.submit(lambda: fn(self.loaded.result()))


class ModelPool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[PoolKey, PooledModel] = {}

    def acquire(
        self, runner_name: str, path: Path, factory: Callable[[], LocalRunner]
    ) -> PooledModel:
        """The shared entry for this folder, loading it (on its thread) on first use.

        Returns at once; await `entry.loaded` for the model. A failed load is forgotten so the
        next request tries again (after the operator fixes the folder, say).
        """
        key = (runner_name, path)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                runner = factory()
                owner = OwnerThread(f"local-{runner_name}-{path.name}")
                loaded = owner.submit(functools.partial(runner.load, path))
                entry = PooledModel(key, runner, owner, loaded)
                self._entries[key] = entry
                loaded.add_done_callback(functools.partial(self._forget_failed, entry))
            entry.refs += 1
            return entry

    def release(self, entry: PooledModel) -> Future[None] | None:
        """Drop one reference; the last one stops the owner thread.

        Returns the future of that thread's end (wait for it before the process may exit: mlx
        aborts the process when a thread is still tearing down its streams at exit), or None
        when others still use the model.
        """
        with self._lock:
            entry.refs -= 1
            if entry.refs > 0 or entry.closed:
                return None
            entry.closed = True
            if self._entries.get(entry.key) is entry:
                del self._entries[entry.key]
        return entry.owner.stop(functools.partial(_close_on_owner, entry))

    def evict(self, runner_name: str) -> None:
        """Forget entries of a runner (its factory was replaced); holders keep their reference."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == runner_name]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _forget_failed(self, entry: PooledModel, loaded: Future[LocalModel]) -> None:
        if loaded.cancelled() or loaded.exception() is not None:
            with self._lock:
                if self._entries.get(entry.key) is entry:
                    del self._entries[entry.key]


def _close_on_owner(entry: PooledModel) -> None:
    loaded = entry.loaded
    try:
        if loaded.done() and not loaded.cancelled() and loaded.exception() is None:
            loaded.result().close()
    finally:
        release_thread = getattr(entry.runner, "release_thread", None)
        if release_thread is not None:
            release_thread()
