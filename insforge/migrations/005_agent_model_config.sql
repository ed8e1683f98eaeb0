-- Admin overrides: agent `agent_name` runs on OpenRouter model `model_id` while `is_active`.
-- Read by ModelConfigService as one query over the active rows (the partial index below).
CREATE TABLE IF NOT EXISTS agent_model_config (
    id SERIAL PRIMARY KEY,
    agent_name TEXT NOT NULL UNIQUE,
    model_id TEXT NOT NULL,
    is_active BOOLEAN NOT NULL DEFAULT true,
    set_by TEXT,
    created_at TIMESTAMPTZ DEFAULT now(),
    updated_at TIMESTAMPTZ DEFAULT now()
);

CREATE INDEX IF NOT EXISTS agent_model_config_active_idx
    ON agent_model_config (agent_name) WHERE is_active;
