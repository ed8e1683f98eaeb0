-- The bot's own catalog of named models (`/catalog add|edit|remove`). Entries named in the
-- environment (DEFAULT_MODEL, FALLBACK_MODELS, ...) exist without a row; a row with their alias
-- holds an admin's edits. Empty parameters mean the agent's own; offered_to_users NULL means the
-- default (USER_MODELS for environment entries, not offered for added ones).
CREATE TABLE IF NOT EXISTS model_catalog (
    id SERIAL PRIMARY KEY,
    alias TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    display_name TEXT,
    timeout DOUBLE PRECISION CHECK (timeout IS NULL OR timeout > 0),
    max_tokens INTEGER CHECK (max_tokens IS NULL OR max_tokens > 0),
    temperature DOUBLE PRECISION CHECK (temperature IS NULL OR (temperature >= 0 AND temperature <= 2)),
    offered_to_users BOOLEAN,
    updated_by TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The history now records every model configuration change: assignments of any target (agents,
-- pipeline:<name>, role:<role>, default), their rollbacks, and catalog changes
-- (catalog:<alias>). Its newest id is the configuration version. A rollback names the line it
-- undid, so repeated /rollback walks further back.
ALTER TABLE agent_model_config_history
    DROP CONSTRAINT IF EXISTS agent_model_config_history_action_check;
ALTER TABLE agent_model_config_history
    ADD CONSTRAINT agent_model_config_history_action_check
    CHECK (action IN ('set', 'reset', 'rollback', 'add', 'edit', 'remove'));
ALTER TABLE agent_model_config_history ADD COLUMN IF NOT EXISTS reverts_id BIGINT;
