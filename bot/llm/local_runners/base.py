"""The contract between the local provider and a runner.

A runner turns a model folder into a `LocalModel`; a `LocalModel` turns chat messages into a
stream of `GenerationStep`s. Both are plain synchronous code: the provider calls them on the one
worker thread that owns the model (see `pool`), never on the event loop, so a runner may block
and may rely on thread-bound state (mlx streams are bound to the thread that made them).

    class EchoRunner:
        def load(self, path: Path) -> LocalModel:
            return EchoModel()

    class EchoModel:
        def generate(self, messages, *, max_tokens, temperature, cancel):
            yield GenerationStep(messages[-1].content, finish_reason="stop")

        def close(self) -> None:
            pass

    register_runner("echo", EchoRunner)      # bot.llm.local
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.llm.types import ChatMessage

# How a clone of this repository installs the local-model extra (README: the venv's own pip, in
# the clone's folder): `pip install -e '.[local]'` with another pip installs it elsewhere.
LOCAL_EXTRA_INSTALL = ".venv/bin/pip install -e '.[local]'"


@dataclass(frozen=True, slots=True)
class GenerationStep:
    """A piece of generated text and the counts so far.

    `prompt_tokens` and `completion_tokens` are running totals (the last step's values win);
    `finish_reason` ("stop" or "length") is set on the last step. A runner that cannot count
    leaves them at None and the response reports 0.
    """

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class LocalModel(Protocol):
    """A loaded model. Called from its owner thread only, one generation at a time."""

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> Iterator[GenerationStep]:
        """Yield steps until done. Check `cancel` between tokens and return promptly once set."""
        ...

    def close(self) -> None:
        """Drop the weights (the provider stops using this object afterwards)."""
        ...


class LocalRunner(Protocol):
    """Loads a model folder. Raise `FileNotFoundError`/`ValueError` for a folder it cannot use.

    A runner may also define `release_thread() -> None`: it is called on the model's owner
    thread just before that thread ends (after the last `close()`), to free thread-bound state.
    """

    def load(self, path: Path) -> LocalModel: ...
