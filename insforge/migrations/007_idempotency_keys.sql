-- A key the bot makes for each message and each history line before sending it, so that sending
-- it again (after InsForge ran the insert but the answer was lost: a 5xx, a timeout) is an
-- `on_conflict=idempotency_key` upsert that ignores the duplicate instead of storing it twice.
-- A plain unique index (not a partial one) so that ON CONFLICT can use it; rows stored before
-- this migration keep a NULL key, and NULLs never conflict.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency_key_key ON messages (idempotency_key);

ALTER TABLE agent_model_config_history ADD COLUMN IF NOT EXISTS idempotency_key TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS agent_model_config_history_idempotency_key_key
    ON agent_model_config_history (idempotency_key);
