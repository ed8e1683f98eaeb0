"""A loopback InsForge: its records and migrations API over the real PostgreSQL on this machine.

What it speaks (what `bot.storage.insforge_client` and the live InsForge speak):

- `GET|POST|PATCH|DELETE /api/database/records/{table}` with PostgREST query syntax: filters
  `col=[not.]op.value` (eq, neq, gt, gte, lt, lte, like, ilike, is, in), `select=`, `order=`,
  `limit=`, `offset=`, `on_conflict=`; `Prefer: return=representation`,
  `resolution=merge-duplicates|ignore-duplicates`, `count=exact` (`Content-Range`).
- `POST /api/database/rpc/{function}`: PostgREST's RPC. The JSON body's keys are the function's
  named arguments (those with defaults may be left out); a set-returning function answers an
  array of rows, one returning a composite answers an object, any other its value. A function
  unknown for those argument names is PGRST202 (404), as PostgREST answers.
- `GET|POST /api/database/migrations` (`{version, name, sql}`), each run in a transaction and
  recorded in `system.custom_migrations`; transaction statements in a file are refused.
- Errors in both of InsForge's shapes: PostgREST's `{code, message, details, hint}` for records
  (PGRST204 unknown column in a body, 42703 in a filter/select/order, PGRST100 bad filter, 23505
  unique violation as 409, 42P01 unknown table as 404) and InsForge's own
  `{error, message, statusCode, nextActions}` for auth (401) and migrations.

Every query is parameterised: values are only ever bind parameters (cast from text to the
column's type in SQL), identifiers are checked against the table's columns and then quoted.

Faults for tests: `fail_next(status, retry_after=..., after_run=...)`, `hang_next(seconds)`,
`drop_next(after_run=...)` (the connection closed without an answer), `down = True` (503 for
everything), `stop()` (connection refused). `requests` logs every request.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiohttp import web

RESERVED_PARAMS = {"select", "order", "limit", "offset", "on_conflict", "columns"}
OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_ORDER_TERM = re.compile(
    r"^(?P<col>[A-Za-z_][A-Za-z0-9_]*)(\.(?P<dir>asc|desc))?"
    r"(\.(?P<nulls>nullsfirst|nullslast))?$"
)
_VERSION = re.compile(r"^\d{1,64}$")
_NAME = re.compile(r"^[a-z0-9-]+$")
_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION|END)\b", re.I)


class PostgrestError(Exception):
    """An answer in PostgREST's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.hint = details, hint

    def response(self) -> web.Response:
        return web.json_response(
            {
                "code": self.code,
                "details": self.details,
                "hint": self.hint,
                "message": self.message,
            },
            status=self.status,
        )


def insforge_error(
    status: int, error: str, message: str, next_actions: str | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error, "message": message, "statusCode": status}
    if next_actions:
        body["nextActions"] = next_actions
    return web.json_response(body, status=status)


def bad_filter(text: str, details: str) -> PostgrestError:
    return PostgrestError(400, "PGRST100", f'"failed to parse filter ({text})"', details)


def from_postgres(exc: asyncpg.PostgresError) -> PostgrestError:
    """How PostgREST maps a PostgreSQL error to an HTTP status."""
    state = exc.sqlstate or "XX000"
    if state in {"23505", "23503"}:
        status = 409
    elif state == "42P01":
        status = 404
    elif state.startswith(("22", "23", "42")):
        status = 400
    elif state.startswith("08") or state in {"57P01", "57P03"}:
        status = 503
    else:
        status = 500
    return PostgrestError(status, state, exc.message, exc.detail, exc.hint)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _record(row: asyncpg.Record) -> dict[str, Any]:
    return {key: _jsonable(value) for key, value in row.items()}


def _split_in_list(text: str, raw: str) -> list[str]:
    """`(a,"b,c",d)` -> ["a", "b,c", "d"] (PostgREST's quoting)."""
    if not (text.startswith("(") and text.endswith(")")):
        raise bad_filter(raw, 'unexpected end of input expecting "("')
    inner = text[1:-1]
    items: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(inner):
        ch = inner[i]
        if quoted:
            if ch == "\\" and i + 1 < len(inner):
                current.append(inner[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
            else:
                current.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    if quoted:
        raise bad_filter(raw, 'unexpected end of input expecting "\\""')
    items.append("".join(current))
    return items


@dataclass
class Fault:
    kind: str  # "status", "hang" or "drop"
    status: int = 503
    retry_after: str | None = None
    after_run: bool = False
    seconds: float = 0.0
    methods: frozenset[str] | None = None
    path: str | None = None  # only requests whose path ends so


class SQL:
    """Builds one parameterised statement."""

    def __init__(self) -> None:
        self.params: list[Any] = []

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


def _text(value: Any, column_type: str) -> str | None:
    """A JSON value as the text PostgreSQL casts to the column's type."""
    if value is None:
        return None
    if column_type in {"json", "jsonb"}:
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


class FakeInsForge:
    """The fake server; `await start()` returns its URL, `await stop()` ends it."""

    def __init__(self, dsn: str, *, api_key: str | None = None) -> None:
        self.dsn = dsn
        self.api_key = api_key or "fake-insforge-key-" + secrets.token_hex(8)
        self.down = False
        self.requests: list[tuple[str, str, str]] = []
        self._faults: deque[Fault] = deque()
        self._columns: dict[str, dict[str, str]] = {}
        self._primary: dict[str, list[str]] = {}
        self._functions: dict[str, list[_Function]] = {}
        self._pool: asyncpg.Pool | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.url = ""

    # --- lifecycle ---

    async def start(self) -> str:
        self._stopping = asyncio.Event()
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=10, init=self._init_connection
        )
        async with self._pool.acquire() as conn:
            await conn.execute(
                "CREATE SCHEMA IF NOT EXISTS system; "
                "CREATE TABLE IF NOT EXISTS system.custom_migrations ("
                "version TEXT PRIMARY KEY, name TEXT NOT NULL, statements TEXT[] NOT NULL, "
                "created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        await self.reload_schema()
        app = web.Application()
        app.router.add_route("*", "/api/database/records/{table}", self._records)
        app.router.add_post("/api/database/rpc/{function}", self._rpc)
        app.router.add_get("/api/database/migrations", self._list_migrations)
        app.router.add_post("/api/database/migrations", self._create_migration)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> FakeInsForge:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    async def _init_connection(conn: asyncpg.Connection) -> None:
        for name in ("json", "jsonb"):
            await conn.set_type_codec(
                name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
            )
        await conn.execute("SET TIME ZONE 'UTC'")

    async def reload_schema(self) -> None:
        """PostgREST's schema cache: columns and primary keys of the public tables."""
        assert self._pool is not None
        rows = await self._pool.fetch(
            "SELECT c.relname AS table_name, a.attname AS column_name, "
            "format_type(a.atttypid, a.atttypmod) AS column_type "
            "FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid "
            "JOIN pg_namespace n ON c.relnamespace = n.oid "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v') "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        )
        columns: dict[str, dict[str, str]] = {}
        for row in rows:
            columns.setdefault(row["table_name"], {})[row["column_name"]] = row["column_type"]
        keys = await self._pool.fetch(
            "SELECT c.relname AS table_name, a.attname AS column_name "
            "FROM pg_index i JOIN pg_class c ON i.indrelid = c.oid "
            "JOIN pg_namespace n ON c.relnamespace = n.oid "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
            "WHERE n.nspname = 'public' AND i.indisprimary"
        )
        primary: dict[str, list[str]] = {}
        for row in keys:
            primary.setdefault(row["table_name"], []).append(row["column_name"])
        self._columns, self._primary = columns, primary
        self._functions = await _load_functions(self._pool)

    # --- faults ---

    def fail_next(
        self,
        status: int = 503,
        *,
        count: int = 1,
        retry_after: float | str | None = None,
        after_run: bool = False,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next `count` requests with `status` (after running them if `after_run`)."""
        for _ in range(count):
            self._faults.append(
                Fault(
                    "status",
                    status=status,
                    retry_after=None if retry_after is None else str(retry_after),
                    after_run=after_run,
                    methods=frozenset(m.upper() for m in methods) if methods else None,
                )
            )

    def hang_next(self, seconds: float = 30.0, *, count: int = 1, path: str | None = None) -> None:
        """Hold the next `count` requests (those whose path ends with `path`) for `seconds` (or
        until stop() or release_hung()) before answering."""
        for _ in range(count):
            self._faults.append(Fault("hang", seconds=seconds, path=path))

    def release_hung(self) -> None:
        """Answer every request a `hang_next` fault is holding, now."""
        self._stopping.set()
        self._stopping = asyncio.Event()

    def drop_next(self, *, count: int = 1, after_run: bool = False) -> None:
        """Close the connection of the next `count` requests without an answer (after running
        them if `after_run`): the client cannot know whether a write happened."""
        for _ in range(count):
            self._faults.append(Fault("drop", after_run=after_run))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        if not self._faults:
            return None
        first = self._faults[0]
        if (first.methods is None or method in first.methods) and (
            first.path is None or path.endswith(first.path)
        ):
            return self._faults.popleft()
        return None

    def _fault_response(self, fault: Fault, request: web.Request) -> web.Response:
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the socket is gone
        headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
        if fault.status == 429:
            body = {"error": "RATE_LIMITED", "message": "Too many requests", "statusCode": 429}
        else:
            body = {
                "error": "INTERNAL_ERROR",
                "message": "Database service unavailable"
                if fault.status == 503
                else "Internal server error",
                "statusCode": fault.status,
            }
        return web.json_response(body, status=fault.status, headers=headers)

    async def _guard(self, request: web.Request) -> web.Response | Fault | None:
        """Log, apply `down`/faults and auth; a response ends the request here."""
        self.requests.append((request.method, request.path, request.query_string))
        if self.down:
            return insforge_error(503, "INTERNAL_ERROR", "Database service unavailable")
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.kind == "hang":
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), fault.seconds)
            fault = None
        if fault is not None and not fault.after_run:
            return self._fault_response(fault, request)
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        token = token or request.headers.get("x-api-key", "")
        if not secrets.compare_digest(token.encode(), self.api_key.encode()):
            return insforge_error(
                401,
                "AUTH_INVALID_API_KEY",
                "Invalid API key" if token else "No authentication token provided",
                "Check your API key or access token.",
            )
        return fault

    # --- records ---

    async def _records(self, request: web.Request) -> web.StreamResponse:
        guarded = await self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        try:
            response = await self._run_records(request)
        except PostgrestError as exc:
            response = exc.response()
        except asyncpg.PostgresError as exc:
            response = from_postgres(exc).response()
        except (OSError, asyncpg.InterfaceError) as exc:
            response = insforge_error(503, "INTERNAL_ERROR", f"Database service unavailable: {exc}")
        if isinstance(guarded, Fault):  # ran it, then fail: the client cannot know it landed
            return self._fault_response(guarded, request)
        return response

    def _table(self, name: str) -> dict[str, str]:
        columns = self._columns.get(name)
        if columns is None:
            raise PostgrestError(
                404,
                "42P01",
                f'relation "public.{name}" does not exist',
            )
        return columns

    def _column(self, table: str, columns: dict[str, str], name: str) -> str:
        if name not in columns:
            raise PostgrestError(400, "42703", f"column {table}.{name} does not exist")
        return f'"{name}"'

    def _where(self, sql: SQL, table: str, columns: dict[str, str], request: web.Request) -> str:
        clauses: list[str] = []
        for key, raw in request.rel_url.query.items():
            if key in RESERVED_PARAMS:
                continue
            clauses.append(self._condition(sql, table, columns, key, raw))
        return (" WHERE " + " AND ".join(clauses)) if clauses else ""

    def _condition(self, sql: SQL, table: str, columns: dict[str, str], key: str, raw: str) -> str:
        op, dot, value = raw.partition(".")
        negate = False
        if op == "not":
            negate = True
            op, dot, value = value.partition(".")
        if not dot:
            raise bad_filter(raw, "unexpected end of input expecting operator (eq, gt, ...)")
        column = self._column(table, columns, key)
        column_type = columns[key]
        if op in OPERATORS:
            clause = f"{column} {OPERATORS[op]} ({sql.param(value)}::text)::{column_type}"
        elif op in {"like", "ilike"}:
            pattern = value.replace("*", "%")
            clause = f"({column})::text {op.upper()} {sql.param(pattern)}::text"
        elif op == "is":
            lowered = value.lower()
            if lowered not in {"null", "true", "false", "unknown"}:
                raise bad_filter(raw, 'unexpected "' + value + '" expecting null or trilean value')
            clause = f"{column} IS {lowered.upper()}"
        elif op == "in":
            items = _split_in_list(value, raw)
            clause = f"{column} = ANY(({sql.param(items)}::text[])::{column_type}[])"
        else:
            raise bad_filter(raw, f'unexpected "{op}" expecting an operator')
        return f"NOT ({clause})" if negate else clause

    def _select(self, table: str, columns: dict[str, str], request: web.Request) -> str:
        raw = request.rel_url.query.get("select", "*").strip()
        if raw in {"", "*"}:
            return "*"
        names = [part.strip() for part in raw.split(",")]
        for name in names:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise PostgrestError(
                    400,
                    "PGRST100",
                    f'"failed to parse select parameter ({raw})"',
                    f'unexpected "{name}"',
                )
        return ", ".join(self._column(table, columns, name) for name in names)

    def _order(self, table: str, columns: dict[str, str], request: web.Request) -> str:
        raw = request.rel_url.query.get("order")
        if not raw:
            return ""
        terms = []
        for part in raw.split(","):
            match = _ORDER_TERM.match(part.strip())
            if match is None:
                raise PostgrestError(
                    400, "PGRST100", f'"failed to parse order ({raw})"', f'unexpected "{part}"'
                )
            term = self._column(table, columns, match["col"])
            term += " DESC" if match["dir"] == "desc" else " ASC"
            if match["nulls"]:
                term += " NULLS FIRST" if match["nulls"] == "nullsfirst" else " NULLS LAST"
            terms.append(term)
        return " ORDER BY " + ", ".join(terms)

    def _int_param(self, request: web.Request, name: str) -> int | None:
        raw = request.rel_url.query.get(name)
        if raw is None:
            return None
        if not raw.isdigit():
            raise PostgrestError(
                400, "PGRST100", f'"failed to parse {name} ({raw})"', "expecting a number"
            )
        return int(raw)

    @staticmethod
    def _prefer(request: web.Request) -> set[str]:
        prefer = ",".join(request.headers.getall("Prefer", []))
        return {part.strip() for part in prefer.split(",") if part.strip()}

    async def _body_rows(
        self, request: web.Request, table: str, columns: dict[str, str], *, many: bool
    ) -> list[dict[str, Any]]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json", str(exc)) from None
        rows = body if isinstance(body, list) else [body]
        if (
            not rows
            or not all(isinstance(row, dict) for row in rows)
            or (not many and len(rows) != 1)
        ):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        for row in rows:
            for key in row:
                if key not in columns:
                    raise PostgrestError(
                        400,
                        "PGRST204",
                        f"Could not find the '{key}' column of '{table}' in the schema cache",
                    )
        return rows

    async def _run_records(self, request: web.Request) -> web.StreamResponse:
        assert self._pool is not None
        table = request.match_info["table"]
        columns = self._table(table)
        prefer = self._prefer(request)
        representation = "return=representation" in prefer
        method = request.method
        sql = SQL()
        if method == "GET":
            statement = (
                f'SELECT {self._select(table, columns, request)} FROM "{table}"'
                + self._where(sql, table, columns, request)
                + self._order(table, columns, request)
            )
            limit = self._int_param(request, "limit")
            offset = self._int_param(request, "offset") or 0
            if limit is not None:
                statement += f" LIMIT {sql.param(limit)}::bigint"
            if offset:
                statement += f" OFFSET {sql.param(offset)}::bigint"
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(statement, *sql.params)
                total = "*"
                if "count=exact" in prefer:
                    count_sql = SQL()
                    where = self._where(count_sql, table, columns, request)
                    value = await conn.fetchval(
                        f'SELECT COUNT(*) FROM "{table}"{where}', *count_sql.params
                    )
                    total = str(value)
            span = f"{offset}-{offset + len(rows) - 1}" if rows else "*"
            return web.json_response(
                [_record(row) for row in rows], headers={"Content-Range": f"{span}/{total}"}
            )
        if method == "POST":
            rows = await self._body_rows(request, table, columns, many=True)
            names = list(dict.fromkeys(key for row in rows for key in row))
            values_sql = []
            for row in rows:
                values_sql.append(
                    "("
                    + ", ".join(
                        f"({sql.param(_text(row.get(name), columns[name]))}::text)::{columns[name]}"
                        for name in names
                    )
                    + ")"
                )
            quoted = ", ".join(self._column(table, columns, name) for name in names)
            statement = f'INSERT INTO "{table}" ({quoted}) VALUES {", ".join(values_sql)}'
            on_conflict = request.rel_url.query.get("on_conflict")
            resolution = next(
                (p.split("=", 1)[1] for p in prefer if p.startswith("resolution=")), None
            )
            if resolution is not None:
                targets = (
                    [part.strip() for part in on_conflict.split(",")]
                    if on_conflict
                    else self._primary.get(table, [])
                )
                target_sql = ", ".join(self._column(table, columns, t) for t in targets)
                if resolution == "ignore-duplicates":
                    statement += f" ON CONFLICT ({target_sql}) DO NOTHING"
                elif resolution == "merge-duplicates":
                    updates = [n for n in names if n not in targets] or targets
                    statement += f" ON CONFLICT ({target_sql}) DO UPDATE SET " + ", ".join(
                        f'"{n}" = EXCLUDED."{n}"' for n in updates
                    )
                else:
                    raise PostgrestError(
                        400, "PGRST122", f"Invalid preferences given: resolution={resolution}"
                    )
            statement += f" RETURNING {self._select(table, columns, request)}"
            async with self._pool.acquire() as conn:
                result = await conn.fetch(statement, *sql.params)
            if representation:
                return web.json_response([_record(row) for row in result], status=201)
            return web.Response(status=201)
        if method in {"PATCH", "DELETE"}:
            if method == "PATCH":
                [values] = await self._body_rows(request, table, columns, many=False)
                if not values:
                    raise PostgrestError(400, "PGRST102", "Empty or invalid json")
                assignments = ", ".join(
                    f'"{name}" = ({sql.param(_text(value, columns[name]))}::text)::{columns[name]}'
                    for name, value in values.items()
                )
                statement = f'UPDATE "{table}" SET {assignments}'
            else:
                statement = f'DELETE FROM "{table}"'
            statement += self._where(sql, table, columns, request)
            statement += f" RETURNING {self._select(table, columns, request)}"
            async with self._pool.acquire() as conn:
                result = await conn.fetch(statement, *sql.params)
            if representation:
                return web.json_response([_record(row) for row in result], status=200)
            return web.Response(status=204)
        raise PostgrestError(405, "PGRST117", f"Unsupported HTTP method: {method}")

    # --- functions (RPC) ---

    async def _rpc(self, request: web.Request) -> web.StreamResponse:
        guarded = await self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        try:
            response = await self._run_rpc(request)
        except PostgrestError as exc:
            response = exc.response()
        except asyncpg.PostgresError as exc:
            response = from_postgres(exc).response()
        except (OSError, asyncpg.InterfaceError) as exc:
            response = insforge_error(503, "INTERNAL_ERROR", f"Database service unavailable: {exc}")
        if isinstance(guarded, Fault):
            return self._fault_response(guarded, request)
        return response

    async def _run_rpc(self, request: web.Request) -> web.StreamResponse:
        assert self._pool is not None
        name = request.match_info["function"]
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json") from None
        if not isinstance(body, dict):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        function = _match_function(self._functions.get(name, []), set(body))
        if function is None:
            listed = ", ".join(sorted(body))
            raise PostgrestError(
                404,
                "PGRST202",
                f"Could not find the function public.{name}({listed}) in the schema cache",
                hint="Perhaps you meant to call another function, or the migration is missing",
            )
        sql = SQL()
        arguments = ", ".join(
            f'"{arg}" => ({sql.param(_rpc_text(body[arg], kind))}::text)::{kind}'
            for arg, kind in function.inputs
            if arg in body
        )
        call = f'public."{name}"({arguments})'
        async with self._pool.acquire() as conn, conn.transaction():
            if function.returns_set:
                rows = await conn.fetch(f"SELECT * FROM {call}", *sql.params)
                if function.composite:
                    return web.json_response([_record(row) for row in rows])
                return web.json_response([_jsonable(row[0]) for row in rows])
            if function.composite:
                row = await conn.fetchrow(f"SELECT * FROM {call}", *sql.params)
                return web.json_response(_record(row) if row is not None else None)
            value = await conn.fetchval(f"SELECT {call}", *sql.params)
            return web.json_response(_jsonable(value))

    # --- migrations ---

    async def _list_migrations(self, request: web.Request) -> web.StreamResponse:
        guarded = await self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        assert self._pool is not None
        rows = await self._pool.fetch(
            "SELECT version, name, statements, created_at FROM system.custom_migrations "
            "ORDER BY version::numeric DESC"
        )
        migrations = [
            {
                "version": row["version"],
                "name": row["name"],
                "statements": list(row["statements"]),
                "createdAt": row["created_at"].isoformat(),
            }
            for row in rows
        ]
        return web.json_response({"migrations": migrations})

    async def _create_migration(self, request: web.Request) -> web.StreamResponse:
        guarded = await self._guard(request)
        if isinstance(guarded, web.Response):
            return guarded
        assert self._pool is not None
        try:
            body = await request.json()
        except ValueError:
            return insforge_error(400, "INVALID_INPUT", "Invalid JSON in request body")
        if not isinstance(body, dict):
            return insforge_error(400, "INVALID_INPUT", "Invalid migration request.")
        version, name, sql = body.get("version"), body.get("name"), body.get("sql")
        if not isinstance(version, str) or not _VERSION.match(version):
            return insforge_error(
                400,
                "INVALID_INPUT",
                "Migration version must be a numeric string of at most 64 digits "
                "(e.g. 0001 or 20260418091500).",
            )
        if not isinstance(name, str) or not _NAME.match(name.strip()):
            return insforge_error(
                400, "INVALID_INPUT", "Use lowercase letters, numbers, and hyphens only."
            )
        if not isinstance(sql, str) or not sql.strip():
            return insforge_error(400, "INVALID_INPUT", "Migration SQL is required")
        statements = [
            part.strip() for part in re.sub(r"--[^\n]*", "", sql).split(";") if part.strip()
        ]
        if not statements:
            return insforge_error(
                400, "INVALID_INPUT", "Migration SQL must contain at least one statement."
            )
        if any(_TRANSACTION.match(statement) for statement in statements):
            return insforge_error(
                400, "DATABASE_FORBIDDEN", "Custom migrations cannot manage their own transactions."
            )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SET LOCAL search_path TO public")
                await conn.execute(sql)
                row = await conn.fetchrow(
                    "INSERT INTO system.custom_migrations (version, name, statements) "
                    "VALUES ($1, $2, $3) RETURNING created_at",
                    version,
                    name.strip(),
                    statements,
                )
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == "23505":
                return insforge_error(409, "DATABASE_DUPLICATE", exc.message)
            status = 400 if (exc.sqlstate or "").startswith(("42", "22", "23")) else 500
            code = "DATABASE_VALIDATION_ERROR" if status == 400 else "INTERNAL_ERROR"
            return insforge_error(status, code, exc.message)
        await self.reload_schema()
        assert row is not None
        return web.json_response(
            {
                "version": version,
                "name": name.strip(),
                "statements": statements,
                "createdAt": row["created_at"].isoformat(),
                "message": "Migration executed successfully",
            },
            status=201,
        )


# --- functions, as PostgREST's schema cache sees them ---


@dataclass(frozen=True)
class _Function:
    # Input arguments in order: (name, type as PostgreSQL formats it).
    inputs: tuple[tuple[str, str], ...]
    # How many of the last inputs have defaults (and so may be left out).
    defaults: int
    returns_set: bool
    # Rows with columns (a table, OUT arguments, a composite type), not a single value.
    composite: bool

    def accepts(self, given: set[str]) -> bool:
        names = [arg for arg, _ in self.inputs]
        required = set(names[: len(names) - self.defaults])
        return required <= given <= set(names)


async def _load_functions(pool: asyncpg.Pool) -> dict[str, list[_Function]]:
    rows = await pool.fetch(
        "SELECT p.proname, p.proargnames, p.proargmodes, p.pronargdefaults, p.proretset, "
        "array(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) AS t) AS argtypes, "
        "rt.typtype, rt.typname FROM pg_proc p "
        "JOIN pg_namespace n ON p.pronamespace = n.oid JOIN pg_type rt ON rt.oid = p.prorettype "
        "WHERE n.nspname = 'public' AND p.prokind = 'f'"
    )
    functions: dict[str, list[_Function]] = {}
    for row in rows:
        names = list(row["proargnames"] or [])
        # "char" columns come back as bytes.
        modes = [_char(m) for m in row["proargmodes"] or [b"i"] * len(row["argtypes"])]
        input_names = [n for n, m in zip(names, modes, strict=False) if m in ("i", "b", "v")]
        if len(input_names) != len(row["argtypes"]) or not all(input_names):
            continue  # unnamed arguments: PostgREST cannot call these by name either
        has_out = any(m in ("o", "b", "t") for m in modes)
        composite = _char(row["typtype"]) == "c" or has_out or row["typname"] == "record"
        functions.setdefault(row["proname"], []).append(
            _Function(
                inputs=tuple(zip(input_names, row["argtypes"], strict=True)),
                defaults=row["pronargdefaults"],
                returns_set=row["proretset"],
                composite=composite,
            )
        )
    return functions


def _char(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _match_function(candidates: list[_Function], given: set[str]) -> _Function | None:
    matching = [f for f in candidates if f.accepts(given)]
    return matching[0] if len(matching) == 1 else None


def _rpc_text(value: Any, kind: str) -> str | None:
    """A JSON argument as text PostgreSQL casts to `kind` (arrays as array literals)."""
    if kind.endswith("[]") and isinstance(value, list):
        items = []
        for item in value:
            if item is None:
                items.append("NULL")
                continue
            text = _text(item, kind[:-2]) or ""
            items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        return "{" + ",".join(items) + "}"
    return _text(value, kind)


# --- throwaway databases ---


def dsn_for(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def migrate_through_fake(dsn: str) -> None:
    """The real migrations applied to the database at `dsn` through the fake's migrations
    endpoint, as an operator applies them to InsForge."""
    from bot.storage.insforge_client import InsForgeClient
    from bot.storage.migrate import apply_insforge_migrations

    async with FakeInsForge(dsn) as fake:
        client = InsForgeClient(fake.url, fake.api_key)
        try:
            await apply_insforge_migrations(client)
        finally:
            await client.aclose()


async def create_migrated_database(admin_dsn: str) -> str:
    """A new database with the real migrations applied through the fake (`migrate_through_fake`);
    dropped again when that fails."""
    name = await create_database(admin_dsn)
    try:
        await migrate_through_fake(dsn_for(admin_dsn, name))
    except BaseException:
        await drop_database(admin_dsn, name)
        raise
    return name


async def create_database(admin_dsn: str, *, template: str | None = None) -> str:
    """A new empty database (or a copy of `template`) with a random name; returns the name."""
    name = "test_" + secrets.token_hex(6)
    conn = await asyncpg.connect(admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await conn.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_database(admin_dsn: str, *, template: str | None = None) -> AsyncIterator[str]:
    """A throwaway database for one test: yields its DSN, drops it afterwards."""
    name = await create_database(admin_dsn, template=template)
    try:
        yield dsn_for(admin_dsn, name)
    finally:
        await drop_database(admin_dsn, name)


async def truncate_public_tables(dsn: str) -> None:
    """Empty every table of the public schema (ids restart): a clean slate between tests."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = [
            row["tablename"]
            for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        ]
        if tables:
            quoted = ", ".join(f'"{name}"' for name in tables)
            await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    finally:
        await conn.close()
