"""The default local runner: mlx-lm (`pip install 'coach-bot[local]'`; on Linux the mlx cpu build).

mlx is imported when a model is loaded, not when this module is, so the bot runs without the
local extra until someone actually configures an `mlx:` model.

Loading and every generation of one model happen on the same worker thread (the pool's owner
thread): mlx streams are bound to the thread that created them, and mlx does not promise that two
threads may evaluate on one model at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bot.llm.local_runners.base import LOCAL_EXTRA_INSTALL, GenerationStep, LocalModel
from bot.llm.types import ChatMessage


class MlxLmRunner:
    """Loads a folder in the Hugging Face layout (config.json, *.safetensors, tokenizer files)."""

    def load(self, path: Path) -> LocalModel:
        try:
            import mlx_lm
        except ImportError as exc:
            raise ValueError(
                f"mlx: models need the local extra: {LOCAL_EXTRA_INSTALL} in the clone "
                f"(mlx-lm is not importable: {exc})"
            ) from exc
        # `mlx_lm.load` downloads from the Hugging Face Hub when the path does not exist; the
        # caller has checked that it does, and a missing file inside it raises here instead.
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; is it an mlx-lm model folder?")
        loaded = mlx_lm.load(str(path))
        return MlxLmModel(loaded[0], loaded[1])

    def release_thread(self) -> None:
        """Destroy the mlx streams of the ending owner thread.

        A thread that ends with live mlx streams makes the process abort at exit ("terminate
        called without an active exception"); mlx leaves this clean-up to the caller.
        """
        mx = sys.modules.get("mlx.core")
        if mx is not None:
            mx.clear_streams()


class MlxLmModel:
    def __init__(self, model: Any, tokenizer: Any) -> None:
        self._model = model
        self._tokenizer = tokenizer

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The model's own chat template, or a plain transcript for base models without one."""
        tokenizer = self._tokenizer
        if not tokenizer.has_chat_template:
            transcript = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
            return list(tokenizer.encode(transcript))
        chat = [{"role": m.role, "content": m.content} for m in messages]
        try:
            return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
        except Exception:
            # Some templates (Gemma, older Mistral) refuse a system role: fold it into the first
            # user turn, which is what those models were trained to read.
            if not any(m.role == "system" for m in messages):
                raise
            return list(
                tokenizer.apply_chat_template(_fold_system(messages), add_generation_prompt=True)
            )

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> Iterator[GenerationStep]:
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        if self._model is None:
            raise RuntimeError("the model was closed")
        prompt = self.prompt_tokens(messages)
        responses = stream_generate(
            self._model,
            self._tokenizer,
            prompt,
            max_tokens=max_tokens,
            sampler=make_sampler(temp=temperature),
        )
        try:
            for response in responses:
                if cancel.is_set():
                    return
                yield GenerationStep(
                    text=response.text,
                    prompt_tokens=len(prompt),
                    # mlx-lm counts the end-of-sequence token too, as its server reports it.
                    completion_tokens=response.generation_tokens,
                    finish_reason=response.finish_reason,
                )
        finally:
            # Stops mlx-lm's loop (and its prefetch of the next token) right here.
            responses.close()

    def close(self) -> None:
        self._model = None
        self._tokenizer = None


def _fold_system(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    chat = [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]
    if chat and chat[0]["role"] == "user":
        chat[0]["content"] = f"{system}\n\n{chat[0]['content']}"
    else:
        chat.insert(0, {"role": "user", "content": system})
    return chat
