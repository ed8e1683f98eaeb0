"""The scrubber every recorded value goes through."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import BaseModel

from bot.observability.scrub import REDACTED, SECRET, Scrubber, jsonable, truncate


def test_configured_secrets_are_replaced_wherever_they_appear() -> None:
    scrubber = Scrubber(["ifk.abcdef.0123456789", "plain-secret-42"])
    assert scrubber.text("key=ifk.abcdef.0123456789;x") == f"key={SECRET};x"
    assert scrubber.value({"a": ["plain-secret-42 twice plain-secret-42"]}) == {
        "a": [f"{SECRET} twice {SECRET}"]
    }


def test_secrets_inside_json_text_are_found_too() -> None:
    secret = 'we"ird\\secret'
    scrubber = Scrubber([secret])
    encoded = json.dumps({"note": f"x {secret} y"})
    assert secret not in scrubber.text(encoded)
    assert json.dumps(secret)[1:-1] not in scrubber.text(encoded)


def test_well_known_key_shapes_are_replaced_without_configuration() -> None:
    scrubber = Scrubber()
    samples = [
        "sk-or-v1-0123456789abcdef0123",
        "sk-ant-api03-abcdefghijklmnop",
        "sk-proj-abcdefghijklmnopqrst",
        "gsk_abcdefghijklmnopqrstuv",
        "xai-abcdefghijklmnopqrstuv",
        "123456789:AAHabcdefghijklmnopqrstuvwxyz012345",
        "sk-lf-1234abcd-aaaa",
        "Bearer abcdefghijklmnopqrstuvwxyz",
    ]
    for sample in samples:
        assert scrubber.text(f"use {sample} now") == f"use {SECRET} now", sample


def test_ordinary_text_is_left_alone() -> None:
    scrubber = Scrubber(["abc"])  # too short to be a real key: not searched
    text = "a basic task-list about abc: sk-8 and max_tokens=64, at 12:30"
    assert scrubber.text(text) == text


def test_credential_named_fields_lose_their_values() -> None:
    scrubber = Scrubber()
    cleaned = scrubber.value(
        {"api_key": "anything", "Authorization": "x", "max_tokens": 5, "bot_token": "t"}
    )
    assert cleaned == {
        "api_key": SECRET,
        "Authorization": SECRET,
        "max_tokens": 5,
        "bot_token": SECRET,
    }


def test_later_secrets_are_added() -> None:
    scrubber = Scrubber()
    assert scrubber.text("users-key-123") == "users-key-123"
    scrubber.add_secret("users-key-123")
    scrubber.add_secret(None)
    assert scrubber.text("users-key-123") == SECRET


def test_redact_content_replaces_content_but_not_values() -> None:
    scrubber = Scrubber(redact_content=True)
    assert scrubber.content({"text": "hello"}) == REDACTED
    assert scrubber.content(None) is None
    assert scrubber.value({"model": "gpt-4o"}) == {"model": "gpt-4o"}


class Plan(BaseModel):
    steps: list[str]


@dataclass
class Result:
    ok: bool
    plan: Plan
    _hidden: str = "x"


def test_jsonable_and_truncate() -> None:
    assert jsonable(Result(True, Plan(steps=["a"]))) == {"ok": True, "plan": {"steps": ["a"]}}
    assert jsonable({1: {2, 3}}) in ({"1": [2, 3]}, {"1": [3, 2]})
    assert jsonable(object()).startswith("<object")
    assert truncate({"t": "x" * 10}, 4) == {"t": "xxxx… [6 more]"}
