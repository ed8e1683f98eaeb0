"""The `mlx:` provider: a model folder on this machine, run by a registered local runner.

    llm = LocalProvider(model="qwen2.5-0.5b", model_path=settings.mlx_model_path)
    reply = await llm.complete([user("Hello")], max_tokens=64)
    async for chunk in llm.stream([user("Hello")]):
        ...

Runners are looked up by name (`register_runner`, `get_runner`); "mlx" (mlx-lm) is the default.
A runner only knows how to load a folder and generate synchronously; this module adds everything
the other providers offer: lazy shared loading, generation off the event loop, streaming,
cancellation, timeouts, usage, structured output and the error mapping of `bot.llm.errors`.

How a call runs: the model's owner thread (see `local_runners.pool`) runs the whole generation
loop and hands each step to the event loop with `loop.call_soon_threadsafe` into an
`asyncio.Queue`. Cancelling the awaiting task, closing the stream, or a timeout sets a
`threading.Event` that the loop checks between tokens, so the thread stops within one token.
Generations of one model run one after the other on that thread (mlx needs it); a second request
waits its turn, and its timeout counts the wait.

`timeout` bounds the wait for the whole reply in `complete` and the wait for each next piece in
`stream` (like an HTTP read timeout); loading the model on first use is not counted.

Errors: a folder that is not a model is a configuration mistake (`ModelSpecError`, naming
MLX_MODEL_PATH). A runner that crashes while loading or generating is the local equivalent of a
5xx, `ProviderServerError`: retryable, so a fallback chain moves on to the next model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path

from pydantic import BaseModel

from bot.llm.errors import LLMError, ProviderError, ProviderServerError, ProviderTimeout
from bot.llm.local_runners.base import GenerationStep, LocalModel, LocalRunner
from bot.llm.local_runners.pool import ModelPool, PooledModel
from bot.llm.specs import ModelSpecError
from bot.llm.structured import complete_structured
from bot.llm.types import Attempt, ChatMessage, LLMResponse, StreamChunk, Usage

__all__ = [
    "GenerationStep",
    "LocalModel",
    "LocalProvider",
    "LocalRunner",
    "RunnerFactory",
    "get_runner",
    "register_runner",
    "registered_runners",
    "unregister_runner",
]

log = logging.getLogger(__name__)

PROVIDER = "mlx"
PATH_VARIABLE = "MLX_MODEL_PATH"

RunnerFactory = Callable[[], LocalRunner]


# --- runner registry -------------------------------------------------------------------------


def _mlx_lm_runner() -> LocalRunner:
    # Imported on demand so that the bot (and this module) work without the local extra.
    from bot.llm.local_runners.mlx_lm_runner import MlxLmRunner

    return MlxLmRunner()


_RUNNERS: dict[str, RunnerFactory] = {"mlx": _mlx_lm_runner}
_POOL = ModelPool()


def register_runner(name: str, factory: RunnerFactory, *, replace: bool = False) -> None:
    """Make `factory()` the runner called `name`.

    Registering a taken name is an error unless `replace=True`; replacing forgets the models the
    old runner loaded (providers already holding one keep it until they close).
    """
    if not name:
        raise ValueError("a runner needs a name")
    if name in _RUNNERS and not replace:
        raise ValueError(f"a local runner named {name!r} is already registered")
    _RUNNERS[name] = factory
    _POOL.evict(name)


def unregister_runner(name: str) -> None:
    """Remove a runner (tests that register their own clean up with this)."""
    _RUNNERS.pop(name, None)
    _POOL.evict(name)


def registered_runners() -> list[str]:
    return sorted(_RUNNERS)


def get_runner(name: str = "mlx") -> LocalRunner:
    """A fresh runner of that name; an unknown name lists the registered ones."""
    return _factory(name)()


def _factory(name: str) -> RunnerFactory:
    try:
        return _RUNNERS[name]
    except KeyError:
        raise ModelSpecError(
            f"unknown local runner {name!r}; registered runners: {', '.join(registered_runners())}"
        ) from None


# --- the provider ----------------------------------------------------------------------------


class _End:
    """Queue marker: the generation loop finished normally."""


_END = _End()

QueueItem = GenerationStep | _End | Exception


class LocalProvider:
    """An `LLMProvider` for a local model folder (`mlx:<model>` specs).

    The folder must exist when the provider is built (a missing folder is a start-up error that
    names MLX_MODEL_PATH); it is loaded on the first call and shared with every other provider
    of the same folder and runner.
    """

    provider = PROVIDER

    def __init__(
        self,
        model: str,
        model_path: str | Path | None,
        *,
        runner: str = "mlx",
        timeout: float | None = None,
        max_tokens: int = 512,
    ) -> None:
        self.model = model
        self.model_path = _checked_folder(model, model_path)
        self.runner_name = runner
        self._factory = _factory(runner)  # unknown runner: fail now, not on the first message
        self.timeout = timeout
        self.max_tokens = max_tokens
        self._entry: PooledModel | None = None
        self._closed = False
        # Generations of this provider that have not finished, so close() can stop them.
        self._running: dict[Future[None], threading.Event] = {}
        self._lock = threading.Lock()  # _running is also updated from worker threads

    @property
    def spec(self) -> str:
        return f"{self.provider}:{self.model}"

    def __repr__(self) -> str:
        path = str(self.model_path)
        return f"LocalProvider({self.spec!r}, path={path!r}, runner={self.runner_name!r})"

    # -- LLMProvider ------------------------------------------------------------------------

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        if schema is not None:
            # No JSON mode here: schema instructions, tolerant parsing, one repair turn.
            return await complete_structured(
                lambda msgs: self.complete(
                    msgs, temperature=temperature, max_tokens=max_tokens, timeout=timeout
                ),
                messages,
                schema,
                native=False,
                spec=self.spec,
            )
        started, wall = time.perf_counter(), time.time()
        steps: list[GenerationStep] = []
        limit = self._timeout(timeout)
        await self._loaded()  # a first-use load is not part of the reply's time budget
        try:
            async with asyncio.timeout(limit):
                async for step in self._generate(messages, temperature, max_tokens, None):
                    steps.append(step)
        except TimeoutError:
            raise self._timeout_error(limit) from None
        return self._response(steps, started, wall)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        started, wall = time.perf_counter(), time.time()
        steps: list[GenerationStep] = []
        generation = self._generate(messages, temperature, max_tokens, self._timeout(timeout))
        try:
            async for step in generation:
                steps.append(step)
                if step.text:
                    yield StreamChunk(delta=step.text)
        finally:
            # Runs on break, aclose() and cancellation alike: stops the worker loop at once.
            await generation.aclose()
        yield StreamChunk(response=self._response(steps, started, wall))

    async def close(self) -> None:
        """Stop this provider's generations and release its reference to the model."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            running = list(self._running.items())
        for _, cancel in running:
            cancel.set()
        try:
            await _ended(future for future, _ in running)
        except asyncio.CancelledError:
            # Our caller gave up (a cancelled shutdown): drop the reference without waiting for
            # the model's thread, and stay cancelled.
            entry, self._entry = self._entry, None
            if entry is not None:
                _POOL.release(entry)
            raise
        entry, self._entry = self._entry, None
        if entry is not None:
            await _released(entry)

    @property
    def active_generations(self) -> int:
        """Generations started by this provider whose worker loop has not ended yet."""
        with self._lock:
            return sum(1 for future in self._running if not future.done())

    # -- internals --------------------------------------------------------------------------

    def _timeout(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    def _timeout_error(self, limit: float | None) -> ProviderTimeout:
        return ProviderTimeout(
            f"local model gave no reply within {limit:g}s", provider=self.provider, model=self.model
        )

    async def _loaded(self) -> PooledModel:
        if self._closed:
            raise ProviderError("provider is closed", provider=self.provider, model=self.model)
        if self._entry is None:  # no await before the assignment: one acquire per provider
            self._entry = _POOL.acquire(self.runner_name, self.model_path, self._factory)
        entry = self._entry
        try:
            # Shielded: one caller giving up must not cancel a load other providers share.
            await asyncio.shield(asyncio.wrap_future(entry.loaded))
        except (FileNotFoundError, ValueError, OSError) as exc:
            await self._drop(entry)
            raise ModelSpecError(
                f"{self.spec}: cannot load the model folder {str(self.model_path)!r} "
                f"(set {PATH_VARIABLE} to a model folder): {exc}"
            ) from exc
        except Exception as exc:
            await self._drop(entry)
            raise ProviderServerError(
                f"loading {str(self.model_path)!r} failed: {type(exc).__name__}: {exc}",
                provider=self.provider,
                model=self.model,
            ) from exc
        return entry

    async def _drop(self, entry: PooledModel) -> None:
        # A failed load is not cached: the next call loads afresh.
        if self._entry is entry:
            self._entry = None
            await _released(entry)

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        temperature: float | None,
        max_tokens: int | None,
        step_timeout: float | None,
    ) -> AsyncGenerator[GenerationStep, None]:
        """Steps from the owner thread, in order; stops the thread when the caller leaves."""
        entry = await self._loaded()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        cancel = threading.Event()
        limit = max_tokens if max_tokens is not None else self.max_tokens
        temp = temperature if temperature is not None else 0.0

        def post(item: QueueItem) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        def work(model: LocalModel) -> None:
            if cancel.is_set():
                return
            steps = model.generate(
                list(messages), max_tokens=limit, temperature=temp, cancel=cancel
            )
            try:
                for step in steps:
                    if cancel.is_set():
                        return
                    post(step)
            finally:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()

        def finished(future: Future[None]) -> None:
            with self._lock:
                self._running.pop(future, None)
            # Runs on the worker thread after its last post(), so the order is kept; covers a
            # failed load or a runner error as well as the normal end.
            error = None if future.cancelled() else future.exception()
            post(error if isinstance(error, Exception) else _END)

        future = entry.submit(work)
        with self._lock:
            self._running[future] = cancel
        future.add_done_callback(finished)
        try:
            while True:
                try:
                    async with asyncio.timeout(step_timeout):
                        item = await queue.get()
                except TimeoutError:
                    raise self._timeout_error(step_timeout) from None
                if isinstance(item, _End):
                    return
                if isinstance(item, Exception):
                    raise self._generation_error(item) from item
                yield item
        finally:
            cancel.set()
            future.cancel()  # a generation still queued behind another never starts

    def _generation_error(self, exc: Exception) -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        log.warning("local generation failed on %s: %s: %s", self.spec, type(exc).__name__, exc)
        return ProviderServerError(
            f"local generation failed: {type(exc).__name__}: {exc}",
            provider=self.provider,
            model=self.model,
        )

    def _response(
        self, steps: Sequence[GenerationStep], started: float, wall: float
    ) -> LLMResponse:
        latency_ms = (time.perf_counter() - started) * 1000
        prompt_tokens = next((s.prompt_tokens for s in reversed(steps) if s.prompt_tokens), 0)
        completion_tokens = next(
            (s.completion_tokens for s in reversed(steps) if s.completion_tokens), 0
        )
        finish = next((s.finish_reason for s in reversed(steps) if s.finish_reason), None)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cost=0.0)
        return LLMResponse(
            text="".join(s.text for s in steps),
            model=self.model,
            provider=self.provider,
            usage=usage,
            latency_ms=latency_ms,
            finish_reason=finish or "stop",
            attempts=[
                Attempt(
                    self.provider,
                    self.model,
                    ok=True,
                    latency_ms=latency_ms,
                    started_at=wall,
                    usage=usage,
                )
            ],
        )


async def _ended(futures: Iterable[Future[None]], limit: float = 30.0) -> None:
    """Wait (up to `limit` seconds) for generation jobs to end, however they end.

    A job's own failure or cancellation (a job still queued is cancelled) is not ours to raise;
    the caller's cancellation is, so it propagates.
    """
    waiting = [asyncio.wrap_future(future) for future in futures]
    if not waiting:
        return
    done, _ = await asyncio.wait(waiting, timeout=limit)
    for job in done:
        if not job.cancelled():
            job.exception()  # retrieved, so asyncio does not log it as never retrieved


async def _released(entry: PooledModel) -> None:
    """Release a pooled model; when it was the last user, wait for its thread to finish."""
    ended = _POOL.release(entry)
    if ended is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(ended)), 30)
        entry.owner.thread.join(timeout=1.0)


def _checked_folder(model: str, model_path: str | Path | None) -> Path:
    if model_path is None or not str(model_path).strip():
        raise ModelSpecError(
            f"mlx:{model} needs a local model folder: set {PATH_VARIABLE} "
            "(e.g. MLX_MODEL_PATH=/models/Qwen2.5-0.5B-Instruct-4bit)"
        )
    path = Path(model_path).expanduser()
    if not path.is_dir():
        raise ModelSpecError(
            f"mlx:{model}: {PATH_VARIABLE}={str(model_path)!r} is not a folder; "
            "point it at a downloaded mlx-lm model folder"
        )
    return path.resolve()
