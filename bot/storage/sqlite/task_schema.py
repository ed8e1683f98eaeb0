"""Schema step 15 (`schema.py`): post-completion tasks, their results (insforge/migrations/019)."""

TASK_SQL = """
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    pipeline TEXT,
    sample REAL NOT NULL DEFAULT 100 CHECK (sample > 0 AND sample <= 100),
    kind TEXT NOT NULL DEFAULT 'note' CHECK (kind IN ('note', 'score')),
    instruction TEXT NOT NULL,
    created_by TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS task_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('note', 'score')),
    at TEXT NOT NULL,
    turn_id INTEGER,
    chat_id INTEGER,
    user_id INTEGER,
    pipeline TEXT NOT NULL,
    model TEXT NOT NULL,
    score REAL CHECK (score IS NULL OR (score >= 0 AND score <= 1)),
    text TEXT NOT NULL,
    trace_id TEXT
);
CREATE INDEX IF NOT EXISTS task_results_task_idx ON task_results (task, id);
CREATE INDEX IF NOT EXISTS task_results_turn_idx ON task_results (turn_id);
CREATE INDEX IF NOT EXISTS task_results_chat_idx ON task_results (chat_id);
CREATE INDEX IF NOT EXISTS task_results_user_idx ON task_results (user_id);
"""
