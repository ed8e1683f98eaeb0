"""Model specs: the `provider:model` strings used everywhere in configuration.

One table says, for every provider, which wire format it speaks, which variables hold its key and
base URL, and where it lives by default. Parsing happens here and only here, so a typo gets the
same "did you mean" answer whether it came from `.env`, `/setmodel` or `/model`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from bot.quoting import quoted

WireFormat = Literal["openai", "anthropic", "local"]


class ModelSpecError(ValueError):
    """A model spec that cannot be used: unknown provider, empty model, missing key.

    The message always names what to change (a variable or the spec itself).
    """


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str
    wire: WireFormat
    key_var: str | None
    base_url_var: str | None
    default_base_url: str | None
    # vLLM and local models run without a key.
    needs_key: bool = True
    # A small, cheap chat model of this provider: DEFAULT_MODEL when only this key is given.
    starter_model: str | None = None
    # The per-model parameters its API takes (`bot.llm.parameters`); anthropic 2.x
    # `messages.create` has no temperature.
    takes: frozenset[str] = frozenset({"timeout", "max_tokens", "temperature"})
    # Runs on the operator's own machines (mlx in the bot's process, the operator's vLLM
    # server): what a user's `local` preference allows, and `online` refuses.
    local: bool = False


PROVIDERS: dict[str, ProviderInfo] = {
    p.name: p
    for p in (
        ProviderInfo(
            "openrouter",
            "openai",
            "OPENROUTER_API_KEY",
            "OPENROUTER_BASE_URL",
            "https://openrouter.ai/api/v1",
            starter_model="openai/gpt-4o-mini",
        ),
        ProviderInfo(
            "openai",
            "openai",
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "https://api.openai.com/v1",
            starter_model="gpt-4o-mini",
        ),
        ProviderInfo(
            "anthropic",
            "anthropic",
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "https://api.anthropic.com",
            starter_model="claude-haiku-4-5",
            takes=frozenset({"timeout", "max_tokens"}),
        ),
        ProviderInfo(
            "groq",
            "openai",
            "GROQ_API_KEY",
            "GROQ_BASE_URL",
            "https://api.groq.com/openai/v1",
            starter_model="llama-3.3-70b-versatile",
        ),
        ProviderInfo(
            "xai",
            "openai",
            "XAI_API_KEY",
            "XAI_BASE_URL",
            "https://api.x.ai/v1",
            starter_model="grok-3-mini",
        ),
        ProviderInfo(
            "vllm",
            "openai",
            "VLLM_API_KEY",
            "VLLM_BASE_URL",
            "http://127.0.0.1:8000/v1",
            needs_key=False,
            local=True,
        ),
        ProviderInfo("mlx", "local", None, None, None, needs_key=False, local=True),
    )
}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    provider: str
    model: str

    @property
    def info(self) -> ProviderInfo:
        return PROVIDERS[self.provider]

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def is_local(self) -> bool:
        """On the operator's machines (mlx, vLLM); a user's `local` preference allows only these."""
        return PROVIDERS[self.provider].local


# Longer than any real model id (or a local model's path); a longer one is a paste gone wrong.
MAX_MODEL_CHARS = 256


def parse_spec(raw: str, *, variable: str | None = None) -> ModelSpec:
    """Parse `provider:model`; the model part may itself contain `/` and `:`.

    >>> parse_spec("openrouter:anthropic/claude-sonnet-4.5")
    ModelSpec(provider='openrouter', model='anthropic/claude-sonnet-4.5')
    """
    where = f"{variable}: " if variable else ""
    text = raw.strip()
    provider, sep, model = text.partition(":")
    provider = provider.strip().lower()
    model = model.strip()
    if not sep or not provider or not model:
        raise ModelSpecError(
            f"{where}{quoted(raw)} is not a model spec; write provider:model, "
            f"e.g. openrouter:openai/gpt-4o-mini (providers: {', '.join(PROVIDERS)})"
        )
    if provider not in PROVIDERS:
        close = difflib.get_close_matches(provider, PROVIDERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelSpecError(
            f"{where}unknown provider {quoted(provider)} in {quoted(raw)}{hint} "
            f"(providers: {', '.join(PROVIDERS)})"
        )
    if len(model) > MAX_MODEL_CHARS:
        raise ModelSpecError(
            f"{where}the model name in {quoted(raw)} is {len(model)} characters long; "
            f"at most {MAX_MODEL_CHARS}"
        )
    return ModelSpec(provider, model)
