"""Which models are failing right now: a circuit breaker per provider, shared by every chain.

    health = ModelHealth()
    chain = FallbackProvider([primary, backup], health=health)

Fallback alone makes every message pay for a model that is down: each call first waits for the
broken model (its timeout, its 429 `Retry-After`, the SDK's retry backoff) and only then asks the
backup. In the fault suite (`tests/bench/fault_suite.py`) a hanging default model cost every
message 10-25 s, and a 500ing one 1.5 s, although the backup answered at once. So:

    closed     the model is called; `FAILURES_TO_OPEN` retryable failures in a row open it
    open       the model is skipped (the chain goes straight to the next one) for a cool-down:
               `COOL_DOWN` seconds, at least a 429's `Retry-After`, doubling on every failed probe
               up to `MAX_COOL_DOWN`
    half-open  when the cool-down ends, one call is let through as a probe (the others still skip
               the model); its success closes the breaker, its failure opens it again

Only retryable provider failures count (timeouts, connection errors, 408/409/429/5xx, malformed
replies): a request the model rejected says nothing about the model's health, and a reply that
failed its schema is about that reply. A model is never skipped when it is the last one left: a
chain whose every model is cooling down still tries them, in order, rather than fail untried.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

from bot.llm.errors import ProviderError, RateLimited
from bot.llm.parameters import ParameterizedProvider

__all__ = ["COOL_DOWN", "FAILURES_TO_OPEN", "MAX_COOL_DOWN", "ModelHealth"]

FAILURES_TO_OPEN = 3
COOL_DOWN = 30.0
MAX_COOL_DOWN = 300.0


def _key(provider: object) -> object:
    """The breaker's key: a wrapper that only sets parameters (`bot.llm.parameters`) shares its
    model's breaker, so two catalog entries of one model, or an edit of its parameters, do not
    start its health over."""
    return provider.inner if isinstance(provider, ParameterizedProvider) else provider


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    cool_down: float = COOL_DOWN
    probing: bool = False
    last_error: str = ""


class ModelHealth:
    """Breakers keyed by provider object (one per model and key: the registry shares them)."""

    def __init__(
        self,
        *,
        failures_to_open: int = FAILURES_TO_OPEN,
        cool_down: float = COOL_DOWN,
        max_cool_down: float = MAX_COOL_DOWN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.cool_down = cool_down
        self.max_cool_down = max_cool_down
        self._clock = clock
        # Weak keys: a user's own-key provider evicted by the registry takes its breaker along.
        # (An object that cannot be weakly referenced is kept in `_pinned` instead.)
        self._weak: weakref.WeakKeyDictionary[object, _Breaker] = weakref.WeakKeyDictionary()
        self._pinned: dict[object, _Breaker] = {}

    def _table(self, provider: object) -> MutableMapping[object, _Breaker]:
        try:
            weakref.ref(provider)
        except TypeError:
            return self._pinned
        return self._weak

    def admit(self, provider: object) -> bool:
        """Whether to call `provider` now; True at most once per cool-down while it is open."""
        provider = _key(provider)
        breaker = self._table(provider).get(provider)
        if breaker is None or breaker.failures < self.failures_to_open:
            return True
        if breaker.probing or self._clock() < breaker.open_until:
            return False
        breaker.probing = True  # this caller is the probe
        return True

    def skipped_because(self, provider: object) -> str:
        provider = _key(provider)
        breaker = self._table(provider).get(provider)
        if breaker is None:
            return "cooling down"
        left = max(0.0, breaker.open_until - self._clock())
        return (
            f"cooling down after {breaker.failures} failures in a row ({left:.0f}s left; "
            f"last: {breaker.last_error})"
        )

    def succeeded(self, provider: object) -> None:
        provider = _key(provider)
        self._table(provider).pop(provider, None)

    def failed(self, provider: object, error: BaseException) -> None:
        """Record a failure of a call that `admit` let through."""
        provider = _key(provider)
        breaker = self._table(provider).get(provider)
        if not (isinstance(error, ProviderError) and error.retryable):
            if breaker is not None:
                breaker.probing = False
            return
        if breaker is None:
            breaker = self._table(provider)[provider] = _Breaker(cool_down=self.cool_down)
        was_probe = breaker.probing
        breaker.probing = False
        breaker.failures += 1
        breaker.last_error = f"{type(error).__name__}: {error}"[:200]
        if breaker.failures < self.failures_to_open:
            return
        if was_probe:
            breaker.cool_down = min(self.max_cool_down, breaker.cool_down * 2)
        wait = breaker.cool_down
        if isinstance(error, RateLimited) and error.retry_after:
            wait = max(wait, min(self.max_cool_down, error.retry_after))
        breaker.open_until = self._clock() + wait

    def released(self, provider: object) -> None:
        """A call that `admit` let through ended without a verdict (cancelled): free the probe."""
        provider = _key(provider)
        breaker = self._table(provider).get(provider)
        if breaker is not None:
            breaker.probing = False

    def is_open(self, provider: object) -> bool:
        provider = _key(provider)
        breaker = self._table(provider).get(provider)
        return breaker is not None and breaker.failures >= self.failures_to_open
