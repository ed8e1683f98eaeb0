"""Output bounds: no model's answer outgrows the `max_tokens` of the call, whatever the model does.

    llm = bounded(leaf)
    async for chunk in llm.stream(messages, max_tokens=800):   # at most ~800 tokens of text
        ...

`max_tokens` is sent to the model, which normally stops there itself. But a model (or a proxy, or
a self-hosted server) that ignores it streamed a 200 KB reply that became 99 Telegram messages
and then rode in every later prompt (issue 19). So the bound is also kept on this side: text is
counted as it arrives (`estimate_tokens`), and once the bound is reached the stream is closed
(which hangs up on the server) and ends with what fits, `finish_reason="length"`. A call without
`max_tokens` is bounded by `DEFAULT_OUTPUT_TOKENS`. A non-streamed answer over the bound has its
text cut the same way (a structured answer is left to its schema, which parses or fails).

The same seam keeps streamed text whole: a character outside the BMP (an emoji) that a server
sends as a JSON surrogate pair split across two chunks (`"\\ud83d"`, then `"\\ude00"`) arrives as
two lone surrogates, which no UTF-8 encoder takes (the reply ended with the apology). The high
half is held back until its partner comes; one that never does becomes U+FFFD.

Tokens are estimated, not counted: one per 4 bytes of UTF-8, the usual rule for English on
OpenAI's tokenizers and about right elsewhere (Cyrillic ~2 characters a token, CJK ~1), with no
tokenizer to load for each provider's models. The prompt budget (`bot.agents.budget`) uses the
same estimate, so the two bounds are in one unit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pydantic import BaseModel

from bot.llm.protocol import LLMProvider
from bot.llm.types import ChatMessage, LLMResponse, StreamChunk, Usage

__all__ = [
    "BYTES_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "BoundedProvider",
    "SurrogateJoiner",
    "bounded",
    "clip_to_tokens",
    "estimate_tokens",
]

log = logging.getLogger(__name__)

BYTES_PER_TOKEN = 4
# The bound of a call that names none (Anthropic's API requires one; this is the same figure).
DEFAULT_OUTPUT_TOKENS = 4096


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` is (see the module docstring)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return (size + BYTES_PER_TOKEN - 1) // BYTES_PER_TOKEN


def clip_to_tokens(text: str, tokens: int) -> str:
    """The longest start of `text` whose estimate is at most `tokens`."""
    limit = max(tokens, 0) * BYTES_PER_TOKEN
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


_REPLACEMENT = "\ufffd"


def _is_high(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


def _is_low(char: str) -> bool:
    return "\udc00" <= char <= "\udfff"


class SurrogateJoiner:
    """Joins surrogate pairs split across deltas; lone halves become U+FFFD."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, delta: str) -> str:
        if not self._pending and delta.isascii():
            return delta  # the common case: nothing to join, nothing to check
        text = self._pending + delta
        self._pending = ""
        if text and _is_high(text[-1]):
            text, self._pending = text[:-1], text[-1]
        return _whole(text)

    def flush(self) -> str:
        pending, self._pending = self._pending, ""
        return _REPLACEMENT if pending else ""


_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole(text: str) -> str:
    """`text` with each surrogate pair made one character and any lone half replaced."""
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if _is_high(char) and i + 1 < len(text) and _is_low(text[i + 1]):
            out.append(text[i : i + 2].encode("utf-16", "surrogatepass").decode("utf-16"))
            i += 2
            continue
        out.append(_REPLACEMENT if "\ud800" <= char <= "\udfff" else char)
        i += 1
    return "".join(out)


class BoundedProvider:
    """`inner` whose answers keep to their `max_tokens` (see the module docstring)."""

    def __init__(self, inner: LLMProvider) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.model = inner.model

    @property
    def spec(self) -> str:
        return self.inner.spec

    def __repr__(self) -> str:
        return f"BoundedProvider({self.inner!r})"

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
        response = await self.inner.complete(
            messages,
            schema=schema,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
        )
        bound = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
        if schema is None and estimate_tokens(response.text) > bound:
            log.warning(
                "%s answered past max_tokens=%d (about %d tokens); cut there",
                self.inner.spec,
                bound,
                estimate_tokens(response.text),
            )
            response.text = clip_to_tokens(response.text, bound)
            response.finish_reason = "length"
        return response

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamChunk]:
        bound = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
        inner = self.inner.stream(
            messages, temperature=temperature, max_tokens=max_tokens, timeout=timeout
        )
        joiner = SurrogateJoiner()
        kept: list[str] = []
        used = 0  # bytes of UTF-8 kept so far
        limit = bound * BYTES_PER_TOKEN
        try:
            async for chunk in inner:
                if chunk.response is not None:
                    tail = joiner.flush()
                    if tail:
                        kept.append(tail)
                        yield StreamChunk(delta=tail)
                    if chunk.delta:
                        text = _whole(chunk.delta)
                        kept.append(text)
                        yield StreamChunk(delta=text)
                    chunk.response.text = _whole(chunk.response.text)
                    yield StreamChunk(response=chunk.response)
                    return
                delta = joiner.feed(chunk.delta)
                if not delta:
                    continue
                size = len(delta) if delta.isascii() else len(delta.encode("utf-8"))
                if used + size > limit:
                    piece = delta.encode("utf-8")[: limit - used].decode("utf-8", "ignore")
                    if piece:
                        kept.append(piece)
                        yield StreamChunk(delta=piece)
                    log.warning(
                        "%s streamed past max_tokens=%d; the stream is closed there",
                        self.inner.spec,
                        bound,
                    )
                    yield StreamChunk(response=self._cut_response(kept, bound))
                    return
                used += size
                kept.append(delta)
                yield chunk if delta is chunk.delta else StreamChunk(delta=delta)
        finally:
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    def _cut_response(self, kept: list[str], bound: int) -> LLMResponse:
        text = "".join(kept)
        return LLMResponse(
            text=text,
            model=self.inner.model,
            provider=self.inner.provider,
            usage=Usage(completion_tokens=min(estimate_tokens(text), bound)),
            finish_reason="length",
        )

    async def close(self) -> None:
        """Nothing: the leaf belongs to the registry, which closes it."""


def bounded(provider: LLMProvider) -> LLMProvider:
    return provider if isinstance(provider, BoundedProvider) else BoundedProvider(provider)
