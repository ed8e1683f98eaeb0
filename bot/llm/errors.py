"""Errors of the provider layer.

    LLMError
     ├── ProviderError                  the world failed, or the provider refused
     │    ├── ProviderTimeout           retryable
     │    ├── ProviderConnectionError   retryable
     │    ├── RateLimited               retryable (429), may carry retry_after
     │    ├── ProviderServerError       retryable (5xx, 408, 409; a local model that crashed)
     │    ├── MalformedResponse         retryable (HTML error page, broken JSON, mid-stream error)
     │    └── RequestRejected           not retryable: 4xx caused by the request itself
     ├── StructuredOutputError          the model's JSON did not validate, even after one repair
     └── AllModelsFailed                every model of a fallback chain failed; carries each attempt

Configuration mistakes (unknown provider, missing key) are `ModelSpecError` in `bot.llm.specs`:
they are "you used it wrong", not "the world failed", and are never retried.
SDK exceptions are translated into these at exactly one boundary per SDK module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.llm.types import Attempt


class LLMError(Exception):
    """Base of every error raised by the provider layer."""


class ProviderError(LLMError):
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status

    def __str__(self) -> str:
        where = f"{self.provider}:{self.model}" if self.provider else ""
        status = f" [{self.status}]" if self.status else ""
        base = super().__str__()
        return f"{where}{status} {base}".strip()


class ProviderTimeout(ProviderError):
    retryable = True


class ProviderConnectionError(ProviderError):
    retryable = True


class RateLimited(ProviderError):
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ProviderServerError(ProviderError):
    retryable = True


class MalformedResponse(ProviderError):
    retryable = True


class RequestRejected(ProviderError):
    retryable = False


class StructuredOutputError(LLMError):
    """The model's output did not match the requested schema after one repair attempt."""


RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS or status >= 500


class AllModelsFailed(LLMError):
    def __init__(self, attempts: Sequence[Attempt], errors: Sequence[BaseException]) -> None:
        self.attempts = list(attempts)
        self.errors = list(errors)
        causes = "; ".join(f"{a.provider}:{a.model}: {a.error}" for a in self.attempts)
        super().__init__(f"all {len(self.attempts)} model(s) failed: {causes}")
