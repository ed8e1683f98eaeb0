"""Keeping secrets and (optionally) conversation content out of traces.

Everything tracing records passes through one `Scrubber` first: every configured secret
(`Settings.secrets()`: provider keys, the bot token, the InsForge key, the Langfuse secret...),
secrets registered later (`add_secret`, e.g. a user's own key), and anything shaped like a well
known credential (`sk-...`, `sk-ant-...`, `gsk_...`, `xai-...`, a Telegram bot token, a bearer
token) is replaced by `[secret]`. Mapping entries whose key names a credential (`api_key`,
`authorization`, `token`...) lose their value whatever it looks like.

The same scrubber runs a second time on every exported span attribute (Langfuse's
`mask_otel_spans` hook), so a secret that reached an attribute another way is still caught before
it leaves the process.

With `redact_content`, prompts, replies and step outputs are replaced by `[redacted]` entirely;
models, tokens, costs, timings and errors' types stay.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

SECRET = "[secret]"
REDACTED = "[redacted]"

# Secrets shorter than this are not searched for: replacing every "abc" would wreck the traces
# while protecting nothing (no real key is that short).
MIN_SECRET_LENGTH = 6

_CREDENTIAL_SHAPES = re.compile(
    r"""
      \bsk-[A-Za-z0-9_\-]{16,}            # OpenAI, OpenRouter (sk-or-...), Anthropic (sk-ant-...)
    | \b[sp]k-lf-[A-Za-z0-9_\-]{8,}       # Langfuse keys
    | \bgsk_[A-Za-z0-9]{16,}              # Groq
    | \bxai-[A-Za-z0-9]{16,}              # xAI
    | \b\d{5,12}:[A-Za-z0-9_\-]{30,}      # Telegram bot token
    | (?i:bearer)\s+[A-Za-z0-9._\-~+/=]{16,}
    """,
    re.VERBOSE,
)

# Every credential shape above needs one of these in the text (or a Telegram token's tail, or
# "bearer"). Checking them first costs ~30 us for 9 kB of prose, where the shapes' regex costs
# ~2.3 ms (it tries six alternatives at every position): a generation's prompt is scrubbed on
# every model call, and this was the largest single cost of tracing.
_SHAPE_HINTS = ("sk-", "k-lf-", "gsk_", "xai-")
_TELEGRAM_TOKEN_TAIL = re.compile(r":[A-Za-z0-9_\-]{30}")
# The same hints as bytes, for a whole encoded span at once (`Scrubber.may_change`).
_SHAPE_HINT_BYTES = tuple(hint.encode() for hint in _SHAPE_HINTS)
_TELEGRAM_TOKEN_TAIL_BYTES = re.compile(_TELEGRAM_TOKEN_TAIL.pattern.encode())
# The shortest text any shape matches: "pk-lf-" and 8 more characters.
_SHORTEST_CREDENTIAL = 14


def _may_hold_credential(value: str) -> bool:
    """False only when `_CREDENTIAL_SHAPES` cannot match `value`."""
    if len(value) < _SHORTEST_CREDENTIAL:
        return False  # most values recorded are short: keys, roles, model names, numbers
    # A plain loop, not `any(...)`: this runs for every string traced.
    for hint in _SHAPE_HINTS:
        if hint in value:
            return True
    return _TELEGRAM_TOKEN_TAIL.search(value) is not None or "bearer" in value.lower()


_CREDENTIAL_KEYS = re.compile(
    r"(api[_-]?key|apikey|authorization|auth[_-]?token|access[_-]?token|secret|password|"
    r"^token$|bot[_-]?token|cookie|x-api-key)",
    re.IGNORECASE,
)


_KEY_NAMES: dict[str, bool] = {}


def _names_credential(name: str) -> bool:
    """`_CREDENTIAL_KEYS.search(name)`, remembered: mappings repeat a few dozen keys."""
    found = _KEY_NAMES.get(name)
    if found is None:
        found = _CREDENTIAL_KEYS.search(name) is not None
        if len(_KEY_NAMES) < 4096:
            _KEY_NAMES[name] = found
    return found


def _forms(secret: str) -> set[str]:
    """The secret as written and as it appears inside JSON (attributes are JSON-encoded)."""
    forms = {secret}
    encoded = json.dumps(secret)[1:-1]
    forms.add(encoded)
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


class Scrubber:
    """Replaces secrets in any JSON-like value. Thread-safe: the export thread uses it too."""

    def __init__(self, secrets: Iterable[str] = (), *, redact_content: bool = False) -> None:
        self.redact_content = redact_content
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        # Longest first, so a secret containing another is replaced whole.
        self._ordered: tuple[str, ...] = ()
        self._ordered_bytes: tuple[bytes, ...] = ()  # the same, UTF-8, for `may_change`
        self.add_secrets(secrets)

    @property
    def secrets(self) -> frozenset[str]:
        """Every form of every secret known (as written and JSON-escaped)."""
        return self._secrets

    def add_secret(self, secret: str | None) -> None:
        if secret:
            self.add_secrets([secret])

    def add_secrets(self, secrets: Iterable[str]) -> None:
        found: set[str] = set()
        for secret in secrets:
            if secret:
                found |= _forms(secret)
        if not found:
            return
        with self._lock:
            if found <= self._secrets:
                return
            self._secrets = self._secrets | found
            # Readers swap to the new tuples atomically.
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))
            self._ordered_bytes = tuple(s.encode(errors="replace") for s in self._ordered)

    def may_change(self, data: bytes) -> bool:
        """False only when `text` would leave every string encoded (UTF-8) in `data` as it
        is: no known secret in it and no credential shape's hint. One pass over a whole
        span's bytes instead of one `text` per attribute (the direct export's safety net)."""
        for secret in self._ordered_bytes:
            if secret in data:
                return True
        for hint in _SHAPE_HINT_BYTES:
            if hint in data:
                return True
        return _TELEGRAM_TOKEN_TAIL_BYTES.search(data) is not None or b"bearer" in data.lower()

    def text(self, value: str) -> str:
        # `in` first: a substring search in C, ten times faster than one alternation regex.
        for secret in self._ordered:
            if secret in value:
                value = value.replace(secret, SECRET)
        if _may_hold_credential(value):
            value = _CREDENTIAL_SHAPES.sub(SECRET, value)
        return value

    def value(self, value: Any) -> Any:
        """A JSON-friendly copy of `value` with every secret replaced (`jsonable`'s copy,
        scrubbed as it is made)."""
        return self._walk(value)

    def content(self, value: Any) -> Any:
        """Conversation content (prompts, replies, outputs): redacted entirely when configured."""
        if value is None:
            return None
        if self.redact_content:
            return REDACTED
        return self.value(value)

    def _walk(self, value: Any) -> Any:
        # One pass where `_walk(jsonable(value))` made two copies: the export process scrubs
        # every record's values, and they arrive plain already (the bot sent `jsonable` data),
        # so the plain types are tried first, by exact type.
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is dict:
            cleaned_plain: dict[str, Any] = {}
            for key, item in value.items():
                name = self.text(key if type(key) is str else str(key))
                cleaned_plain[name] = SECRET if _names_credential(name) else self._walk(item)
            return cleaned_plain
        if kind is list or kind is tuple:
            return [self._walk(item) for item in value]
        if value is None or kind is int or kind is float or kind is bool:
            return value
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, int | float | bool):
            return value
        if isinstance(value, BaseModel):
            return self._walk(value.model_dump(mode="json"))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return self._walk(_public_fields(value))
        if isinstance(value, Mapping):
            cleaned: dict[str, Any] = {}
            for key, item in value.items():
                name = self.text(str(key))
                cleaned[name] = SECRET if _CREDENTIAL_KEYS.search(name) else self._walk(item)
            return cleaned
        if isinstance(value, list | tuple | set | frozenset):
            return [self._walk(item) for item in value]
        return self.text(repr(value))


def jsonable(value: Any) -> Any:
    """Turn models, dataclasses and other objects into plain JSON-like data."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: jsonable(item) for name, item in _public_fields(value).items()}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    return repr(value)


def _public_fields(value: Any) -> dict[str, Any]:
    return {
        f.name: getattr(value, f.name)
        for f in dataclasses.fields(value)
        if not f.name.startswith("_")
    }


def truncate(value: Any, limit: int) -> Any:
    """Shorten long strings inside `value` (a step's output summary needs no whole essays)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"… [{len(value) - limit} more]"
    if isinstance(value, dict):
        return {key: truncate(item, limit) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [truncate(item, limit) for item in value]
    return value
