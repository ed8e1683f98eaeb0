"""Schema step 9 (`schema.py`): who may use the bot (insforge/migrations/013_access.sql)."""

ACCESS_SQL = """
CREATE TABLE IF NOT EXISTS access_list (
    subject_id INTEGER PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('allowed', 'pending', 'blocked', 'refused')),
    label TEXT,
    notified INTEGER NOT NULL DEFAULT 0,
    waiting_update TEXT,
    admin_messages TEXT,
    decided_by TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_list_updated_at ON access_list (updated_at DESC);
"""
