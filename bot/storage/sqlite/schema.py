"""The embedded database's schema, as ordered migration steps.

`schema_version` records every step applied; `migrate` applies the missing ones in order, each in
its own transaction, so a first start creates the schema and a later start (after an upgrade of
the bot) moves it forward without losing rows. Steps are append-only: never edit a released one,
add a new step instead. The tables mirror `insforge/migrations/*.sql` (SQLite types: timestamps are
ISO 8601 UTC text, booleans 0/1, lists JSON text).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.storage.repositories import StorageConfigError
from bot.storage.sqlite.access_schema import ACCESS_SQL
from bot.storage.sqlite.archives_schema import ARCHIVES_SQL
from bot.storage.sqlite.budget_schema import BUDGET_SQL
from bot.storage.sqlite.ledger_schema import LEDGER_SQL
from bot.storage.sqlite.replay_schema import REPLAY_SQL
from bot.storage.sqlite.rollup_schema import ROLLUP_SQL
from bot.storage.sqlite.task_schema import TASK_SQL
from bot.storage.sqlite.trial_schema import TRIAL_ARM_SQL, TRIAL_SQL


@dataclass(frozen=True, slots=True)
class SchemaStep:
    version: int
    name: str
    sql: str


STEPS: tuple[SchemaStep, ...] = (
    SchemaStep(
        1,
        "users-settings-messages-memory-exercises",
        """
        CREATE TABLE IF NOT EXISTS users (
            id INTEGER PRIMARY KEY,
            username TEXT,
            first_name TEXT,
            last_name TEXT,
            language_code TEXT,
            first_seen TEXT NOT NULL,
            last_seen TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS user_settings (
            user_id INTEGER PRIMARY KEY,
            default_model TEXT,
            model_preference TEXT NOT NULL DEFAULT 'any'
                CHECK (model_preference IN ('any', 'local', 'online')),
            archives TEXT NOT NULL DEFAULT '[]',
            api_key_provider TEXT,
            api_key_encrypted TEXT,
            updated_at TEXT NOT NULL
        );
        -- AUTOINCREMENT: ids are never reused after /clear, so id order is arrival order.
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL,
            user_id INTEGER,
            role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
            text TEXT NOT NULL,
            pipeline TEXT,
            trace_id TEXT,
            created_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS messages_chat_id_id_idx ON messages (chat_id, id);
        CREATE TABLE IF NOT EXISTS chat_summaries (
            chat_id INTEGER PRIMARY KEY,
            summary TEXT NOT NULL,
            message_count INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS user_facts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER NOT NULL,
            fact TEXT NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (user_id, fact)
        );
        CREATE TABLE IF NOT EXISTS exercises (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL,
            user_id INTEGER NOT NULL,
            topic TEXT NOT NULL,
            question TEXT NOT NULL,
            answer TEXT,
            grade REAL CHECK (grade IS NULL OR (grade >= 0 AND grade <= 1)),
            feedback TEXT,
            created_at TEXT NOT NULL,
            graded_at TEXT
        );
        CREATE INDEX IF NOT EXISTS exercises_chat_id_id_idx ON exercises (chat_id, id);
        CREATE INDEX IF NOT EXISTS exercises_user_id_id_idx ON exercises (user_id, id);
        """,
    ),
    SchemaStep(
        2,
        "agent-model-config",
        """
        CREATE TABLE IF NOT EXISTS agent_model_config (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_name TEXT NOT NULL UNIQUE,
            model_id TEXT NOT NULL,
            is_active INTEGER NOT NULL DEFAULT 1,
            set_by TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS agent_model_config_active_idx
            ON agent_model_config (agent_name) WHERE is_active = 1;
        CREATE TABLE IF NOT EXISTS agent_model_config_history (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_name TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('set', 'reset')),
            old_model_id TEXT,
            new_model_id TEXT,
            changed_by TEXT,
            changed_at TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS agent_model_config_history_agent_idx
            ON agent_model_config_history (agent_name, id);
        """,
    ),
    # insforge/migrations/007: storing the same message or history line twice keeps one row.
    SchemaStep(
        3,
        "idempotency-keys",
        """
        ALTER TABLE messages ADD COLUMN idempotency_key TEXT;
        CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency_key_key
            ON messages (idempotency_key);
        ALTER TABLE agent_model_config_history ADD COLUMN idempotency_key TEXT;
        CREATE UNIQUE INDEX IF NOT EXISTS agent_model_config_history_idempotency_key_key
            ON agent_model_config_history (idempotency_key);
        """,
    ),
    # insforge/migrations/008: users' study archives and the full-text index of their passages.
    SchemaStep(4, "archives", ARCHIVES_SQL),
    # insforge/migrations/009: the catalog of named models, and a history of every model
    # configuration change (SQLite cannot alter a CHECK: the history table is rebuilt, ids kept).
    SchemaStep(
        5,
        "model-catalog",
        """
        CREATE TABLE IF NOT EXISTS model_catalog (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alias TEXT NOT NULL UNIQUE,
            spec TEXT NOT NULL,
            display_name TEXT,
            timeout REAL CHECK (timeout IS NULL OR timeout > 0),
            max_tokens INTEGER CHECK (max_tokens IS NULL OR max_tokens > 0),
            temperature REAL
                CHECK (temperature IS NULL OR (temperature >= 0 AND temperature <= 2)),
            offered_to_users INTEGER,
            updated_by TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE agent_model_config_history_v5 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            agent_name TEXT NOT NULL,
            action TEXT NOT NULL
                CHECK (action IN ('set', 'reset', 'rollback', 'add', 'edit', 'remove')),
            old_model_id TEXT,
            new_model_id TEXT,
            changed_by TEXT,
            changed_at TEXT NOT NULL,
            idempotency_key TEXT,
            reverts_id INTEGER
        );
        INSERT INTO agent_model_config_history_v5 (id, agent_name, action, old_model_id,
            new_model_id, changed_by, changed_at, idempotency_key)
            SELECT id, agent_name, action, old_model_id, new_model_id, changed_by, changed_at,
                idempotency_key FROM agent_model_config_history;
        -- The ids go on from where they were (the version never goes back), even when the
        -- newest lines had been deleted.
        DELETE FROM sqlite_sequence WHERE name = 'agent_model_config_history_v5';
        INSERT INTO sqlite_sequence (name, seq)
            SELECT 'agent_model_config_history_v5', seq FROM sqlite_sequence
            WHERE name = 'agent_model_config_history';
        DROP TABLE agent_model_config_history;
        ALTER TABLE agent_model_config_history_v5 RENAME TO agent_model_config_history;
        CREATE INDEX IF NOT EXISTS agent_model_config_history_agent_idx
            ON agent_model_config_history (agent_name, id);
        CREATE UNIQUE INDEX IF NOT EXISTS agent_model_config_history_idempotency_key_key
            ON agent_model_config_history (idempotency_key);
        """,
    ),
    # insforge/migrations/011: the call ledger and the ratings credited to its turns. (Step 6
    # is another issue's: steps may arrive out of order, `migrate` applies whichever is missing.)
    SchemaStep(7, "call-ledger", LEDGER_SQL),
    # insforge/migrations/013: who may use the bot (ACCESS_MODE, /users).
    SchemaStep(9, "access-list", ACCESS_SQL),
    # insforge/migrations/014: trials (/trial) and the ledger's trial_id / trial_arm.
    SchemaStep(10, "trials", TRIAL_SQL),
    # insforge/migrations/015: budget limits set at runtime (/budget).
    SchemaStep(11, "budget-limits", BUDGET_SQL),
    # insforge/migrations/016: the ledger's hourly and daily rollups, filled from its rows.
    SchemaStep(12, "ledger-rollups", ROLLUP_SQL),
    # insforge/migrations/017: the trial guardrails' index (a trial's arm in time order).
    SchemaStep(13, "trial-arm-index", TRIAL_ARM_SQL),
    # insforge/migrations/018: replay inputs (/replay, REPLAY_KEEP, STORE_PROMPTS).
    SchemaStep(14, "replay-inputs", REPLAY_SQL),
    # insforge/migrations/019: post-completion tasks (/task) and their results.
    SchemaStep(15, "tasks", TASK_SQL),
)

# The highest step, wherever it sits in the tuple (steps of parallel work land out of order).
LATEST_VERSION = max(step.version for step in STEPS)


def current_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    rows = conn.execute("SELECT MAX(version) FROM schema_version").fetchall()
    value = rows[0][0] if rows else None
    return int(value) if value is not None else 0


def migrate(conn: sqlite3.Connection, *, target: int | None = None) -> list[SchemaStep]:
    """Apply the steps the database lacks (up to `target`), in number order; those applied.

    Blocking: the caller runs it off the event loop (start-up may wait on another process's lock).
    """
    version = current_version(conn)
    # Set-based, not "after the newest": steps land in number order only most of the time (two
    # features built side by side take 6 and 7; 7 may ship first), and a database at 7 must
    # still get 6 when it arrives. Each step is written to apply on any later schema.
    done = {int(row[0]) for row in conn.execute("SELECT version FROM schema_version")}
    if version > LATEST_VERSION:
        raise StorageConfigError(
            f"the SQLite database (DATABASE_URL) is at schema version {version}, newer than this "
            f"bot knows ({LATEST_VERSION}): run the newer bot, or point DATABASE_URL elsewhere"
        )
    applied: list[SchemaStep] = []
    for step in STEPS:
        if step.version in done or (target is not None and step.version > target):
            continue
        # One transaction per step: a failed step leaves the previous version intact.
        name = step.name.replace("'", "''")
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + step.sql
                + f"\nINSERT INTO schema_version (version, name, applied_at) VALUES "
                f"({step.version}, '{name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        applied.append(step)
    return applied
