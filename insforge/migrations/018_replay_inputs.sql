-- Replay inputs (`/replay`, bot/replay): what each agent sent its model in real turns (the
-- messages and the options) and what came back, so an admin can run the same inputs on a
-- candidate model. Each agent keeps its newest REPLAY_KEEP rows (replay_prune); nothing is kept
-- with STORE_PROMPTS=false. `/forget` deletes a chat's rows, `/deleteme` a user's.
CREATE TABLE IF NOT EXISTS replay_inputs (
    id BIGSERIAL PRIMARY KEY,
    -- Made by the bot at capture: a write repeated after a lost answer stores the row once.
    input_id TEXT NOT NULL UNIQUE,
    at TIMESTAMPTZ NOT NULL,
    agent TEXT NOT NULL,
    pipeline TEXT NOT NULL,
    chat_id BIGINT,
    user_id BIGINT,
    turn_id BIGINT,
    preference TEXT NOT NULL DEFAULT 'any',
    spec TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    messages JSONB NOT NULL,
    schema TEXT,
    temperature DOUBLE PRECISION,
    max_tokens INTEGER,
    streamed BOOLEAN NOT NULL DEFAULT false,
    output TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS replay_inputs_agent_idx ON replay_inputs (agent, id);
CREATE INDEX IF NOT EXISTS replay_inputs_chat_idx ON replay_inputs (chat_id);
CREATE INDEX IF NOT EXISTS replay_inputs_user_idx ON replay_inputs (user_id);

-- Keep each agent's newest p_keep rows; how many went. (The records API cannot rank.)
CREATE OR REPLACE FUNCTION replay_prune(p_keep INTEGER)
RETURNS INTEGER
LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM replay_inputs WHERE id IN (
            SELECT id FROM (
                SELECT id, row_number() OVER (PARTITION BY agent ORDER BY id DESC) AS n
                FROM replay_inputs
            ) ranked WHERE n > p_keep
        ) RETURNING 1
    )
    SELECT count(*)::INTEGER FROM gone
$$;
