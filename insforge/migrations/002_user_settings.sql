-- One row of settings per user. `api_key_encrypted` holds the user's own provider key encrypted
-- with BOT_SECRET_KEY (bot/storage/crypto.py); the plain key is never stored.
CREATE TABLE IF NOT EXISTS user_settings (
    user_id BIGINT PRIMARY KEY,
    default_model TEXT,
    model_preference TEXT NOT NULL DEFAULT 'any'
        CHECK (model_preference IN ('any', 'local', 'online')),
    archives JSONB NOT NULL DEFAULT '[]'::jsonb,
    api_key_provider TEXT,
    api_key_encrypted TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
