-- Who may use the bot (ACCESS_MODE, `/users`): one row per user (id > 0) or group chat (id < 0)
-- an admin decided on or the bot answered. The environment's lists need no row.
CREATE TABLE IF NOT EXISTS access_list (
    subject_id BIGINT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('allowed', 'pending', 'blocked', 'refused')),
    label TEXT,
    notified BOOLEAN NOT NULL DEFAULT false,
    waiting_update TEXT,
    admin_messages TEXT,
    decided_by TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS access_list_updated_at ON access_list (updated_at DESC);
