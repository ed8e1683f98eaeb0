"""The plans of a turn's two requests (`turn_context`, `turn_write`) on the real PostgreSQL.

A plan that scans `messages` whole costs nothing on a test's few rows and grows with every
message a live bot stores: 020's `turn_write` hashed the jsonb array of the turn's messages and
scanned the table to find them again (12 ms at 16,000 messages). These tests run both functions
under auto_explain, nested statements included, on a table large enough that the planner's
choice shows, and read every plan.
"""

from __future__ import annotations

import json

import asyncpg

from tests.fakes.insforge_server import dsn_for

ROWS = 5_000


async def _plans(conn: asyncpg.Connection, sql: str, *args: object) -> list[str]:
    """The plans auto_explain logs for `sql` and every statement it runs."""

    logged: list[str] = []

    def listen(_conn: object, message: asyncpg.PostgresLogMessage) -> None:
        logged.append(str(message.message))

    conn.add_log_listener(listen)
    try:
        await conn.fetchval(sql, *args)
    finally:
        conn.remove_log_listener(listen)
    return [text for text in logged if "plan:" in text]


async def _with_auto_explain(conn: asyncpg.Connection) -> None:
    await conn.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_analyze = off",
        "client_min_messages = log",
    ):
        await conn.execute(f"SET {setting}")


async def test_turn_write_and_context_find_rows_by_index_not_by_scanning_messages(
    postgres_dsn: str, insforge_run_db: str
) -> None:
    conn = await asyncpg.connect(dsn_for(postgres_dsn, insforge_run_db))
    try:
        chat = 880_001
        await conn.execute(
            "INSERT INTO messages (chat_id, user_id, role, text, idempotency_key) "
            "SELECT $1 + (g % 300), $1, 'user', 'filler ' || g, 'plan-test:' || g "
            "FROM generate_series(1, $2) g",
            chat,
            ROWS,
        )
        await conn.execute("ANALYZE messages")
        await _with_auto_explain(conn)
        messages = [
            {
                "chat_id": chat,
                "user_id": chat,
                "role": role,
                "text": f"{role} text",
                "idempotency_key": f"plan-test:turn:{role}",
            }
            for role in ("user", "assistant")
        ]
        calls = [
            {
                "call_id": "plan-test-call",
                "at": "2026-12-02T10:00:00+00:00",
                "chat_id": chat,
                "user_id": chat,
                "pipeline": "support",
                "agent": "coach",
                "spec": "openai:m",
                "model": "m",
                "provider": "openai",
                "attempt": 1,
                "fallback": False,
                "outcome": "ok",
                "latency_ms": 5,
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost_source": "unpriced",
            }
        ]
        written_plans = await _plans(
            conn,
            "SELECT turn_write($1::jsonb, $2::jsonb)",
            json.dumps(messages),
            json.dumps(calls),
        )
        context_plans = await _plans(
            conn, "SELECT turn_context($1, $2, 20, 50, true, false)", chat, chat
        )
        await conn.execute("RESET client_min_messages")
        turn_id = await conn.fetchval(
            "SELECT turn_id FROM ledger_calls WHERE call_id = 'plan-test-call'"
        )
        user_row = await conn.fetchval(
            "SELECT id FROM messages WHERE idempotency_key = 'plan-test:turn:user'"
        )
    finally:
        await conn.close()

    # The nested statements were seen (the test would pass vacuously without them).
    assert len(written_plans) >= 3, written_plans
    assert len(context_plans) >= 1, context_plans
    for plan in written_plans + context_plans:
        assert "Seq Scan on messages" not in plan, plan
    # And the answer is still the one 020 gave: the call is the user's message's turn.
    assert turn_id == user_row
