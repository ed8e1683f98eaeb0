"""The `mlx:` provider: a tiny Llama model through the real mlx-lm, plus scripted runners.

The tiny model (tests/fakes/tiny_llama.py) writes gibberish but never its end token, so every
generation runs to `max_tokens` exactly; greedy decoding makes its text repeatable. Behaviour the
random model cannot show (JSON, failures, timing) uses runners registered with `register_runner`,
which also proves the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import jinja2
import pytest
from pydantic import BaseModel
from tokenizers import Tokenizer

from bot.llm.errors import ProviderError, ProviderTimeout, StructuredOutputError
from bot.llm.fallback import FallbackProvider
from bot.llm.function_provider import FunctionProvider
from bot.llm.local import (
    GenerationStep,
    LocalModel,
    LocalProvider,
    get_runner,
    register_runner,
    registered_runners,
    unregister_runner,
)
from bot.llm.local_runners.mlx_lm_runner import MlxLmModel, MlxLmRunner
from bot.llm.protocol import LLMProvider
from bot.llm.specs import ModelSpecError
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk, system, user
from tests.fakes.tiny_llama import CHAT_TEMPLATE, build_tiny_llama, tiny_llama_path  # noqa: F401

MESSAGES = [system("You are a kind coach."), user("Hello! Teach me fractions.")]
OTHER = [user("Let us practise loops.")]
WAIT = 15.0  # generous: only there so a broken cancellation fails instead of hanging


@pytest.fixture
async def tiny(tiny_llama_path: Path) -> AsyncIterator[LocalProvider]:  # noqa: F811
    provider = LocalProvider("tiny-llama", str(tiny_llama_path), max_tokens=8)
    yield provider
    await provider.close()


def expected_prompt_tokens(model_dir: Path, messages: Sequence[ChatMessage]) -> int:
    """Count the prompt the way the model folder defines it, without mlx-lm."""
    rendered = jinja2.Template(CHAT_TEMPLATE).render(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        bos_token="<|begin|>",
        add_generation_prompt=True,
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return len(tokenizer.encode(rendered, add_special_tokens=False).ids)


async def collect(stream: AsyncIterator[StreamChunk]) -> tuple[list[str], list[StreamChunk]]:
    deltas: list[str] = []
    finals: list[StreamChunk] = []
    async for chunk in stream:
        if chunk.is_final:
            finals.append(chunk)
        else:
            deltas.append(chunk.delta)
    return deltas, finals


# --- the tiny model through the real mlx-lm -----------------------------------------------------


async def test_complete_returns_the_normalized_response(
    tiny: LocalProvider,
    tiny_llama_path: Path,  # noqa: F811
) -> None:
    assert isinstance(tiny, LLMProvider)
    assert tiny.spec == "mlx:tiny-llama"

    response = await tiny.complete(MESSAGES, max_tokens=6)

    assert isinstance(response, LLMResponse)
    assert response.text.strip()
    assert (response.provider, response.model) == ("mlx", "tiny-llama")
    assert response.usage.prompt_tokens == expected_prompt_tokens(tiny_llama_path, MESSAGES)
    assert response.usage.completion_tokens == 6
    assert response.usage.cost == 0.0
    assert response.finish_reason == "length"
    assert response.latency_ms > 0
    assert response.parsed is None
    [attempt] = response.attempts
    assert attempt.ok
    assert (attempt.provider, attempt.model) == ("mlx", "tiny-llama")
    assert attempt.usage == response.usage
    # Greedy decoding by default: the same request gives the same text.
    again = await tiny.complete(MESSAGES, max_tokens=6)
    assert again.text == response.text
    # The constructor's max_tokens is the default.
    default = await tiny.complete(MESSAGES)
    assert default.usage.completion_tokens == 8
    assert default.text.startswith(response.text)


async def test_stream_deltas_add_up_to_the_final_response(tiny: LocalProvider) -> None:
    reference = await tiny.complete(MESSAGES, max_tokens=10)

    deltas, finals = await collect(tiny.stream(MESSAGES, max_tokens=10))

    assert len(deltas) > 1, "the reply should arrive in pieces"
    assert all(deltas)
    [final] = finals
    response = final.response
    assert response is not None
    assert "".join(deltas) == response.text == reference.text
    assert response.usage.completion_tokens == 10
    assert response.usage.prompt_tokens == reference.usage.prompt_tokens
    assert response.finish_reason == "length"
    assert response.attempts[0].ok


async def test_two_generations_at_once_both_finish_with_their_own_lengths(
    tiny: LocalProvider,
) -> None:
    solo_a = await tiny.complete(MESSAGES, max_tokens=12)
    solo_b = await tiny.complete(OTHER, max_tokens=5)

    async def streamed() -> LLMResponse:
        deltas, [final] = await collect(tiny.stream(OTHER, max_tokens=5))
        assert final.response is not None
        assert "".join(deltas) == final.response.text
        return final.response

    a, b = await asyncio.wait_for(
        asyncio.gather(tiny.complete(MESSAGES, max_tokens=12), streamed()), WAIT
    )

    assert a.usage.completion_tokens == 12
    assert a.text == solo_a.text
    assert b.usage.completion_tokens == 5
    assert b.text == solo_b.text
    assert tiny.active_generations == 0


class CountingRunner:
    """The real mlx-lm runner, counting the tokens it produces and noticing when it stops."""

    def __init__(self) -> None:
        self.inner = MlxLmRunner()
        self.produced = 0
        self.ended = threading.Event()
        self.threads: set[str] = set()

    def load(self, path: Path) -> LocalModel:
        self.threads.add(threading.current_thread().name)
        return CountingModel(self, self.inner.load(path))

    def release_thread(self) -> None:
        self.inner.release_thread()


class CountingModel:
    def __init__(self, runner: CountingRunner, inner: LocalModel) -> None:
        self.runner, self.inner = runner, inner

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> Iterator[GenerationStep]:
        self.runner.ended.clear()
        self.runner.threads.add(threading.current_thread().name)
        try:
            for step in self.inner.generate(
                messages, max_tokens=max_tokens, temperature=temperature, cancel=cancel
            ):
                self.runner.produced += 1
                yield step
        finally:
            self.runner.ended.set()

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def runner_name() -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    unregister_runner(name)


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_cancelling_the_consumer_stops_the_generation_thread(
    tiny_llama_path: Path,  # noqa: F811
    runner_name: str,
) -> None:
    runner = CountingRunner()
    register_runner(runner_name, lambda: runner)
    provider = LocalProvider("tiny-llama", tiny_llama_path, runner=runner_name)
    max_tokens = 20_000  # minutes of work if cancellation did not stop it
    received: list[str] = []
    three = asyncio.Event()

    async def consume() -> None:
        async for chunk in provider.stream(MESSAGES, max_tokens=max_tokens):
            received.append(chunk.delta)
            if len(received) == 3:
                three.set()

    try:
        task = asyncio.create_task(consume())
        await asyncio.wait_for(three.wait(), WAIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        await wait_until(runner.ended.is_set, "the generation loop to stop")
        await wait_until(lambda: provider.active_generations == 0, "the worker job to end")
        stopped_at = runner.produced
        assert 3 <= stopped_at < max_tokens
        await asyncio.sleep(0.2)
        assert runner.produced == stopped_at, "tokens were produced after the cancellation"

        # The owner thread is free again: the next request is served, on that same thread.
        after = await asyncio.wait_for(provider.complete(OTHER, max_tokens=4), WAIT)
        assert after.usage.completion_tokens == 4
        assert len(runner.threads) == 1
    finally:
        await provider.close()


async def test_closing_the_stream_early_stops_the_generation(
    tiny_llama_path: Path,  # noqa: F811
    runner_name: str,
) -> None:
    runner = CountingRunner()
    register_runner(runner_name, lambda: runner)
    provider = LocalProvider("tiny-llama", tiny_llama_path, runner=runner_name)
    try:
        stream = provider.stream(MESSAGES, max_tokens=20_000)
        first = await anext(stream)  # type: ignore[call-overload]
        assert first.delta
        await stream.aclose()  # type: ignore[attr-defined]
        await wait_until(runner.ended.is_set, "the generation loop to stop")
        assert runner.produced < 20_000
    finally:
        await provider.close()


async def test_providers_of_one_folder_share_one_loaded_model(
    tiny_llama_path: Path,  # noqa: F811
    runner_name: str,
) -> None:
    loads: list[str] = []

    class Runner(MlxLmRunner):
        def load(self, path: Path) -> LocalModel:
            loads.append(str(path))
            return super().load(path)

    register_runner(runner_name, Runner)
    one = LocalProvider("a", tiny_llama_path, runner=runner_name)
    two = LocalProvider("b", str(tiny_llama_path) + "/", runner=runner_name)
    first, second = await asyncio.gather(
        one.complete(MESSAGES, max_tokens=3), two.complete(MESSAGES, max_tokens=3)
    )
    assert first.text == second.text
    assert len(loads) == 1
    await one.close()
    # The other provider still holds the model: no reload.
    await two.complete(OTHER, max_tokens=2)
    assert len(loads) == 1
    await two.close()
    # The last close ended the model's owner thread.
    assert not [t for t in threading.enumerate() if t.name.startswith(f"local-{runner_name}")]
    with pytest.raises(ProviderError, match="closed"):
        await two.complete(OTHER)


async def test_a_folder_that_is_not_a_model_is_a_configuration_error(tmp_path: Path) -> None:
    provider = LocalProvider("empty", tmp_path)
    try:
        with pytest.raises(ModelSpecError, match="MLX_MODEL_PATH") as info:
            await provider.complete(MESSAGES)
        assert "config.json" in str(info.value)
        # A failed load is not cached: once the folder holds a model, the next call loads it.
        build_tiny_llama(tmp_path)
        response = await provider.complete(MESSAGES, max_tokens=2)
        assert response.usage.completion_tokens == 2
    finally:
        await provider.close()


def test_the_mlx_runner_folds_system_prompts_for_templates_that_refuse_them() -> None:
    class StrictTokenizer:
        has_chat_template = True
        seen: list[list[dict[str, str]]] = []  # noqa: RUF012

        def apply_chat_template(self, chat: list[dict[str, str]], **_: object) -> list[int]:
            self.seen.append(chat)
            if any(m["role"] == "system" for m in chat):
                raise ValueError("System role not supported")
            return [1, 2, 3]

    tokenizer = StrictTokenizer()
    model = MlxLmModel(object(), tokenizer)
    assert model.prompt_tokens(MESSAGES) == [1, 2, 3]
    folded = tokenizer.seen[-1]
    assert [m["role"] for m in folded] == ["user"]
    assert folded[0]["content"].startswith("You are a kind coach.")
    assert folded[0]["content"].endswith("Teach me fractions.")


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, "", "  "])
def test_no_model_folder_names_the_variable(path: str | None) -> None:
    with pytest.raises(ModelSpecError, match="MLX_MODEL_PATH"):
        LocalProvider("qwen", path)


def test_a_missing_model_folder_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match=r"MLX_MODEL_PATH=.*nowhere.*not a folder"):
        LocalProvider("qwen", tmp_path / "nowhere")


# --- scripted runners: the registry, structured output, failures --------------------------------


class ScriptedModel:
    """Replies from a script, one per generation; remembers what it was asked."""

    def __init__(self, replies: list[str | Exception], delay: float = 0.0) -> None:
        self.replies = replies
        self.delay = delay
        self.calls: list[list[ChatMessage]] = []
        self.cancelled = threading.Event()
        self.closed = False

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        cancel: threading.Event,
    ) -> Iterator[GenerationStep]:
        self.calls.append(list(messages))
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        if self.delay and cancel.wait(self.delay):
            self.cancelled.set()
            return
        prompt = sum(len(m.content.split()) for m in messages)
        yield GenerationStep(reply, prompt_tokens=prompt, completion_tokens=len(reply.split()))
        yield GenerationStep("", finish_reason="stop")

    def close(self) -> None:
        self.closed = True


class ScriptedRunner:
    def __init__(self, model: ScriptedModel, load_time: float = 0.0) -> None:
        self.model = model
        self.load_time = load_time

    def load(self, path: Path) -> LocalModel:
        time.sleep(self.load_time)
        return self.model


def scripted(
    name: str, folder: Path, replies: list[str | Exception], **kw: float
) -> tuple[LocalProvider, ScriptedModel]:
    model = ScriptedModel(replies, **kw)
    register_runner(name, lambda: ScriptedRunner(model))
    return LocalProvider("scripted", folder, runner=name), model


async def test_a_registered_runner_is_used_by_the_provider(
    tmp_path: Path, runner_name: str
) -> None:
    provider, model = scripted(runner_name, tmp_path, ["hello from the script"])
    try:
        assert runner_name in registered_runners()
        assert "mlx" in registered_runners()
        assert isinstance(get_runner(runner_name), ScriptedRunner)
        assert isinstance(get_runner(), MlxLmRunner)
        response = await provider.complete(MESSAGES, temperature=0.7)
        assert response.text == "hello from the script"
        assert response.finish_reason == "stop"
        assert response.usage.completion_tokens == 4
        assert model.calls == [MESSAGES]
    finally:
        await provider.close()
    assert model.closed, "closing the last provider closes the model"
    with pytest.raises(ValueError, match="already registered"):
        register_runner(runner_name, lambda: ScriptedRunner(model))


def test_an_unknown_runner_lists_the_registered_ones(tmp_path: Path, runner_name: str) -> None:
    register_runner(runner_name, lambda: ScriptedRunner(ScriptedModel([])))
    with pytest.raises(ModelSpecError, match="'nope'") as info:
        get_runner("nope")
    assert "mlx" in str(info.value)
    assert runner_name in str(info.value)
    with pytest.raises(ModelSpecError, match=r"registered runners: .*mlx"):
        LocalProvider("x", tmp_path, runner="nope")


class Verdict(BaseModel):
    answer: str
    score: int


async def test_structured_output_valid_on_the_first_try(tmp_path: Path, runner_name: str) -> None:
    provider, model = scripted(
        runner_name, tmp_path, ['Sure! ```json\n{"answer": "yes", "score": 3}\n```']
    )
    try:
        response = await provider.complete(MESSAGES, schema=Verdict)
        assert response.parsed == Verdict(answer="yes", score=3)
        [call] = model.calls
        assert call[0].role == "system"
        assert '"score"' in call[0].content
        assert call[0].content.startswith("You are a kind coach.")
    finally:
        await provider.close()


async def test_structured_output_gets_one_repair(tmp_path: Path, runner_name: str) -> None:
    provider, model = scripted(
        runner_name, tmp_path, ['{"answer": "yes"}', '{"answer": "yes", "score": 4}']
    )
    try:
        response = await provider.complete(MESSAGES, schema=Verdict)
        assert response.parsed == Verdict(answer="yes", score=4)
        first, repair = model.calls
        assert repair[: len(first)] == first
        assert repair[-2] == ChatMessage("assistant", '{"answer": "yes"}')
        assert repair[-1].role == "user"
        assert "score" in repair[-1].content
        # Both calls are paid for.
        assert response.usage.completion_tokens == 2 + 4
    finally:
        await provider.close()


async def test_structured_output_fails_clearly_after_the_repair(
    tmp_path: Path, runner_name: str
) -> None:
    provider, model = scripted(runner_name, tmp_path, ["not json", "still not json"])
    try:
        with pytest.raises(StructuredOutputError, match=r"mlx:scripted.*Verdict"):
            await provider.complete(MESSAGES, schema=Verdict)
        assert len(model.calls) == 2
    finally:
        await provider.close()


async def test_a_runner_failure_is_a_retryable_provider_error(
    tmp_path: Path, runner_name: str
) -> None:
    provider, _ = scripted(runner_name, tmp_path, [RuntimeError("metal exploded"), "fine"])
    try:
        with pytest.raises(ProviderError, match="metal exploded") as info:
            await provider.complete(MESSAGES)
        assert info.value.provider == "mlx"
        # The local "server" failed, not the request: another model may well answer it.
        assert info.value.retryable
        # The worker survives a failed generation.
        assert (await provider.complete(MESSAGES)).text == "fine"
    finally:
        await provider.close()


async def test_a_crashing_local_model_falls_back(tmp_path: Path, runner_name: str) -> None:
    provider, _ = scripted(
        runner_name, tmp_path, [RuntimeError("metal exploded"), RuntimeError("metal exploded")]
    )
    backup = FunctionProvider(lambda m, i: "the backup answers", provider="openai", model="b")
    chain = FallbackProvider([provider, backup])
    try:
        response = await chain.complete(MESSAGES)
        deltas, [final] = await collect(chain.stream(MESSAGES))

        assert response.text == "the backup answers" == "".join(deltas)
        assert final.response is not None
        for attempts in (response.attempts, final.response.attempts):
            assert [(a.provider, a.ok) for a in attempts] == [("mlx", False), ("openai", True)]
            assert "metal exploded" in (attempts[0].error or "")
    finally:
        await provider.close()


async def test_a_model_that_crashes_while_loading_falls_back(
    tmp_path: Path, runner_name: str
) -> None:
    class Crashing:
        def load(self, path: Path) -> LocalModel:
            raise RuntimeError("out of unified memory")

    register_runner(runner_name, Crashing)
    provider = LocalProvider("crashing", tmp_path, runner=runner_name)
    backup = FunctionProvider(lambda m, i: "the backup answers", model="b")
    try:
        with pytest.raises(ProviderError, match="out of unified memory") as info:
            await provider.complete(MESSAGES)
        assert info.value.retryable

        response = await FallbackProvider([provider, backup]).complete(MESSAGES)
        assert response.text == "the backup answers"
    finally:
        await provider.close()


async def test_cancelling_close_is_not_swallowed(tmp_path: Path, runner_name: str) -> None:
    """close() waits for running generations; a shutdown that gives up on it must stay cancelled."""
    release = threading.Event()

    class Stubborn(ScriptedModel):
        def generate(
            self,
            messages: Sequence[ChatMessage],
            *,
            max_tokens: int,
            temperature: float,
            cancel: threading.Event,
        ) -> Iterator[GenerationStep]:
            release.wait(WAIT)  # ignores `cancel`, like a long native call
            yield GenerationStep("done", completion_tokens=1, finish_reason="stop")

    model = Stubborn([])
    register_runner(runner_name, lambda: ScriptedRunner(model))
    provider = LocalProvider("stubborn", tmp_path, runner=runner_name)
    generation = asyncio.create_task(provider.complete(MESSAGES))
    try:
        await wait_until(lambda: provider.active_generations == 1, "the generation to start")
        closing = asyncio.create_task(provider.close())
        await asyncio.sleep(0.1)
        assert not closing.done(), "close() should wait for the running generation"

        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert closing.cancelled()
    finally:
        release.set()
        generation.cancel()
        with contextlib.suppress(BaseException):
            await generation
        await provider.close()


async def test_a_timeout_stops_the_generation(tmp_path: Path, runner_name: str) -> None:
    provider, model = scripted(runner_name, tmp_path, ["late", "late"], delay=WAIT)
    try:
        with pytest.raises(ProviderTimeout, match=r"0\.2s"):
            await provider.complete(MESSAGES, timeout=0.2)
        await wait_until(model.cancelled.is_set, "the runner to see the cancellation")
        with pytest.raises(ProviderTimeout):
            await collect(provider.stream(MESSAGES, timeout=0.2))
        await wait_until(lambda: provider.active_generations == 0, "the worker to stop")
    finally:
        await provider.close()


async def test_a_slow_first_load_does_not_count_against_the_timeout(
    tmp_path: Path, runner_name: str
) -> None:
    model = ScriptedModel(["loaded at last"])
    register_runner(runner_name, lambda: ScriptedRunner(model, load_time=0.5))
    provider = LocalProvider("scripted", tmp_path, runner=runner_name, timeout=0.2)
    try:
        response = await provider.complete(MESSAGES)
        assert response.text == "loaded at last"
    finally:
        await provider.close()
