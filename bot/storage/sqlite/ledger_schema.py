"""SQLite step 7: the call ledger (mirrors insforge/migrations/011_call_ledger.sql).

`at` is ISO 8601 UTC text (sorts as time); `fallback` 0/1. The index on (at) serves `/stats`
over a window, (agent, at) `/stats <agent>` and the change reports, (user_id, at) `/usage`.
"""

LEDGER_SQL = """
CREATE TABLE IF NOT EXISTS ledger_calls (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    turn_id INTEGER,
    chat_id INTEGER,
    user_id INTEGER,
    pipeline TEXT NOT NULL,
    agent TEXT NOT NULL,
    role TEXT,
    level TEXT,
    spec TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    fallback INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL,
    cost_source TEXT NOT NULL
        CHECK (cost_source IN ('provider', 'price_table', 'local', 'unpriced')),
    config_version INTEGER
);
CREATE INDEX IF NOT EXISTS ledger_calls_at_idx ON ledger_calls (at);
CREATE INDEX IF NOT EXISTS ledger_calls_agent_at_idx ON ledger_calls (agent, at);
CREATE INDEX IF NOT EXISTS ledger_calls_user_at_idx ON ledger_calls (user_id, at);
CREATE TABLE IF NOT EXISTS ledger_ratings (
    turn_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    chat_id INTEGER,
    up INTEGER NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (turn_id, user_id)
);
CREATE INDEX IF NOT EXISTS ledger_ratings_at_idx ON ledger_ratings (at);
-- One change report per (model configuration change, agent): the replica whose insert lands
-- sends it.
CREATE TABLE IF NOT EXISTS ledger_reports (
    change_id INTEGER NOT NULL,
    agent TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (change_id, agent)
);
"""
