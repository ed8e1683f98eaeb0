"""Structured output validates on every provider; one repair turn, then a clear error."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable

import pytest
from pydantic import BaseModel

from bot.llm.errors import RequestRejected, StructuredOutputError
from bot.llm.registry import ProviderRegistry
from bot.llm.structured import extract_json, json_schema_of, response_format_for
from bot.llm.types import system, user
from tests.fakes.llm_server import FakeLLMServer, Fault, RecordedRequest


class Plan(BaseModel):
    topic: str
    steps: list[str]


GOOD = {"topic": "fractions", "steps": ["halves", "quarters"]}
SPECS = ["openrouter:openai/gpt-4o-mini", "openai:gpt-4o-mini", "anthropic:claude-opus-test"]
OPENAI_COMPATIBLE = ["openrouter", "openai", "groq", "xai", "vllm"]
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


def unique_model() -> str:
    # What a rejection taught is kept for the process: a fresh name keeps tests independent.
    return f"no-json-mode-{uuid.uuid4().hex[:8]}"


def schema_in(text: str) -> bool:
    return json.dumps(Plan.model_json_schema(), ensure_ascii=False) in text


@pytest.mark.parametrize("provider", OPENAI_COMPATIBLE)
async def test_endpoint_rejecting_response_format_gets_instructions_once_and_for_all(
    provider: str,
    llm_server: FakeLLMServer,
    make_registry: Callable[..., ProviderRegistry],
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = unique_model()
    llm_server.script(model, json.dumps(GOOD), reject_response_format=True)
    registry = make_registry()

    with caplog.at_level(logging.WARNING, logger="bot.llm.openai_compat"):
        response = await registry.get(f"{provider}:{model}").complete(MESSAGES, schema=Plan)

    assert response.parsed == Plan(**GOOD)
    rejected, retried = llm_server.requests
    assert "response_format" in rejected.body
    assert "response_format" not in retried.body
    system_prompt = retried.messages[0]["content"]
    assert system_prompt.startswith("You plan lessons.")
    assert schema_in(system_prompt)
    assert any(model in r.getMessage() for r in caplog.records), "the switch is logged"

    # Remembered in-process: the next call, even through a new registry, asks the right way.
    again = await make_registry().get(f"{provider}:{model}").complete(MESSAGES, schema=Plan)

    assert again.parsed == Plan(**GOOD)
    assert len(llm_server.requests) == 3
    assert "response_format" not in llm_server.requests[-1].body
    assert schema_in(llm_server.requests[-1].messages[0]["content"])


async def test_what_a_rejection_taught_applies_to_that_model_only(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    plain, capable = unique_model(), unique_model()
    llm_server.script(plain, json.dumps(GOOD), reject_response_format=True)
    llm_server.script(capable, json.dumps(GOOD))
    registry = make_registry()

    await registry.get(f"openai:{plain}").complete(MESSAGES, schema=Plan)
    await registry.get(f"openai:{capable}").complete(MESSAGES, schema=Plan)

    [request] = llm_server.requests_for(capable)
    assert request.body["response_format"]["type"] == "json_schema"


async def test_other_bad_requests_are_not_taken_for_a_response_format_rejection(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    model = unique_model()
    llm_server.script(model, fault=Fault.BAD_REQUEST)

    with pytest.raises(RequestRejected):
        await make_registry().get(f"openai:{model}").complete(MESSAGES, schema=Plan)

    [request] = llm_server.requests
    assert "response_format" in request.body


async def test_a_rejection_after_switching_to_instructions_is_raised(
    llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """Only one retry: an endpoint that rejects the plain request too fails with its 400."""
    model = unique_model()
    llm_server.script(model, json.dumps(GOOD), reject_response_format=True)
    provider = make_registry().get(f"openai:{model}")
    await provider.complete(MESSAGES, schema=Plan)  # learns: instructions from now on
    llm_server.script(model, fault=Fault.BAD_REQUEST)

    with pytest.raises(RequestRejected):
        await provider.complete(MESSAGES, schema=Plan)

    assert len(llm_server.requests) == 3


@pytest.mark.parametrize("spec", SPECS)
async def test_repair_turn_restates_the_schema(
    spec: str, llm_server: FakeLLMServer, make_registry: Callable[..., ProviderRegistry]
) -> None:
    """A model that ignored `response_format` answers prose; the repair turn shows it the schema
    (the only place such a model ever sees it)."""

    def reply(request: RecordedRequest) -> str:
        if schema_in(request.last_user_text):
            return json.dumps(GOOD)
        return "Start with halves, then quarters."

    llm_server.script(model_of(spec), reply)

    response = await make_registry().get(spec).complete(MESSAGES, schema=Plan)

    assert response.parsed == Plan(**GOOD)
    assert len(llm_server.requests) == 2


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


class _Nested(BaseModel):
    name: str
    tags: list[str] = []


def test_each_schema_is_a_fresh_copy_a_caller_cannot_spoil() -> None:
    first = json_schema_of(_Nested)
    assert first == _Nested.model_json_schema()
    first["properties"]["tags"]["items"]["type"] = "integer"  # a careless caller
    first["required"].append("spoiled")
    fmt = response_format_for(_Nested)
    fmt["json_schema"]["schema"]["title"] = "changed"
    assert json_schema_of(_Nested) == _Nested.model_json_schema()
    assert response_format_for(_Nested)["json_schema"]["schema"] == _Nested.model_json_schema()
