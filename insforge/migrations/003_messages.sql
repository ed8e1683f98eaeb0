-- Conversation history per chat, with the pipeline and trace that produced each message, and a
-- rolling summary per chat. Recent messages are read by (chat_id, id DESC): one index scan.
CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    user_id BIGINT,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    text TEXT NOT NULL,
    pipeline TEXT,
    trace_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS messages_chat_id_id_idx ON messages (chat_id, id);

CREATE TABLE IF NOT EXISTS chat_summaries (
    chat_id BIGINT PRIMARY KEY,
    summary TEXT NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
