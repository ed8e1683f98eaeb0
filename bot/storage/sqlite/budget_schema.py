"""Schema step 11 (`schema.py`): budget limits set at runtime (insforge/migrations/015)."""

BUDGET_SQL = """
CREATE TABLE IF NOT EXISTS budget_limits (
    scope TEXT PRIMARY KEY,
    usd REAL CHECK (usd IS NULL OR usd >= 0),
    set_by TEXT,
    updated_at TEXT NOT NULL
);
"""
