"""Schema step 4 (`schema.py`): users' archives and an FTS5 index of their passages.

- `archive_passages` keeps each passage's text once; `archive_fts` is a contentless FTS5 table
  over it (rowid = the passage's id), so the text is not stored twice. A contentless table can
  only forget a row when told its indexed values again, which `archives.py` does from
  `archive_passages` in the same transaction as the delete.
- `owner` holds one token per passage, `a<archive id>`, so that a search names the user's archives
  in the MATCH itself (`owner:("a3" OR "a7") AND (...)`): FTS5 intersects that short list with the
  terms' lists instead of ranking every user's matches and filtering afterwards (decision 0010).
  Its bm25 weight is 0, so it never changes a rank.
- `porter unicode61 remove_diacritics 2`: "cells" finds "cell", "résumé" finds "resume".
"""

from __future__ import annotations

ARCHIVES_SQL = """
CREATE TABLE IF NOT EXISTS archives (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'markdown', 'pdf', 'html')),
    size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
    page_count INTEGER NOT NULL,
    passage_count INTEGER NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    UNIQUE (user_id, name)
);
CREATE TABLE IF NOT EXISTS archive_passages (
    id INTEGER PRIMARY KEY,
    archive_id INTEGER NOT NULL REFERENCES archives (id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    section TEXT,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_passages_archive_idx
    ON archive_passages (archive_id, ordinal);
CREATE VIRTUAL TABLE IF NOT EXISTS archive_fts USING fts5(
    owner, section, text,
    content = '',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
"""
