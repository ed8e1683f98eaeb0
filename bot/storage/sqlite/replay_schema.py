"""Schema step 14 (`schema.py`): replay inputs (insforge/migrations/018)."""

REPLAY_SQL = """
CREATE TABLE IF NOT EXISTS replay_inputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    input_id TEXT NOT NULL UNIQUE,
    at TEXT NOT NULL,
    agent TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    chat_id INTEGER,
    user_id INTEGER,
    turn_id INTEGER,
    preference TEXT NOT NULL DEFAULT 'any',
    spec TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    messages TEXT NOT NULL,
    schema TEXT,
    temperature REAL,
    max_tokens INTEGER,
    streamed INTEGER NOT NULL DEFAULT 0,
    output TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL
);
CREATE INDEX IF NOT EXISTS replay_inputs_agent_idx ON replay_inputs (agent, id);
CREATE INDEX IF NOT EXISTS replay_inputs_chat_idx ON replay_inputs (chat_id);
CREATE INDEX IF NOT EXISTS replay_inputs_user_idx ON replay_inputs (user_id);
"""
