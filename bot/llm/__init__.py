"""The provider layer: every model the bot talks to, behind one `LLMProvider` surface.

    from bot.llm import ProviderRegistry, user
    registry = ProviderRegistry(settings)
    reply = await registry.chain(settings.default_model).complete([user("hi")])

Light names (types, errors, the protocol, specs, fallback, structured output) are imported here
directly. The SDK-backed names (`ProviderRegistry`, `OpenAICompatibleProvider`,
`AnthropicProvider`) load on first use: importing `bot.llm.types` must not pull in the SDKs, and
`bot.config` imports `bot.llm.specs`, which the registry in turn needs (no import cycle).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bot.llm.errors import (
    AllModelsFailed,
    LLMError,
    MalformedResponse,
    ProviderConnectionError,
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    RateLimited,
    RequestRejected,
    StructuredOutputError,
)
from bot.llm.fallback import CURRENT_ATTEMPT, AttemptContext, FallbackProvider
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.protocol import LLMProvider
from bot.llm.specs import PROVIDERS, ModelSpec, ModelSpecError, parse_spec
from bot.llm.structured import complete_structured
from bot.llm.types import (
    Attempt,
    ChatMessage,
    LLMResponse,
    StreamChunk,
    Usage,
    assistant,
    system,
    user,
)

if TYPE_CHECKING:
    from bot.llm.anthropic_provider import AnthropicProvider
    from bot.llm.openai_compat import OpenAICompatibleProvider
    from bot.llm.registry import ProviderRegistry, validate_settings

_LAZY = {
    "ProviderRegistry": "bot.llm.registry",
    "validate_settings": "bot.llm.registry",
    "OpenAICompatibleProvider": "bot.llm.openai_compat",
    "AnthropicProvider": "bot.llm.anthropic_provider",
}

__all__ = [
    "CURRENT_ATTEMPT",
    "PROVIDERS",
    "AllModelsFailed",
    "AnthropicProvider",
    "Attempt",
    "AttemptContext",
    "CallInfo",
    "ChatMessage",
    "FallbackProvider",
    "FunctionProvider",
    "LLMError",
    "LLMProvider",
    "LLMResponse",
    "MalformedResponse",
    "ModelSpec",
    "ModelSpecError",
    "OpenAICompatibleProvider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRegistry",
    "ProviderServerError",
    "ProviderTimeout",
    "RateLimited",
    "RequestRejected",
    "StreamChunk",
    "StructuredOutputError",
    "Usage",
    "assistant",
    "complete_structured",
    "parse_spec",
    "system",
    "user",
    "validate_settings",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bot.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
