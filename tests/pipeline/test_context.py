"""Copied contexts: every agent sees its own model, whatever the interleaving."""

from __future__ import annotations

import asyncio

from bot.config import Settings
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Background, Parallel, Pipeline, Step
from bot.services.model_config import ModelConfigService
from bot.services.model_resolution import ModelResolver
from tests.pipeline.helpers import FnAgent, context
from tests.services.fakes import FakeConfigRepo, FakeProviders


def model_reader(name: str, seen: dict[str, list[str]]) -> FnAgent:
    async def run(ctx: PipelineContext) -> AgentOutput:
        for _ in range(5):
            await asyncio.sleep(0)  # let the other agent run in between
            seen.setdefault(name, []).append(ctx.llm.spec)
            await asyncio.sleep(0)
            response = await ctx.llm.complete([])
            seen[name].append(f"{response.provider}:{response.model}")
        return AgentOutput.ok()

    return FnAgent(name, run)


async def resolver_with_overrides(**overrides: str) -> tuple[ModelResolver, ModelConfigService]:
    repo = FakeConfigRepo()
    for agent, model in overrides.items():
        repo.put(agent, model)
    providers = FakeProviders()
    config = ModelConfigService(repo, providers=providers)
    settings = Settings(_env_file=None, default_model="openai:gpt-4o-mini")  # type: ignore[call-arg]
    return ModelResolver(settings, providers, config), config


async def test_parallel_agents_with_different_overrides_each_see_their_own() -> None:
    resolver, config = await resolver_with_overrides(
        extraction="x/extraction-model", strategist="y/strategist-model"
    )
    seen: dict[str, list[str]] = {}
    pipeline = Pipeline(
        "support",
        [
            Parallel(
                [
                    Step(model_reader("extraction", seen)),
                    Step(model_reader("strategist", seen)),
                    Step(model_reader("coach", seen)),
                ]
            ),
            Background(Step(model_reader("summarizer", seen))),
        ],
    )
    runner = PipelineRunner()
    ctx = context(resolver=resolver)
    await runner.run(pipeline, ctx)
    await runner.wait_background()

    assert set(seen["extraction"]) == {"openrouter:x/extraction-model"}
    assert set(seen["strategist"]) == {"openrouter:y/strategist-model"}
    assert set(seen["coach"]) == {"openai:gpt-4o-mini"}
    # The background step resolved its own model too.
    assert set(seen["summarizer"]) == {"openai:gpt-4o-mini"}
    assert all(len(v) == 10 for v in seen.values())
    # The run's own context is untouched: its llm is still the default.
    assert ctx.llm is ctx.default_llm
    assert ctx.agent is None
    assert {a: r.source for a, r in ctx.resolutions.items()} == {
        "extraction": "override",
        "strategist": "override",
        "coach": "default",
        "summarizer": "default",
    }
    await config.close()


async def test_a_background_step_with_its_own_override() -> None:
    resolver, config = await resolver_with_overrides(summarizer="z/cheap-summaries")
    seen: dict[str, list[str]] = {}
    pipeline = Pipeline(
        "support",
        [Step(model_reader("coach", seen)), Background(Step(model_reader("summarizer", seen)))],
    )
    runner = PipelineRunner()
    await runner.run(pipeline, context(resolver=resolver))
    await runner.wait_background()
    assert set(seen["summarizer"]) == {"openrouter:z/cheap-summaries"}
    assert set(seen["coach"]) == {"openai:gpt-4o-mini"}
    await config.close()


async def test_for_agent_copies_share_results_but_not_the_model() -> None:
    ctx = context()
    a = ctx.for_agent("a", FakeProviders().chain(Settings(_env_file=None).default_spec))  # type: ignore[call-arg]
    assert a.llm is not ctx.llm
    assert a.agent == "a"
    a.set_result("a", AgentOutput.ok(data=1))
    assert ctx.result_data("a") == 1
    assert ctx.results is a.results


async def test_without_a_resolver_agents_get_the_default_llm() -> None:
    ctx = context()
    assert await ctx.get_llm_for_agent("coach") is ctx.default_llm


async def test_emit_text_goes_to_the_sink() -> None:
    chunks: list[str] = []

    async def sink(text: str) -> None:
        chunks.append(text)

    ctx = context(on_text=sink)
    await ctx.for_agent("coach", ctx.default_llm).emit_text("hello")
    await ctx.emit_text("")
    assert chunks == ["hello"]
