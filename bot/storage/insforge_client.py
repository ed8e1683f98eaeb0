"""A small async client for InsForge's database API, on aiohttp.

InsForge puts PostgREST behind `/api/database/records/{table}`:

    client = InsForgeClient("https://app.insforge.app", api_key, timeout=10)
    rows = await client.select("messages", {"chat_id": eq(42)}, order="id.desc", limit=20)
    [row] = await client.insert("messages", {"chat_id": 42, "role": "user", "text": "hi"})
    [row] = await client.upsert("user_settings", {...}, on_conflict="user_id")
    rows = await client.update("exercises", {"grade": 1.0}, {"id": eq(7)})
    rows = await client.delete("messages", {"chat_id": eq(42)})
    stats = await client.rpc("ledger_stats", {"since": "2026-12-01T00:00:00Z"}, read_only=True)

Aggregates, ranked full-text search and multi-table reads cannot be said in the records API's
filters; they are PostgreSQL functions (created by a migration) called through
`/api/database/rpc/{function}`, PostgREST's RPC: a JSON object of named arguments in, the
function's rows (a set-returning function), its object (one composite) or its value out.

Errors, translated here and nowhere else (never carrying the API key):

    StorageError
    ├── StorageUnavailable   connection refused/reset, timeout, 408, 429, 5xx (after the retries
    │                        below)
    ├── StorageConfigError   401/403 (INSFORGE_API_KEY), 404 on the API itself (INSFORGE_URL)
    └── StorageRejected      another 4xx: unknown column (PGRST204/42703), bad filter (PGRST100),
        ├── StorageConflict  409: unique violation (23505) / foreign key (23503)
        └── StorageNotFound  unknown table (42P01, 404)

Both error bodies InsForge sends are understood: its own `{error, message, statusCode,
nextActions}` and PostgREST's `{code, message, details, hint}`.

Retries (exponential backoff with jitter, `max_retries` extra attempts) depend on whether the
request may have run:
- certainly not run, so any request is sent again: the connection could not be opened, or 429
  (the rate limiter answers before anything runs; `Retry-After` is honoured);
- maybe run, so only idempotent requests are sent again: a read/write timeout, a dropped
  connection, 408 and every 5xx. A 503 is in this group on purpose: InsForge answers 503 when it
  loses PostgreSQL in the middle of a statement, which may have committed; a 408 may come from a
  proxy that had already passed the request on. Idempotent means GET, PATCH and DELETE (by
  filter: running them twice leaves the same rows) and upserts (`on_conflict`).

A plain `insert` is never sent again after "maybe run": it could store the row twice, so the
caller gets `StorageUnavailable` saying so. Writes that must be neither lost nor doubled (a
user's message, a line of override history) are therefore not plain inserts: each row carries a
client-made `idempotency_key` (unique, migration 007) and goes as an `ignore-duplicates` upsert
on it, which a retry cannot double (`bot.storage.insforge.repos`). Note that a repeated PATCH or
DELETE answers only what the repeat changed (often nothing): callers that report what changed
must not read it from a retried answer alone.

Why aiohttp, not httpx: a message makes several InsForge requests, and under load httpcore's
pool walked every pooled connection and every queued request on each request and response
(the same cost `bot/llm/http_transport.py` took out of the model calls): in the load benchmark
with InsForge it was a third of the bot's CPU. aiohttp's connector is a per-host queue.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as jsonlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr

from bot.proxy_env import proxy_configured
from bot.storage.repositories import (
    StorageConfigError,
    StorageConflict,
    StorageError,
    StorageNotFound,
    StorageRejected,
    StorageUnavailable,
)

log = logging.getLogger(__name__)

Row = dict[str, Any]
Filters = Mapping[str, str] | Sequence[tuple[str, str]]

# Connections kept to InsForge. PostgREST runs a request per database connection of its own pool
# (10 by default) and queues the rest; more here than that only adds idle sockets.
MAX_CONNECTIONS = 20
RECORDS_PATH = "/api/database/records/"
MIGRATIONS_PATH = "/api/database/migrations"
RPC_PATH = "/api/database/rpc/"
_JSON_BODY = {"Content-Type": "application/json"}

# Answers that mean the request was not run: safe to send again whatever it was.
_NOT_RUN_STATUSES = frozenset({429})


def _maybe_ran(status: int) -> bool:
    """Answers after which the outcome is unknown: only idempotent requests are sent again."""
    return status == 408 or 500 <= status < 600


def _literal(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return str(value)


def eq(value: object) -> str:
    """PostgREST `eq` filter; `None` becomes `is.null`."""
    return "is.null" if value is None else f"eq.{_literal(value)}"


def neq(value: object) -> str:
    return f"neq.{_literal(value)}"


def is_(value: bool | None) -> str:
    return f"is.{_literal(value)}"


def in_(values: Sequence[object]) -> str:
    """PostgREST `in` filter; values with reserved characters are double-quoted."""
    quoted = []
    for value in values:
        text = _literal(value)
        if any(ch in text for ch in ',()"\\ ') or text == "":
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        quoted.append(text)
    return f"in.({','.join(quoted)})"


def _filter_items(filters: Filters | None) -> list[tuple[str, str]]:
    if not filters:
        return []
    if isinstance(filters, Mapping):
        return list(filters.items())
    return list(filters)


@dataclass(frozen=True, slots=True)
class Response:
    """An InsForge answer, read whole: what the callers look at."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class InsForgeClient:
    """InsForge's records and migrations API; one pooled aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None,
        *,
        timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        max_retry_after: float = 30.0,
        max_connections: int = MAX_CONNECTIONS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not base_url:
            raise StorageConfigError("INSFORGE_URL is empty: set it to your InsForge app URL")
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise StorageConfigError(
                "INSFORGE_API_KEY is not set: InsForge needs an API key (Bearer token)"
            )
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        # Connecting and each read get `timeout`. Waiting for a pooled connection does not:
        # aiohttp's `connect` covers that wait, and in a burst (the loop behind, every
        # connection busy) it ran out and InsForge was reported unreachable, and the request
        # retried, while it answered everything in time. The wait ends as connections free up,
        # each bounded by its own read timeout.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=timeout, sock_read=timeout
        )
        # A bounded pool: a burst of messages queues here instead of opening a socket each.
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        # Opened on first use: an aiohttp session belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                headers=self._headers,
                timeout=self._timeout,
                trust_env=proxy_configured(),
            )
        return self._session

    def __repr__(self) -> str:
        return f"InsForgeClient({self.base_url!r}, api_key=<secret>)"

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- records ---

    async def select(
        self,
        table: str,
        filters: Filters | None = None,
        *,
        select: str | None = None,
        order: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Row]:
        params = _filter_items(filters)
        if select:
            params.append(("select", select))
        if order:
            params.append(("order", order))
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset is not None:
            params.append(("offset", str(offset)))
        response = await self._request("GET", RECORDS_PATH + table, params=params)
        return _rows(response, table)

    async def count(self, table: str, filters: Filters | None = None) -> int:
        """Rows matching `filters`, from PostgREST's `Content-Range` (`Prefer: count=exact`)."""
        params = [*_filter_items(filters), ("select", "id"), ("limit", "1")]
        response = await self._request(
            "GET", RECORDS_PATH + table, params=params, headers={"Prefer": "count=exact"}
        )
        content_range = response.headers.get("content-range", "")
        _, _, total = content_range.partition("/")
        if not total.isdigit():
            raise StorageError(
                f"InsForge did not report a row count for {table} (Content-Range: "
                f"{content_range!r})"
            )
        return int(total)

    async def insert(self, table: str, rows: Row | Sequence[Row]) -> list[Row]:
        """Insert; the stored rows. Not retried after an unknown outcome (see module doc)."""
        body = [rows] if isinstance(rows, Mapping) else list(rows)
        response = await self._request(
            "POST",
            RECORDS_PATH + table,
            json=body,
            headers={"Prefer": "return=representation"},
            idempotent=False,
        )
        return _rows(response, table)

    async def upsert(
        self,
        table: str,
        rows: Row | Sequence[Row],
        *,
        on_conflict: str,
        ignore_duplicates: bool = False,
    ) -> list[Row]:
        """Insert or merge on the `on_conflict` columns; the rows written.

        With `ignore_duplicates`, existing rows are left alone and only new rows come back.
        """
        body = [rows] if isinstance(rows, Mapping) else list(rows)
        resolution = "ignore-duplicates" if ignore_duplicates else "merge-duplicates"
        response = await self._request(
            "POST",
            RECORDS_PATH + table,
            params=[("on_conflict", on_conflict)],
            json=body,
            headers={"Prefer": f"resolution={resolution},return=representation"},
            idempotent=True,
        )
        return _rows(response, table)

    async def update(self, table: str, values: Row, filters: Filters) -> list[Row]:
        """PATCH the rows matching `filters` (required); the updated rows."""
        params = _filter_items(filters)
        if not params:
            raise ValueError("refusing to update every row of a table: give filters")
        response = await self._request(
            "PATCH",
            RECORDS_PATH + table,
            params=params,
            json=values,
            headers={"Prefer": "return=representation"},
        )
        return _rows(response, table)

    async def delete(self, table: str, filters: Filters, *, select: str | None = None) -> list[Row]:
        """DELETE the rows matching `filters` (required); the deleted rows."""
        params = _filter_items(filters)
        if not params:
            raise ValueError("refusing to delete every row of a table: give filters")
        if select:
            params.append(("select", select))
        response = await self._request(
            "DELETE",
            RECORDS_PATH + table,
            params=params,
            headers={"Prefer": "return=representation"},
        )
        return _rows(response, table)

    # --- functions ---

    async def rpc(
        self, function: str, args: Mapping[str, Any] | None = None, *, read_only: bool = False
    ) -> Any:
        """Call the PostgreSQL function `function` with named `args`; its JSON answer.

        `read_only`: the function only reads (STABLE), so a request whose outcome is unknown
        (timeout, dropped connection, 5xx) is sent again like a GET. A function that writes is
        sent again only when it certainly did not run (connection refused, 429), as a plain
        insert is: make it idempotent (an idempotency key) when it must survive a lost answer.
        """
        response = await self._request(
            "POST", RPC_PATH + function, json=dict(args or {}), idempotent=read_only
        )
        return _json(response) if response.content else None

    # --- migrations ---

    async def list_migrations(self) -> list[Row]:
        response = await self._request("GET", MIGRATIONS_PATH)
        body = _json(response)
        if isinstance(body, Mapping):
            body = body.get("migrations", body.get("data", []))
        if not isinstance(body, list):
            raise StorageError("InsForge answered the migrations list with an unexpected body")
        return [dict(item) for item in body if isinstance(item, Mapping)]

    async def apply_migration(self, version: str, name: str, sql: str) -> Row:
        response = await self._request(
            "POST",
            MIGRATIONS_PATH,
            json={"version": version, "name": name, "sql": sql},
            idempotent=False,
        )
        body = _json(response)
        return dict(body) if isinstance(body, Mapping) else {}

    async def ping(self) -> None:
        """One cheap authenticated request; raises unless InsForge answers it."""
        await self._request(
            "GET", RECORDS_PATH + "agent_model_config", params=[("select", "id"), ("limit", "1")]
        )

    # --- transport, retries, errors ---

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        if idempotent is None:
            idempotent = method in {"GET", "HEAD", "PATCH", "DELETE", "PUT"}
        what = f"{method} {path}"
        if self._closed:
            raise StorageUnavailable(f"cannot send {what}: the InsForge client is closed")
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = await self._send(method, path, params, json, headers)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The request never reached InsForge: always safe to send again.
                error: StorageError = StorageUnavailable(
                    f"InsForge at {self.base_url} cannot be reached ({type(exc).__name__}) "
                    f"for {what}; check INSFORGE_URL and that InsForge is up"
                )
                retryable = True
            except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                error = StorageUnavailable(
                    f"InsForge did not answer {what} in time ({type(exc).__name__})"
                    + ("" if idempotent else "; the write may or may not have been stored")
                )
                retryable = idempotent
            except aiohttp.ClientError as exc:
                error = StorageUnavailable(
                    f"the connection to InsForge failed during {what} ({type(exc).__name__})"
                    + ("" if idempotent else "; the write may or may not have been stored")
                )
                retryable = idempotent
            else:
                if response.status < 400:
                    return response
                error = _error_from_response(response, what, self._key)
                status = response.status
                if status in _NOT_RUN_STATUSES:
                    retryable = True
                elif _maybe_ran(status):
                    retryable = idempotent
                    if not idempotent:
                        error = type(error)(f"{error}; the write may or may not have been stored")
                else:
                    retryable = False
                if status == 429:
                    wait = _retry_after(response)
                    if wait is not None and wait > self.max_retry_after:
                        raise StorageUnavailable(
                            f"{error} (InsForge asks to retry after {wait:.0f} s)"
                        ) from None
            if not retryable or attempt >= self.max_retries:
                if attempt:
                    raise type(error)(f"{error} (after {attempt + 1} attempts)") from None
                raise error
            if wait is None:
                wait = min(self.max_backoff, self.backoff * 2**attempt)
                wait = wait * (0.5 + random.random() / 2)  # jitter: replicas do not retry in step
            attempt += 1
            log.warning(
                "InsForge %s failed (%s); retry %d/%d in %.2f s",
                what,
                error,
                attempt,
                self.max_retries,
                wait,
            )
            await self._sleep(wait)

    async def _send(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] | None,
        json: Any,
        headers: Mapping[str, str] | None,
    ) -> Response:
        async with self._get_session().request(
            method,
            self.base_url + path,
            params=list(params or ()),
            data=None if json is None else jsonlib.dumps(json),
            headers={**_JSON_BODY, **(headers or {})} if json is not None else headers,
        ) as answer:
            content = await answer.read()
            return Response(method, path, answer.status, answer.headers, content)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _json(response: Response) -> Any:
    if not response.content:
        return []
    try:
        return response.json()
    except ValueError as exc:
        raise StorageError(
            f"InsForge answered {response.method} {response.path} "
            f"with a body that is not JSON (HTTP {response.status})"
        ) from exc


def _rows(response: Response, table: str) -> list[Row]:
    body = _json(response)
    if isinstance(body, Mapping):
        # A single object (some proxies unwrap one-row answers) or an envelope.
        inner = body.get("data")
        body = inner if isinstance(inner, list) else [body]
    if not isinstance(body, list):
        raise StorageError(f"InsForge answered a request on {table} with an unexpected body")
    return [dict(item) for item in body if isinstance(item, Mapping)]


def _error_from_response(response: Response, what: str, secret: str) -> StorageError:
    """Map either error shape to the StorageError tree, with the server's own words."""
    status = response.status
    code: str | None = None
    message = ""
    extra: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        raw_code = body.get("code")
        if raw_code is None and isinstance(body.get("error"), str):
            raw_code = body.get("error")  # InsForge: {error: CODE, message, statusCode}
        code = str(raw_code) if raw_code is not None else None
        message = str(body.get("message") or "")
        for key in ("details", "hint", "nextActions"):
            if body.get(key):
                extra.append(f"{key}: {body[key]}")
    elif response.text:
        message = response.text[:200]
    text = f"InsForge refused {what}: HTTP {status}"
    if code:
        text += f" {code}"
    if message:
        text += f": {message}"
    if extra:
        text += " (" + "; ".join(extra) + ")"
    text = text.replace(secret, "<INSFORGE_API_KEY>")

    if status in (401, 403):
        return StorageConfigError(
            f"{text}. Check INSFORGE_API_KEY: InsForge rejected it "
            f"({'missing or invalid' if status == 401 else 'not allowed to do this'})"
        )
    if status in (408, 429) or status >= 500:
        return StorageUnavailable(text)
    if status == 409 or code in {"23505", "23503"}:
        return StorageConflict(text, status=status, code=code)
    if status == 404:
        if code in {"42P01", "PGRST205", "PGRST202"}:
            return StorageNotFound(
                f"{text}. Run `python -m bot migrate` to create the tables",
                status=status,
                code=code,
            )
        return StorageConfigError(f"{text}. Check INSFORGE_URL (no InsForge database API there)")
    return StorageRejected(text, status=status, code=code)
