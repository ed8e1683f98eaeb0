-- Every set and reset of an override: who changed which agent from what to what, and when, so
-- admins can see the history and undo a change.
CREATE TABLE IF NOT EXISTS agent_model_config_history (
    id BIGSERIAL PRIMARY KEY,
    agent_name TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('set', 'reset')),
    old_model_id TEXT,
    new_model_id TEXT,
    changed_by TEXT,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS agent_model_config_history_agent_idx
    ON agent_model_config_history (agent_name, id);
