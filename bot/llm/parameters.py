"""Per-model parameters: a catalog entry's timeout, max_tokens and temperature on every call.

    llm = with_parameters(leaf, ModelParams(max_tokens=800, temperature=0.3))
    await llm.complete(messages, temperature=0)     # sent with temperature=0.3, max_tokens=800

A value set on the model wins over the one the agent passes (the strategist asks for 0.2; an
admin who set 0.7 on its model gets 0.7); an empty one leaves the agent's own. A parameter the
provider does not take (`ProviderInfo.takes`: anthropic 2.x `messages.create` has no
temperature) is left out, and that is logged once per model, so the operator knows the setting
does nothing there instead of finding out from the bills.

The wrapper sits around one leaf provider (its `spec` is the leaf's), inside a fallback chain: a
fallback model gets its own entry's parameters, not the chosen model's. The circuit breakers of
`bot.llm.health` key on the leaf, so two entries of one model share its health.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bot.llm.protocol import LLMProvider
from bot.llm.specs import PROVIDERS, ModelSpec
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk

__all__ = [
    "NO_PARAMS",
    "PARAMETER_NAMES",
    "ModelParams",
    "ParameterizedProvider",
    "ParamsFor",
    "with_parameters",
]

log = logging.getLogger(__name__)

PARAMETER_NAMES = ("timeout", "max_tokens", "temperature")

# (spec, parameter) pairs already logged as not taken by their provider.
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class ModelParams:
    """What a catalog entry sets for its model; None: the agent's own value."""

    timeout: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None

    def __bool__(self) -> bool:
        return (
            self.timeout is not None
            or self.max_tokens is not None
            or (self.temperature is not None)
        )

    def items(self) -> list[tuple[str, float | int]]:
        """The parameters that are set, by name, in `PARAMETER_NAMES` order."""
        values = (self.timeout, self.max_tokens, self.temperature)
        return [(n, v) for n, v in zip(PARAMETER_NAMES, values, strict=True) if v is not None]


NO_PARAMS = ModelParams()

# Each model's own parameters (a catalog entry's), None or empty when it sets none.
ParamsFor = Callable[[ModelSpec], ModelParams | None]


class ParameterizedProvider:
    """`inner` with `params` applied to every call (see the module docstring)."""

    def __init__(self, inner: LLMProvider, params: ModelParams) -> None:
        self.inner = inner
        self.params = params
        self.provider = inner.provider
        self.model = inner.model
        info = PROVIDERS.get(inner.provider)
        takes = info.takes if info is not None else frozenset(PARAMETER_NAMES)
        self._timeout = params.timeout if "timeout" in takes else None
        self._max_tokens = params.max_tokens if "max_tokens" in takes else None
        self._temperature = params.temperature if "temperature" in takes else None
        for name, _value in params.items():
            if name not in takes and (inner.spec, name) not in _warned:
                _warned.add((inner.spec, name))
                log.warning(
                    "%s takes no %s: the catalog's %s for it is not sent", inner.spec, name, name
                )

    @property
    def spec(self) -> str:
        return self.inner.spec

    def __repr__(self) -> str:
        return f"ParameterizedProvider({self.inner!r}, {self.params!r})"

    def __getattr__(self, name: str) -> Any:
        # Anything else a caller looks at (a local provider's pool, a test double's calls) is
        # the leaf's.
        return getattr(self.__dict__["inner"], name)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> LLMResponse:
        return await self.inner.complete(
            messages,
            schema=schema,
            temperature=temperature if self._temperature is None else self._temperature,
            max_tokens=max_tokens if self._max_tokens is None else self._max_tokens,
            timeout=timeout if self._timeout is None else self._timeout,
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        inner = self.inner.stream(
            messages,
            temperature=temperature if self._temperature is None else self._temperature,
            max_tokens=max_tokens if self._max_tokens is None else self._max_tokens,
            timeout=timeout if self._timeout is None else self._timeout,
        )
        try:
            async for chunk in inner:
                yield chunk
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    async def close(self) -> None:
        """Nothing: the leaf belongs to the registry, which closes it."""


def with_parameters(provider: LLMProvider, params: ModelParams | None) -> LLMProvider:
    """`provider` itself when nothing is set, else wrapped."""
    if not params:
        return provider
    return ParameterizedProvider(provider, params)
