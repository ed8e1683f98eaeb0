"""Settings: a bot token and one model key are enough to start."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.llm.registry import validate_settings


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"openai_api_key": "sk-o"}, "openai:gpt-4o-mini"),
        ({"anthropic_api_key": "sk-a"}, "anthropic:claude-haiku-4-5"),
        ({"groq_api_key": "gsk"}, "groq:llama-3.3-70b-versatile"),
        ({"xai_api_key": "xai"}, "xai:grok-3-mini"),
        ({"openrouter_api_key": "sk-or"}, "openrouter:openai/gpt-4o-mini"),
        # Several keys: the first of openrouter, openai, anthropic, groq, xai.
        ({"groq_api_key": "gsk", "anthropic_api_key": "sk-a"}, "anthropic:claude-haiku-4-5"),
    ],
)
def test_without_default_model_the_given_key_picks_it(keys: dict[str, str], expected: str) -> None:
    settings = Settings(_env_file=None, **keys)  # type: ignore[call-arg, arg-type]
    assert settings.default_model == expected
    assert validate_settings(settings) == []


def test_an_explicit_default_model_wins_over_the_keys() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_model="openai:gpt-4.1",
        openai_api_key="sk-o",  # type: ignore[arg-type]
        anthropic_api_key="sk-a",  # type: ignore[arg-type]
    )
    assert settings.default_model == "openai:gpt-4.1"


def test_an_empty_default_model_in_the_environment_means_pick_by_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEFAULT_MODEL", "")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-o")
    assert Settings(_env_file=None).default_model == "openai:gpt-4o-mini"  # type: ignore[call-arg]


def test_without_any_key_the_problem_names_a_variable_to_set() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.default_model == "openrouter:openai/gpt-4o-mini"
    (problem,) = validate_settings(settings)
    assert "OPENROUTER_API_KEY" in problem
