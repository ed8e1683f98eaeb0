"""The scrubber every recorded value goes through."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from bot.observability import scrub
from bot.observability.scrub import (
    _CREDENTIAL_SHAPES,
    REDACTED,
    SECRET,
    Scrubber,
    jsonable,
    truncate,
)


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


def test_the_quick_check_never_skips_what_the_full_pattern_would_catch() -> None:
    """`text` skips the credential-shape regex on text without any of its substrings; over
    random texts seeded with every shape (any case, glued to words or not), the result must be
    exactly what running the regex on everything gives."""
    rng = random.Random(20261201)
    pieces = [
        "sk-or-v1-0123456789abcdef0123",
        "sk-ant-api03-abcdefghijklmnop",
        "pk-lf-12345678",
        "sk-lf-1234567",  # one short
        "SK-LF-12345678abcd",
        "gsk_abcdefghijklmnopqrstuv",
        "xai-abcdefghijklmnopqrstuv",
        "123456789:AAHabcdefghijklmnopqrstuvwxyz012345",
        "98765:" + "x" * 29,  # one short of a token
        "Bearer abcdefghijklmnopqrstuvwxyz",
        "bEaReR\tabcdefghijklmnopqrstuvwxyz",
        "BEARER short",
        "sk-",
        ":",
        "bearer",
        "task-list",
        "12:30",
        "ask-me",
        "xai",
        "gsk",
        "How was the week?",
        "Coach:",
        "I ran 5 km.",
        "\n",
        " ",
        "é",
        "İ",
    ]
    scrubber = Scrubber()
    caught = 0
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.2:
            text = text[: rng.randint(0, 20)]  # short values, around the shortest credential
        expected = _CREDENTIAL_SHAPES.sub(SECRET, text)
        assert scrubber.text(text) == expected, text
        caught += expected != text
    assert caught > 1000  # the texts did hold credentials, often


def test_scrubbing_ordinary_prose_does_not_run_the_shape_regex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    class Spy:
        def sub(self, repl: str, value: str) -> str:
            calls.append(value)
            return _CREDENTIAL_SHAPES.sub(repl, value)

    monkeypatch.setattr(scrub, "_CREDENTIAL_SHAPES", Spy())
    scrubber = Scrubber(["a-configured-secret"])
    prose = "User: How was your week? Coach: Great, 5 km at 12:30! " * 50
    assert scrubber.text(prose + "a-configured-secret") == prose + SECRET
    assert calls == []
    assert scrubber.text("token sk-or-v1-0123456789abcdef0123") == f"token {SECRET}"
    assert len(calls) == 1


@dataclass
class _Hidden:
    shown: str
    _private: str = "not sent"


def test_values_are_scrubbed_as_jsonable_makes_them_in_one_pass() -> None:
    """`value` converts as `jsonable` does (models, dataclasses, sets, tuples, keys, other
    objects) while it scrubs: the same result as scrubbing `jsonable`'s copy."""
    scrubber = Scrubber(["sk-configured-secret-123"])
    mixed = {
        1: (Result(True, Plan(steps=["sk-configured-secret-123 leaked"])), {4}),
        "nested": [_Hidden("a sk-configured-secret-123"), frozenset({"x"}), None, 2.5],
        "api_key": {"anything": "goes"},
        "other": object(),
        "bytes": b"raw",
    }
    once = scrubber.value(mixed)
    assert once == scrubber.value(jsonable(mixed))
    assert once["1"][0] == {"ok": True, "plan": {"steps": [f"{SECRET} leaked"]}}
    assert once["nested"][0] == {"shown": f"a {SECRET}"}
    assert once["api_key"] == SECRET
    assert once["other"].startswith("<object")
    assert "sk-configured-secret-123" not in json.dumps(once)
