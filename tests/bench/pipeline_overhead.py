"""Benchmark: the runner's own overhead on the `support` pipeline.

    python -m tests.bench.pipeline_overhead [--latency 0.05] [--runs 200] [--concurrency 200]

Every model call is an in-process provider with a fixed latency (50 ms by default), so a run's
critical path is extraction|strategist (parallel, 50 ms) + coach (50 ms) = 100 ms; the summarizer
runs in the background, off the critical path. The overhead of a run is its wall time minus its
critical path, where the critical path is measured from the calls themselves (so the event loop's
timer slack inside the fake latency is not blamed on the runner) and also shown against the
nominal 100 ms. Overrides come from the real `ModelConfigService` over the real SQLite storage,
with an override set for the strategist; the database reads it made are printed.

Targets (issue 4): p50 < 2 ms alone, p99 < 10 ms with 200 concurrent runs, and at most one
override read per MODEL_CONFIG_TTL whatever the load. Nothing here asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Settings
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.specs import ModelSpec
from bot.llm.types import ChatMessage
from bot.pipeline.context import PipelineContext
from bot.pipeline.pipelines import build_pipelines
from bot.pipeline.runner import PipelineRunner
from bot.services.model_config import ModelConfigService
from bot.services.model_resolution import ModelResolver
from bot.storage.factory import create_storage
from tests.services.fakes import scripted_reply

# (kind, started, ended) of every model call of the current run.
CALLS: contextvars.ContextVar[list[tuple[str, float, float]]] = contextvars.ContextVar("calls")


class TimedProvider(FunctionProvider):
    async def _call(self, messages: Sequence[ChatMessage], info: CallInfo) -> str:
        started = time.perf_counter()
        try:
            return await super()._call(messages, info)
        finally:
            kind = info.schema.__name__ if info.schema else ("stream" if info.streaming else "text")
            CALLS.get().append((kind, started, time.perf_counter()))


class TimedProviders:
    def __init__(self, latency: float) -> None:
        self.latency = latency

    def chain(
        self,
        primary: ModelSpec,
        *,
        api_key: str | None = None,
        fallbacks: Sequence[ModelSpec] | None = None,
    ) -> FunctionProvider:
        provider = TimedProvider(
            scripted_reply, provider=primary.provider, model=primary.model, latency=self.latency
        )
        provider.calls = _Discard()  # type: ignore[assignment]  # no growth over 1000s of runs
        return provider

    async def close(self) -> None:
        pass


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        pass


def critical_path(calls: list[tuple[str, float, float]]) -> float:
    durations = {kind: end - start for kind, start, end in calls}
    return max(durations["ExtractedFacts"], durations["ReplyPlan"]) + durations["stream"]


async def one_run(
    runner: PipelineRunner, pipeline: object, resolver: ModelResolver, default: FunctionProvider
) -> tuple[float, float]:
    calls: list[tuple[str, float, float]] = []
    CALLS.set(calls)
    ctx = PipelineContext(
        pipeline="support",
        default_llm=default,
        user_id=1,
        chat_id=1,
        input_text="I keep putting off my thesis",
        resolver=resolver,
    )
    started = time.perf_counter()
    result = await runner.run(pipeline, ctx)  # type: ignore[arg-type]
    wall = time.perf_counter() - started
    assert result.success, result.error_message
    foreground = [c for c in calls if c[0] != "text"]  # the summarizer is background
    return wall, critical_path(foreground)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(name: str, samples: list[tuple[float, float]], nominal: float) -> None:
    measured = [(wall - path) * 1000 for wall, path in samples]
    vs_nominal = [(wall - nominal) * 1000 for wall, _ in samples]
    print(
        f"{name:<28} runs={len(samples):<5} "
        f"overhead p50={percentile(measured, 50):6.2f} ms  p99={percentile(measured, 99):6.2f} ms"
        f"   | vs nominal {nominal * 1000:.0f} ms: p50={percentile(vs_nominal, 50):6.2f} ms "
        f"p99={percentile(vs_nominal, 99):6.2f} ms  | mean wall="
        f"{statistics.fmean(w for w, _ in samples) * 1000:.1f} ms"
    )


async def main(latency: float, runs: int, concurrency: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{Path(tmp) / 'bench.db'}",
            default_model="openai:gpt-4o-mini",
            openrouter_api_key="sk-or-bench",
        )
        storage = create_storage(settings)
        await storage.connect()
        try:
            providers = TimedProviders(latency)
            config = ModelConfigService.from_settings(
                settings, storage.model_config, storage.model_history, providers
            )
            await config.set_override("strategist", "anthropic/claude-sonnet-4.5", "bench")
            resolver = ModelResolver(settings, providers, config)
            default = resolver.shared_chain(settings.default_spec)
            # No storage for the agents: the subject is the runner, not SQLite writes.
            pipeline = build_pipelines(None)["support"]
            runner = PipelineRunner()

            for _ in range(5):  # warm-up: imports, first override read, lazy prompts
                await one_run(runner, pipeline, resolver, default)
            await runner.wait_background()
            reads_before = config.reads

            alone = []
            for _ in range(runs):
                alone.append(await one_run(runner, pipeline, resolver, default))
            await runner.wait_background()

            together: list[tuple[float, float]] = []
            cpu_started = time.process_time()
            for _ in range(rounds):
                batch = await asyncio.gather(
                    *(
                        asyncio.create_task(one_run(runner, pipeline, resolver, default))
                        for _ in range(concurrency)
                    )
                )
                together.extend(batch)
                await runner.wait_background()
            cpu_per_run = (time.process_time() - cpu_started) / (rounds * concurrency)

            nominal = 2 * latency
            print(f"support pipeline, provider latency {latency * 1000:.0f} ms per call")
            report("alone (sequential runs)", alone, nominal)
            report(f"{concurrency} concurrent x{rounds}", together, nominal)
            print(
                f"CPU per run (agents, fake provider, runner; background included): "
                f"{cpu_per_run * 1000:.2f} ms -> {concurrency} runs waking together queue "
                f"~{cpu_per_run * concurrency * 1000:.0f} ms of CPU on one event loop"
            )
            await bare(latency, runs, concurrency, rounds)
            total = runs + rounds * concurrency
            print(
                f"override reads during {total} runs (TTL {config.ttl:.0f} s): "
                f"{config.reads - reads_before} (total incl. warm-up: {config.reads})"
            )
            await runner.drain(5)
            await config.close()
        finally:
            await storage.close()


async def bare(latency: float, runs: int, concurrency: int, rounds: int) -> None:
    """The same shape with agents that only wait `latency`: the runner's own cost, isolated."""
    from bot.pipeline.context import AgentOutput
    from bot.pipeline.steps import Background, Parallel, Pipeline, Step

    class Wait:
        replies = True

        def __init__(self, name: str) -> None:
            self.name = self.key = name

        async def run(self, ctx: PipelineContext) -> AgentOutput:
            await asyncio.sleep(latency)
            return AgentOutput.ok(text="x")

    pipeline = Pipeline(
        "support",
        (
            Parallel([Step(Wait("extraction")), Step(Wait("strategist"))]),
            Step(Wait("coach")),
            Background(Step(Wait("summarizer"))),
        ),
    )
    runner = PipelineRunner()
    default = FunctionProvider(scripted_reply)

    async def run_once() -> tuple[float, float]:
        ctx = PipelineContext(pipeline="support", default_llm=default, input_text="hi")
        started = time.perf_counter()
        await runner.run(pipeline, ctx)
        return time.perf_counter() - started, 2 * latency

    alone = [await run_once() for _ in range(runs)]
    together: list[tuple[float, float]] = []
    for _ in range(rounds):
        together.extend(await asyncio.gather(*(run_once() for _ in range(concurrency))))
        await runner.wait_background()
    await runner.drain(5)
    # Sleep timer slack is included here: the critical path is the nominal one.
    report("bare agents, alone", alone, 2 * latency)
    report(f"bare agents, {concurrency} concurrent", together, 2 * latency)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the bot runs on uvloop"
    )
    args = parser.parse_args()
    print(f"event loop: {args.loop}")
    coro = main(args.latency, args.runs, args.concurrency, args.rounds)
    if args.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        asyncio.run(coro)
