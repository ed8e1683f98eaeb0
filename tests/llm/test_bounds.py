"""The output bound on this side of the wire (`bot.llm.bounds`), on in-process providers."""

from __future__ import annotations

from collections.abc import Sequence

from bot.llm.bounds import BoundedProvider, SurrogateJoiner, clip_to_tokens, estimate_tokens
from bot.llm.function_provider import CallInfo, FunctionProvider
from bot.llm.types import ChatMessage, user


def _long(messages: Sequence[ChatMessage], info: CallInfo) -> str:
    return "ünïcödé words " * 500


async def test_a_text_answer_past_its_bound_is_cut_there() -> None:
    llm = BoundedProvider(FunctionProvider(_long, provider="test", model="m"))
    response = await llm.complete([user("hi")], max_tokens=20)
    assert estimate_tokens(response.text) <= 20
    assert response.text == clip_to_tokens(_long([], CallInfo("t", "m", None, False)), 20)
    assert response.finish_reason == "length"
    # Streamed: the same bound, the stream closed there, a final response with what was kept.
    deltas: list[str] = []
    final = None
    async for chunk in llm.stream([user("hi")], max_tokens=30):
        deltas.append(chunk.delta)
        final = chunk.response or final
    assert final is not None
    assert final.finish_reason == "length"
    assert final.text == "".join(deltas)
    assert estimate_tokens(final.text) <= 30


def test_clipping_never_splits_a_character_and_surrogate_halves_are_joined() -> None:
    assert clip_to_tokens("😀😀", 1) == "😀"  # 4 bytes a token: one emoji, not half of two
    assert clip_to_tokens("éé", 0) == ""
    joiner = SurrogateJoiner()
    assert joiner.feed("a \ud83d") == "a "
    assert joiner.feed("\ude00 b") == "😀 b"
    assert joiner.feed("\ud83d") == ""
    assert joiner.flush() == "\ufffd"  # a half that never got its partner
    assert joiner.feed("x \ude00") == "x \ufffd"
