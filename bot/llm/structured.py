"""Structured output: `complete(..., schema=Model)` returns a validated `Model` on every provider.

Providers differ in what they can enforce, so each passes one flag:

- `native=True`: the provider already constrains the reply with a JSON-schema response format
  (OpenAI-compatible `response_format={"type": "json_schema", ...}`, see `response_format_for`);
  the messages go out unchanged.
- `native=False`: the schema travels as instructions in a system message (Anthropic, local
  models, an OpenAI-compatible endpoint that rejected `response_format`, see
  `bot.llm.openai_compat`); the reply is parsed tolerantly (code fences and chatter around the
  object are removed).

Either way the reply is validated with pydantic. When it does not validate, the model gets one
repair turn: its own reply, the validation error and the schema itself are sent back with a
request to answer with the corrected JSON only. The schema is restated because a model that
silently ignored `response_format` has never seen it otherwise. A second failure raises
`StructuredOutputError`.

A provider uses it like this (the local provider does the same with `native=False`):

    async def complete(self, messages, *, schema=None, **kw):
        if schema is None:
            return await self._complete(messages, **kw)
        return await complete_structured(
            lambda msgs: self._complete(msgs, response_format=response_format_for(schema), **kw),
            messages, schema, native=True, spec=self.spec,
        )
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bot.llm.errors import StructuredOutputError
from bot.llm.types import ChatMessage, LLMResponse, Usage

M = TypeVar("M", bound=BaseModel)
StructuredCall = Callable[[Sequence[ChatMessage]], Awaitable[LLMResponse]]

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# How much of a bad reply to quote in the error (the reply may be long; it is not a secret).
_QUOTE = 300


@functools.lru_cache(maxsize=256)
def _cached_json_schema(schema: type[BaseModel]) -> str:
    return json.dumps(schema.model_json_schema(), ensure_ascii=False)


def json_schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """`schema.model_json_schema()`, built once per class (~0.6 ms each time otherwise, on every
    structured call); a copy, so no caller can change what the next one gets.

    The copy is decoded from the cached JSON text: `json.loads` is C code, several times cheaper
    than `copy.deepcopy` walking the dicts in Python, and every structured call makes one.
    """
    loaded: dict[str, Any] = json.loads(_cached_json_schema(schema))
    return loaded


def response_format_for(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI `response_format` that asks for JSON matching `schema`.

    `strict` stays off: pydantic schemas (optional fields, defaults) rarely satisfy OpenAI's
    strict-mode subset, and pydantic validates the reply anyway.
    """
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _schema_name(schema),
            "schema": json_schema_of(schema),
            "strict": False,
        },
    }


def schema_instructions(schema: type[BaseModel]) -> str:
    """The system-message text that asks a model without a JSON mode for `schema`."""
    return (
        "Reply with one JSON object and nothing else: no prose, no code fences. "
        "It must validate against this JSON schema:\n" + _cached_json_schema(schema)
    )


def extract_json(text: str) -> str:
    """The JSON object inside a model's reply: fenced block, or first `{` to last `}`."""
    stripped = text.strip()
    fenced = _FENCE.search(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    if stripped.startswith(("{", "[")):
        return stripped
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        return stripped[start : end + 1]
    return stripped


def parse_reply(text: str, schema: type[M]) -> M:
    """Validate a reply against `schema`, tolerating fences and chatter; raises ValidationError."""
    return schema.model_validate_json(extract_json(text))


def with_instructions(
    messages: Sequence[ChatMessage], schema: type[BaseModel]
) -> list[ChatMessage]:
    """`messages` with the schema instructions appended to the system prompt (or added as one)."""
    instructions = schema_instructions(schema)
    out = list(messages)
    for i, message in enumerate(out):
        if message.role == "system":
            out[i] = ChatMessage("system", f"{message.content}\n\n{instructions}")
            return out
    return [ChatMessage("system", instructions), *out]


def repair_messages(
    messages: Sequence[ChatMessage], reply: str, error: str, schema: type[BaseModel]
) -> list[ChatMessage]:
    """The conversation for the one repair turn: the bad reply, what was wrong with it, and the
    schema it must match."""
    return [
        *messages,
        ChatMessage("assistant", reply),
        ChatMessage(
            "user",
            "Your reply was not valid JSON for the required schema "
            f"({_schema_name(schema)}): {error}\n"
            "Answer again with only the corrected JSON object, no prose and no code fences. "
            "It must validate against this JSON schema:\n" + _cached_json_schema(schema),
        ),
    ]


async def complete_structured(
    call: StructuredCall,
    messages: Sequence[ChatMessage],
    schema: type[BaseModel],
    *,
    native: bool,
    spec: str = "",
) -> LLMResponse:
    """Run `call` until its reply validates against `schema` (one repair turn at most).

    `call(messages)` makes one plain completion (with the native response format already bound
    when `native`). Returns the last response with `parsed` set; its usage and latency add up
    both calls, so a repair is paid for and timed honestly. Provider errors propagate as they are.
    """
    first_messages = list(messages) if native else with_instructions(messages, schema)
    first = await call(first_messages)
    try:
        first.parsed = parse_reply(first.text, schema)
        return first
    except (ValidationError, ValueError) as exc:
        error = _describe(exc)

    second = await call(repair_messages(first_messages, first.text, error, schema))
    second.usage = _add_usage(first.usage, second.usage)
    second.latency_ms += first.latency_ms
    second.attempts = [*first.attempts, *second.attempts]
    try:
        second.parsed = parse_reply(second.text, schema)
        return second
    except (ValidationError, ValueError) as exc:
        who = f"{spec} " if spec else ""
        raise StructuredOutputError(
            f"{who}did not return valid {_schema_name(schema)} JSON after one repair attempt: "
            f"{_describe(exc)}; reply was {second.text[:_QUOTE]!r}"
        ) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for item in exc.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ())) or "(root)"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return "; ".join(parts)
    return str(exc)[:_QUOTE]


def _add_usage(a: Usage, b: Usage) -> Usage:
    cost = None if a.cost is None and b.cost is None else (a.cost or 0.0) + (b.cost or 0.0)
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cost=cost,
    )


def _schema_name(schema: type[BaseModel]) -> str:
    # OpenAI wants ^[a-zA-Z0-9_-]{1,64}$.
    return re.sub(r"[^a-zA-Z0-9_-]", "_", schema.__name__)[:64] or "Output"
