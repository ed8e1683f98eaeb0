"""Structured output validates on every provider; one repair turn, then a clear error."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from bot.llm.errors import StructuredOutputError
from bot.llm.registry import ProviderRegistry
from bot.llm.structured import extract_json
from bot.llm.types import system, user
from tests.fakes.llm_server import FakeLLMServer, RecordedRequest


class Plan(BaseModel):
    topic: str
    steps: list[str]


GOOD = {"topic": "fractions", "steps": ["halves", "quarters"]}
SPECS = ["openrouter:openai/gpt-4o-mini", "openai:gpt-4o-mini", "anthropic:claude-opus-test"]
MESSAGES = [system("You plan lessons."), user("Plan fractions.")]


def model_of(spec: str) -> str:
    return spec.split(":", 1)[1]


@pytest.mark.parametrize("spec", SPECS)
async def test_valid_json_is_parsed(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(model_of(spec), json.dumps(GOOD))

    response = await make_registry().get(spec).complete(MESSAGES, schema=Plan)

    assert response.parsed == Plan(**GOOD)
    assert isinstance(response.parsed, Plan)
    [request] = llm_server.requests
    if request.api == "openai":
        fmt = request.body["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "Plan"
        assert fmt["json_schema"]["schema"] == Plan.model_json_schema()
        assert request.body["messages"][0]["content"] == "You plan lessons."
    else:
        # No JSON mode: the schema travels in the system prompt.
        assert "response_format" not in request.body
        assert request.body["system"].startswith("You plan lessons.")
        assert '"steps"' in request.body["system"]


@pytest.mark.parametrize("spec", SPECS)
async def test_fenced_json_with_chatter_is_accepted(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(model_of(spec), f"Here you go:\n```json\n{json.dumps(GOOD)}\n```\nEnjoy!")

    response = await make_registry().get(spec).complete(MESSAGES, schema=Plan)

    assert response.parsed == Plan(**GOOD)
    assert len(llm_server.requests) == 1


@pytest.mark.parametrize("spec", SPECS)
async def test_invalid_reply_gets_one_repair_turn(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    def reply(request: RecordedRequest) -> str:
        # Wrong first (steps missing), right once told what was wrong.
        if "not valid" in request.last_user_text:
            return json.dumps(GOOD)
        return '{"topic": "fractions"}'

    llm_server.script(model_of(spec), reply)

    response = await make_registry().get(spec).complete(MESSAGES, schema=Plan)

    assert response.parsed == Plan(**GOOD)
    first, second = llm_server.requests
    repair = second.messages
    assert repair[-2] == {"role": "assistant", "content": '{"topic": "fractions"}'}
    assert "steps" in repair[-1]["content"]  # the validation error names the missing field
    # Usage counts both calls.
    assert response.usage.completion_tokens == 2 + len(json.dumps(GOOD).split())
    assert len(first.messages) < len(second.messages)


@pytest.mark.parametrize("spec", SPECS)
async def test_second_failure_raises_structured_output_error(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    llm_server.script(model_of(spec), "Sorry, I cannot do JSON today.")

    with pytest.raises(StructuredOutputError) as info:
        await make_registry().get(spec).complete(MESSAGES, schema=Plan)

    assert "Plan" in str(info.value)
    assert spec in str(info.value)
    assert len(llm_server.requests) == 2, "exactly one repair attempt"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```', '{"a": 1}'),
        ('Sure! {"a": {"b": 2}} hope it helps', '{"a": {"b": 2}}'),
        ("no json here", "no json here"),
    ],
)
def test_extract_json(text: str, expected: str) -> None:
    assert extract_json(text) == expected
