"""A small support-shaped pipeline on in-process providers, helpers to read a trace tree, and
the secret search that every byte sent to Langfuse must pass."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from bot.llm.protocol import LLMProvider
from bot.llm.specs import parse_spec
from bot.llm.types import ChatMessage, system, user
from bot.pipeline.context import AgentOutput, PipelineContext
from bot.services.model_resolution import Resolution, Source, UserModelChoice
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan


@dataclass
class LLMAgent:
    """Asks its model once (or streams the answer when it replies to the user)."""

    name: str
    replies: bool = False
    stream: bool = False

    @property
    def key(self) -> str:
        return self.name

    def prompt(self, ctx: PipelineContext) -> list[ChatMessage]:
        return [system(f"You are the {self.name}."), user(ctx.input_text)]

    async def run(self, ctx: PipelineContext) -> AgentOutput:
        if self.stream:
            parts: list[str] = []
            async for chunk in ctx.llm.stream(self.prompt(ctx)):
                if chunk.delta:
                    parts.append(chunk.delta)
                    await ctx.emit_text(chunk.delta)
            text = "".join(parts)
            return AgentOutput.ok(text=text)
        response = await ctx.llm.complete(self.prompt(ctx), temperature=0.2, max_tokens=64)
        return AgentOutput.ok(data={"said": response.text}, text=response.text)


@dataclass
class TableResolver:
    """Resolution from a fixed table: agent -> (provider, spec, source)."""

    table: dict[str, tuple[LLMProvider, str, Source]] = field(default_factory=dict)

    async def resolve(
        self,
        agent: str,
        *,
        pipeline: str | None = None,
        user: UserModelChoice | None = None,
        user_id: int | None = None,
    ) -> Resolution:
        provider, spec, source = self.table[agent]
        return Resolution(provider=provider, spec=parse_spec(spec), source=source)


def by_name(spans: Sequence[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReceivedSpan], name: str) -> ReceivedSpan:
    found = by_name(spans, name)
    assert len(found) == 1, f"expected one span {name!r}, got {[s.name for s in spans]}"
    return found[0]


def children(spans: Sequence[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.parent_id == parent.span_id]


def generations(spans: Sequence[ReceivedSpan]) -> list[ReceivedSpan]:
    return [span for span in spans if span.observation_type == "generation"]


def configured_secrets() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "openrouter_api_key": f"sk-or-v1-{tag}",
        "openai_api_key": f"sk-proj-{tag[:20]}",
        "anthropic_api_key": f"sk-ant-api03-{tag[:24]}",
        "groq_api_key": f"gsk_{tag[:24]}",
        "telegram_bot_token": f"7123456789:AAH{tag[:32]}",
        # shaped like nothing well known: only the exact-match scrubbing can catch it
        "insforge_api_key": f"ifk.{tag[:10]}.{tag[10:22]}",
        "bot_secret_key": f"bsk{tag[:18]}",
        "langfuse_secret_key": f"sk-lf-{tag}",
    }


def search(receiver: OtlpReceiver, secrets: list[str]) -> list[str]:
    """Every secret found anywhere in what reached 'Langfuse' (plain, JSON-escaped, base64)."""
    found: list[str] = []
    requests = receiver.requests()
    for secret in secrets:
        plain = secret.encode()
        escaped = json.dumps(secret)[1:-1].encode()
        b64 = base64.b64encode(plain)
        for request in requests:
            head = "\n".join(f"{k}: {v}" for k, v in request.headers.items()).encode()
            in_head = plain in head
            in_body = any(form in blob for blob in (request.raw, request.body)
                          for form in (plain, escaped, b64))  # fmt: skip
            if in_head or in_body:
                found.append(f"{secret[:6]}... in {request.method} {request.path}")
    return found
