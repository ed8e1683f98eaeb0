"""OpenRouter's list of model ids, so `/setmodel` and `/catalog add` refuse ids that do not exist.

    models = OpenRouterModels(settings.openrouter_base_url)
    check = await models.check("anthropic/claude-sonet-4.5")
    check.status        -> "missing"
    check.suggestions   -> ["anthropic/claude-sonnet-4.5", ...]
    await models.close()

Not to be confused with the bot's own catalog of named models (`bot.services.model_catalog`):
this is OpenRouter's public list, only read to check bare OpenRouter ids.

The list comes from `GET {OPENROUTER_BASE_URL}/models` (public, no key sent) and is kept in
memory for `ttl` seconds (default one hour: the catalog changes a few times a day). Refreshes are
single-flight and bounded by `timeout`.

When the catalog cannot be fetched (OpenRouter down, no network):
- a copy fetched earlier is used, however old (a model rarely disappears), and the failure is
  logged; the next check tries again after `retry_backoff` seconds, not on every command;
- with no copy at all the answer is `unverified`: the caller sets the override anyway and tells
  the admin it could not be checked. A catalog outage must not make `/setmodel` impossible (an
  admin may be switching models precisely because a provider is down), and a wrong id is undone
  with `/resetmodel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

log = logging.getLogger(__name__)

CheckStatus = Literal["found", "missing", "unverified"]


@dataclass(frozen=True, slots=True)
class ModelIdCheck:
    """The answer for one model id: found, missing (with the closest ids) or unverified."""

    model_id: str
    status: CheckStatus
    suggestions: list[str] = field(default_factory=list)
    # Why it could not be checked (no copy of the catalog and the fetch failed).
    problem: str | None = None


class ModelListUnavailable(Exception):
    """The catalog could not be fetched (the message says why, without any secret)."""


class OpenRouterModels:
    DEFAULT_TTL = 3600.0

    def __init__(
        self,
        base_url: str,
        *,
        ttl: float = DEFAULT_TTL,
        timeout: float = 5.0,
        retry_backoff: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = base_url.rstrip("/") + "/models"
        self.ttl = ttl
        self.timeout = timeout
        self.retry_backoff = retry_backoff
        self._transport = transport
        self._clock = clock
        self._client: httpx.AsyncClient | None = None
        self._ids: list[str] | None = None
        # id -> USD per prompt token, per completion token (the catalog's `pricing`), for the
        # budgets' reservations.
        self._pricing: dict[str, tuple[float, float]] = {}
        self._expires_at = 0.0
        self._retry_at = 0.0
        self._last_problem: str | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # requests made, for tests

    async def model_ids(self) -> list[str]:
        """The catalog's ids (fresh within the TTL, else refetched, else the last good copy).

        Raises `ModelListUnavailable` only when no copy was ever fetched.
        """
        async with self._lock:  # single flight: concurrent checks share one fetch
            now = self._clock()
            if self._ids is not None and now < self._expires_at:
                return self._ids
            if now >= self._retry_at:
                try:
                    self._ids = await self._fetch()
                    self._expires_at = self._clock() + self.ttl
                    self._last_problem = None
                    return self._ids
                except ModelListUnavailable as exc:
                    self._retry_at = self._clock() + self.retry_backoff
                    self._last_problem = str(exc)
                    log.warning(
                        "OpenRouter model catalog unavailable (%s); %s",
                        exc,
                        "using the copy fetched earlier" if self._ids else "ids are not checked",
                    )
            if self._ids is not None:
                return self._ids
            raise ModelListUnavailable(self._last_problem or "the catalog could not be fetched")

    async def check(self, model_id: str) -> ModelIdCheck:
        try:
            ids = await self.model_ids()
        except ModelListUnavailable as exc:
            return ModelIdCheck(model_id, "unverified", problem=str(exc))
        if model_id in ids:
            return ModelIdCheck(model_id, "found")
        return ModelIdCheck(model_id, "missing", suggestions=closest(model_id, ids))

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _fetch(self) -> list[str]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
        self.fetches += 1
        try:
            response = await self._client.get(self.url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ModelListUnavailable(f"{type(exc).__name__} fetching {self.url}") from None
        if response.status_code != 200:
            raise ModelListUnavailable(f"HTTP {response.status_code} from {self.url}")
        try:
            data = response.json().get("data")
            ids = [str(item["id"]) for item in data if isinstance(item, dict) and item.get("id")]
        except (ValueError, AttributeError, TypeError, KeyError):
            raise ModelListUnavailable(f"unexpected answer from {self.url}") from None
        if not ids:
            raise ModelListUnavailable(f"empty model list from {self.url}")
        self._pricing = _pricing(data)
        return ids

    def rates(self, model_id: str) -> tuple[float, float] | None:
        """USD per prompt and per completion token from the last catalog fetched; None when
        no copy was fetched yet or the entry has no price."""
        return self._pricing.get(model_id)

    async def prefetch(self) -> None:
        """Fetch the catalog now (for its prices); failures are logged by `model_ids`."""
        with contextlib.suppress(ModelListUnavailable):
            await self.model_ids()


def _pricing(data: list[Any]) -> dict[str, tuple[float, float]]:
    found: dict[str, tuple[float, float]] = {}
    for item in data:
        pricing = item.get("pricing") if isinstance(item, dict) else None
        if not isinstance(pricing, dict):
            continue
        try:
            prompt, completion = float(pricing["prompt"]), float(pricing["completion"])
        except (KeyError, TypeError, ValueError):
            continue
        if prompt >= 0 and completion >= 0:  # OpenRouter marks variable prices with -1
            found[str(item["id"])] = (prompt, completion)
    return found


def closest(model_id: str, ids: list[str], n: int = 3) -> list[str]:
    """The catalog ids an admin most likely meant: same model under its vendor prefix first
    (`claude-sonnet-4.5` -> `anthropic/claude-sonnet-4.5`), then the nearest spellings."""
    wanted = model_id.lower()
    tail = wanted.rsplit("/", 1)[-1]
    exact_tail = [i for i in ids if i.lower().rsplit("/", 1)[-1] == tail]
    lowered = {i.lower(): i for i in ids}
    near = [lowered[m] for m in difflib.get_close_matches(wanted, list(lowered), n=n, cutoff=0.6)]
    tails = {i.lower().rsplit("/", 1)[-1]: i for i in ids}
    near_tail = [tails[m] for m in difflib.get_close_matches(tail, list(tails), n=n, cutoff=0.7)]
    found: list[str] = []
    for candidate in (*exact_tail, *near, *near_tail):
        if candidate not in found:
            found.append(candidate)
    return found[:n]
