"""The bot's catalog of named models: every environment spec an entry from the start, stored rows
layered over them, model text read as an alias, a spec or an OpenRouter id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.config import Settings
from bot.llm.parameters import ModelParams
from bot.llm.specs import ModelSpec, ModelSpecError, parse_spec
from bot.services.command_args import OptionError, parse_options, split_args
from bot.services.model_catalog import (
    ALIAS_PATTERN,
    Catalog,
    UnknownAliasError,
    configured_models,
    derive_alias,
)
from bot.services.model_checks import ModelChecker, ModelProblem
from bot.storage.models import ModelCatalogRow


def test_every_spec_named_in_the_environment_is_an_entry_under_a_derived_alias() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        default_model="openrouter:openai/gpt-4o-mini",
        fallback_models=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"],
        user_models=["openai:gpt-4.1"],
        agent_models={"coach": "anthropic:claude-haiku-4-5", "tutor": "groq:Llama 3.3/70B"},
        pipeline_models={"learn": "xai:grok-3-mini"},
    )
    catalog = Catalog.build(configured_models(settings))
    assert [(e.alias, str(e.spec), e.named_in) for e in catalog] == [
        ("gpt-4o-mini", "openrouter:openai/gpt-4o-mini", ("DEFAULT_MODEL",)),
        ("openai-gpt-4o-mini", "openai:gpt-4o-mini", ("FALLBACK_MODELS",)),
        (
            "claude-haiku-4-5",
            "anthropic:claude-haiku-4-5",
            ("FALLBACK_MODELS", "AGENT_MODELS[coach]"),
        ),
        ("gpt-4.1", "openai:gpt-4.1", ("USER_MODELS",)),
        ("70b", "groq:Llama 3.3/70B", ("AGENT_MODELS[tutor]",)),
        ("grok-3-mini", "xai:grok-3-mini", ("PIPELINE_MODELS[learn]",)),
    ]
    assert all(ALIAS_PATTERN.fullmatch(alias) for alias in catalog.aliases)
    # USER_MODELS is the users' menu; without it, DEFAULT_MODEL and FALLBACK_MODELS are.
    assert [e.alias for e in catalog.offered()] == ["gpt-4.1"]
    plain = Catalog.build(configured_models(Settings(_env_file=None, default_model="openai:a")))  # type: ignore[call-arg]
    assert [e.alias for e in plain.offered()] == ["a"]


@pytest.mark.parametrize(
    ("spec", "taken", "alias"),
    [
        ("openai:gpt-4o", (), "gpt-4o"),
        ("openai:gpt-4o", ("gpt-4o",), "openai-gpt-4o"),
        ("openai:gpt-4o", ("gpt-4o", "openai-gpt-4o"), "gpt-4o-2"),
        ("openai:gpt-4o", ("gpt-4o", "openai-gpt-4o", "gpt-4o-2"), "gpt-4o-3"),
        ("mlx:/models/Tiny Llama/", (), "tiny-llama"),
        ("vllm:___", (), "vllm"),
        ("openrouter:" + "x" * 50, (), "x" * 32),
    ],
)
def test_derived_aliases_are_valid_and_unique(
    spec: str, taken: tuple[str, ...], alias: str
) -> None:
    derived = derive_alias(parse_spec(spec), taken)
    assert derived == alias
    assert ALIAS_PATTERN.fullmatch(derived)


def test_stored_rows_edit_environment_entries_and_add_new_ones() -> None:
    settings = Settings(_env_file=None, default_model="openai:gpt-4o")  # type: ignore[call-arg]
    rows = [
        # An admin's edit of the environment entry (same alias, same spec).
        ModelCatalogRow(alias="gpt-4o", spec="openai:gpt-4o", display_name="GPT-4o", max_tokens=9),
        ModelCatalogRow(alias="fast", spec="groq:llama", temperature=0.2, offered_to_users=True),
    ]
    catalog = Catalog.build(configured_models(settings), rows)
    edited = catalog.get("GPT-4o")
    assert edited is not None
    assert (edited.label, edited.params, edited.named_in, edited.stored) == (
        "GPT-4o (openai:gpt-4o)",
        ModelParams(max_tokens=9),
        ("DEFAULT_MODEL",),
        True,
    )
    assert edited.offered_to_users  # the default (DEFAULT_MODEL is on the menu) is kept
    fast = catalog.get("fast")
    assert fast is not None
    assert (fast.label, fast.offered_to_users, fast.named_in) == ("groq:llama", True, ())
    assert catalog.any_params


def test_a_stored_alias_for_another_model_moves_the_environment_entry_aside() -> None:
    settings = Settings(_env_file=None, default_model="openai:gpt-4o")  # type: ignore[call-arg]
    rows = [ModelCatalogRow(alias="gpt-4o", spec="openrouter:openai/gpt-4o")]
    catalog = Catalog.build(configured_models(settings), rows)
    assert {e.alias: str(e.spec) for e in catalog} == {
        "openai-gpt-4o": "openai:gpt-4o",
        "gpt-4o": "openrouter:openai/gpt-4o",
    }


def test_model_text_reads_as_an_alias_a_spec_or_an_openrouter_id() -> None:
    settings = Settings(_env_file=None, default_model="openai:gpt-4o")  # type: ignore[call-arg]
    rows = [ModelCatalogRow(alias="fast", spec="openai:gpt-4o", max_tokens=5)]
    catalog = Catalog.build(configured_models(settings), rows)
    by_alias = catalog.interpret("Fast")
    assert (by_alias.spec, by_alias.alias, by_alias.params) == (
        parse_spec("openai:gpt-4o"),
        "fast",
        ModelParams(max_tokens=5),
    )
    # A spec typed directly runs as the environment's entry for it, then the first alias.
    by_spec = catalog.interpret("openai:gpt-4o")
    assert (by_spec.alias, by_spec.params) == ("gpt-4o", ModelParams())
    bare = catalog.interpret("anthropic/claude-sonnet-4.5")
    assert (bare.spec, bare.entry, bare.label) == (
        ModelSpec("openrouter", "anthropic/claude-sonnet-4.5"),
        None,
        "openrouter:anthropic/claude-sonnet-4.5",
    )
    with pytest.raises(UnknownAliasError, match=r"unknown alias 'fsat'; did you mean fast\?"):
        catalog.interpret("fsat")
    with pytest.raises(ModelSpecError, match="unknown provider"):
        catalog.interpret("opneai:gpt-4o")


def test_a_stored_row_that_no_longer_parses_does_not_hide_the_others() -> None:
    rows = [
        ModelCatalogRow(alias="broken", spec="gone:model"),
        ModelCatalogRow(alias="fine", spec="openai:x"),
    ]
    catalog = Catalog.build([], rows)
    assert catalog.aliases == ["fine"]


# --- the arguments of /catalog ---


def test_options_with_quotes_clears_and_curly_quotes() -> None:
    words = split_args("add fast openai:x name=“Fast one” max_tokens=80 temperature= users=yes")
    assert words[:3] == ["add", "fast", "openai:x"]
    options = parse_options(words[3:])
    assert options.values == {
        "name": "Fast one",
        "max_tokens": 80,
        "temperature": None,
        "users": True,
    }
    assert parse_options(['name=""', "timeout=2.5"]).values == {"name": None, "timeout": 2.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name="Fast one', 'the quote in name="Fast one is not closed'),
        ('name=Fast"one"', 'a quote in Fast"one" is misplaced'),
        ("colour=red", "unknown key 'colour'; keys: name, timeout, max_tokens, temperature, users"),
        ("spec=openai:y", "the spec of an alias never changes"),
        ("max_tokens=1.5", "max_tokens must be a whole number from 1 to 200000, not '1.5'"),
        ("max_tokens=0", "max_tokens must be a whole number from 1 to 200000, not '0'"),
        ("temperature=nan", "temperature must be a number from 0 to 2, not 'nan'"),
        ("timeout=-1", "timeout (seconds) must be a number from 0.1 to 600, not '-1'"),
        ("users=true", "users must be yes or no, not 'true'"),
        ("max_tokens", "expected key=value, got 'max_tokens'"),
        ("users=yes users=no", "users is given twice"),
        ("name=" + "x" * 65, "name is 65 characters long; at most 64"),
    ],
)
def test_bad_options_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_options(split_args(text))
    assert message in str(info.value)


# --- whether a model can run here ---


async def test_a_model_that_cannot_run_here_names_what_to_set(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, default_model="openai:x", openai_api_key="sk")  # type: ignore[call-arg]
    catalog = Catalog.build(configured_models(settings))
    checker = ModelChecker(settings, None, local_available=lambda: False)
    with pytest.raises(
        ModelProblem,
        match=re.escape("needs the local-model extra: .venv/bin/pip install -e '.[local]'"),
    ):
        await checker.check("mlx:tiny", catalog)
    checker = ModelChecker(settings, None, local_available=lambda: True)
    with pytest.raises(ModelProblem, match="needs MLX_MODEL_PATH set to its model folder"):
        await checker.check("mlx:tiny", catalog)
    with pytest.raises(ModelProblem, match="is not a folder"):
        await checker.check(f"mlx:{tmp_path / 'missing'}", catalog)
    picked, notes = await checker.check(f"mlx:{tmp_path}", catalog)
    assert (picked.spec.provider, notes) == ("mlx", [])
    with pytest.raises(ModelProblem, match="xai:grok needs XAI_API_KEY, which is not set"):
        await checker.check("xai:grok", catalog)
    with pytest.raises(ModelProblem, match="needs OPENROUTER_API_KEY"):
        await checker.check("vendor/model", catalog)
    # vLLM runs without a key.
    assert (await checker.check("vllm:local-model", catalog))[1] == []
