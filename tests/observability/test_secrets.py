"""No secret ever leaves: every byte the SDK sends is searched for every configured key.

The secrets are put where they could leak in real life: the user pastes keys into a message, a
model echoes them, a provider's error quotes the user's own key, an agent's output carries one,
a rating comment contains one. Then the redact option: no conversation content at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from pydantic import SecretStr

from bot.llm.errors import RequestRejected
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.openai_compat import OpenAICompatibleProvider, make_openai_client
from bot.llm.types import ChatMessage, system, user
from bot.observability.scrub import REDACTED, SECRET
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.pipeline.runner import PipelineRunner
from bot.pipeline.steps import Parallel, Pipeline, Step
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.observability.conftest import TracingFactory, make_settings
from tests.observability.kit import (
    TableResolver,
    configured_secrets,
    generations,
    one,
    search,
)

USER_KEY = f"sk-user-{uuid.uuid4().hex}"  # a user's own OpenAI-style key
ODD_USER_KEY = f"mykey~{uuid.uuid4().hex[:16]}"  # a user's own key of no known shape


@dataclass
class LeakyAgent:
    """An agent whose prompt, model reply and output all contain secrets."""

    name: str
    secrets: dict[str, str]
    replies: bool = False

    @property
    def key(self) -> str:
        return self.name

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        response = await ctx.llm.complete(
            [
                system(f"Internal: InsForge key {self.secrets['insforge_api_key']}"),
                user(ctx.input_text),
            ]
        )
        return AgentOutput.ok(
            data={"api_key": USER_KEY, "note": f"stored {self.secrets['bot_secret_key']}"},
            text=response.text,
        )


async def run_leaky(
    receiver: OtlpReceiver, make_tracing: TracingFactory, *, redact: bool
) -> tuple[dict[str, str], list[str]]:
    secrets = configured_secrets()
    settings = make_settings(
        receiver.base_url,
        langfuse_redact_content=redact,
        insforge_url="http://127.0.0.1:1",
        **secrets,
    )
    tracing = make_tracing(settings)
    tracing.add_secret(ODD_USER_KEY)  # a user's key that passes through their provider

    def echo(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        return (
            f"Your keys: {secrets['anthropic_api_key']} {secrets['telegram_bot_token']} "
            f"{ODD_USER_KEY} and {secrets['groq_api_key']}"
        )

    def rejects(messages: Sequence[ChatMessage], info: CallInfo) -> str:
        raise RequestRejected(
            f"Incorrect API key provided: {USER_KEY}. Also tried {ODD_USER_KEY}",
            provider="openai",
            model="gpt-4o",
            status=401,
        )

    coach_llm = tracing.wrap_provider(FunctionProvider(echo, provider="openai", model="gpt-4o"))
    users_llm = tracing.wrap_provider(FunctionProvider(rejects, provider="openai", model="gpt-4o"))
    resolver = TableResolver(
        {
            "extraction": (users_llm, "openai:gpt-4o", "user"),
            "coach": (coach_llm, "openai:gpt-4o", "agent"),
        }
    )
    ctx = PipelineContext(
        "support",
        coach_llm,
        user_id=9,
        chat_id=9,
        input_text=(
            f"here is my openrouter key {secrets['openrouter_api_key']}, my bot token "
            f"{secrets['telegram_bot_token']} and the langfuse one {secrets['langfuse_secret_key']}"
            f" and openai {secrets['openai_api_key']} and mine {ODD_USER_KEY}"
        ),
        resolver=resolver,
    )
    pipeline = Pipeline(
        "support",
        [
            Parallel(
                [
                    Step(LeakyAgent("extraction", secrets), optional=True),
                    Step(LeakyAgent("coach", secrets, replies=True)),
                ]
            )
        ],
    )
    result = await PipelineRunner(tracing.observer).run(pipeline, ctx)
    assert result.success
    assert await tracing.score(
        result.trace_id, "user_rating", False, comment=f"leaked {secrets['openrouter_api_key']}"
    )
    assert await tracing.trace_url(result.trace_id) is not None
    assert await tracing.aclose(timeout=10)
    assert len(receiver.spans()) == 5
    assert len(receiver.scores()) == 1
    all_secrets = [*secrets.values(), USER_KEY, ODD_USER_KEY]
    return secrets, search(receiver, all_secrets)


async def test_no_configured_or_user_secret_is_ever_exported(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    _, leaks = await run_leaky(receiver, make_tracing, redact=False)
    assert leaks == []

    # The secrets were there to leak and were replaced, not silently dropped with the content.
    spans = receiver.spans()
    root = one(spans, "support")
    assert "[secret]" in root.attributes["langfuse.observation.input"]
    assert "here is my openrouter key" in root.attributes["langfuse.observation.input"]
    outputs = [g.attributes.get("langfuse.observation.output", "") for g in generations(spans)]
    assert any("Your keys: [secret]" in o for o in outputs)
    failed = one(spans, "extraction")
    assert (
        "Incorrect API key provided: [secret]"
        in (failed.attributes["langfuse.observation.status_message"])
    )
    coach = one(spans, "coach")
    assert coach.json_attr("langfuse.observation.output") == {
        "api_key": "[secret]",
        "note": "stored [secret]",
    }
    assert receiver.scores()[0]["comment"] == "leaked [secret]"


async def test_redact_content_keeps_conversation_out_entirely(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    _, leaks = await run_leaky(receiver, make_tracing, redact=True)
    assert leaks == []
    spans = receiver.spans()
    everything = b"".join(receiver.all_bytes())
    for fragment in (b"here is my openrouter key", b"Your keys", b"Internal: InsForge", b"stored"):
        assert fragment not in everything
    root = one(spans, "support")
    assert root.attributes["langfuse.observation.input"] == REDACTED
    for generation in generations(spans):
        assert generation.attributes["langfuse.observation.input"] == REDACTED
        # what operators still get: the model and the usage
        assert generation.attributes["langfuse.observation.model.name"] == "gpt-4o"
    succeeded = [g for g in generations(spans) if "langfuse.observation.level" not in g.attributes]
    assert len(succeeded) == 1
    assert succeeded[0].attributes["langfuse.observation.output"] == REDACTED
    assert "langfuse.observation.usage_details" in succeeded[0].attributes
    failed = one(spans, "extraction")
    # the error's type and status survive, its text (which may quote content) does not
    (failed_generation,) = [g for g in generations(spans) if g.parent_id == failed.span_id]
    assert (
        failed_generation.attributes["langfuse.observation.status_message"]
        == "RequestRejected [401]"
    )


class KeyedProvider(FunctionProvider):
    """A leaf provider built with a user's own key, as the registry builds them."""

    def __init__(self, key: str) -> None:
        def quote_key(messages: Sequence[ChatMessage], info: CallInfo) -> str:
            raise RequestRejected(f"invalid key {key}", provider="xai", model="grok", status=401)

        super().__init__(quote_key, provider="xai", model="grok")
        self.api_key = SecretStr(key)


async def test_a_wrapped_providers_own_key_is_scrubbed_without_registration(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    key = f"odd~{uuid.uuid4().hex[:20]}"
    tracing = make_tracing(make_settings(receiver.base_url))
    traced = tracing.wrap_provider(KeyedProvider(key))
    with pytest.raises(RequestRejected):
        await traced.complete([user("hi")])
    assert await tracing.aclose()
    assert len(receiver.spans()) == 1
    assert search(receiver, [key]) == []
    (generation,) = receiver.spans()
    assert generation.attributes["langfuse.observation.status_message"] == (
        f"RequestRejected [401]: xai:grok [401] invalid key {SECRET}"
    )


async def test_the_key_inside_a_real_sdk_providers_client_is_learned(
    receiver: OtlpReceiver, make_tracing: TracingFactory
) -> None:
    key = f"users-own-{uuid.uuid4().hex[:16]}"
    client = make_openai_client(
        provider="openai", base_url="http://127.0.0.1:1/v1", api_key=key, timeout=1, max_retries=0
    )
    try:
        tracing = make_tracing(make_settings(receiver.base_url))
        assert tracing.scrubber.text(key) == key
        tracing.wrap_provider(OpenAICompatibleProvider(provider="openai", model="m", client=client))
        assert tracing.scrubber.text(f"quoted {key}") == f"quoted {SECRET}"
    finally:
        await client.close()
