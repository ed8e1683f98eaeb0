"""`key=value` arguments of the admin commands, as Telegram and the console deliver them.

    options = parse_options('name="GPT-4o fast" max_tokens=800 temperature=')
    options.values   -> {"name": "GPT-4o fast", "max_tokens": 800, "temperature": None}

A value may be quoted (`name="two words"`); phones often type curly quotes, which count as
straight ones. `key=` (nothing after the sign) clears that key. Every mistake raises
`OptionError` with a one-line message saying what is wrong: an unknown key, a bad value, a quote
that is not closed, a key given twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.quoting import clipped, quoted

__all__ = ["OPTION_KEYS", "OptionError", "Options", "parse_options", "split_args"]

QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "«": '"', "»": '"'})
MAX_NAME = 64


class OptionError(ValueError):
    """The arguments cannot be read; the message says what to fix."""


def split_args(text: str) -> list[str]:
    """Whitespace-separated words, keeping quoted spans (`name="a b"`) in one word."""
    words: list[str] = []
    current: list[str] = []
    in_quote = False
    for char in text.translate(QUOTES):
        if char == '"':
            in_quote = not in_quote
        elif char.isspace() and not in_quote:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(char)
    if in_quote:
        raise OptionError(
            f'the quote in {clipped("".join(current))} is not closed; write name="..."'
        )
    if current:
        words.append("".join(current))
    return words


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if '"' in value:
        raise OptionError(f"a quote in {clipped(value)} is misplaced; quote the whole value")
    return value


def _name(value: str) -> str:
    if len(value) > MAX_NAME:
        raise OptionError(f"name is {len(value)} characters long; at most {MAX_NAME}")
    return value


def _number(kind: type[int] | type[float], low: float, high: float, what: str) -> Parser:
    def parse(value: str) -> float | int:
        try:
            number = kind(value)
        except ValueError:
            raise OptionError(
                f"{what} must be {_range(kind, low, high)}, not {quoted(value)}"
            ) from None
        if not low <= number <= high or number != number:  # NaN is not in any range
            raise OptionError(f"{what} must be {_range(kind, low, high)}, not {quoted(value)}")
        return number

    return parse


def _range(kind: type[int] | type[float], low: float, high: float) -> str:
    noun = "a whole number" if kind is int else "a number"
    return f"{noun} from {low:g} to {high:g}"


def _yes_no(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("yes", "no"):
        raise OptionError(f"users must be yes or no, not {quoted(value)}")
    return lowered == "yes"


Parser = Callable[[str], object]

# The keys of `/catalog add` and `/catalog edit`, each with the parser of its value.
OPTION_KEYS: Mapping[str, Parser] = {
    "name": _name,
    "timeout": _number(float, 0.1, 600, "timeout (seconds)"),
    "max_tokens": _number(int, 1, 200_000, "max_tokens"),
    "temperature": _number(float, 0, 2, "temperature"),
    "users": _yes_no,
}


@dataclass(frozen=True, slots=True)
class Options:
    # Each key given, with its parsed value; None: `key=` (clear it).
    values: dict[str, object]


def parse_options(words: list[str]) -> Options:
    values: dict[str, object] = {}
    for word in words:
        key, sep, raw = word.partition("=")
        key = key.strip().lower()
        if not sep:
            raise OptionError(
                f"expected key=value, got {quoted(word)} (keys: {', '.join(OPTION_KEYS)})"
            )
        parser = OPTION_KEYS.get(key)
        if parser is None:
            hint = " (the spec of an alias never changes: add a new alias)" if key == "spec" else ""
            raise OptionError(f"unknown key {quoted(key)}; keys: {', '.join(OPTION_KEYS)}{hint}")
        if key in values:
            raise OptionError(f"{key} is given twice")
        value = _unquote(raw.strip())
        values[key] = parser(value) if value else None
    return Options(values)
