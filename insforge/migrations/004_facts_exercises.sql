-- Durable facts about a user (exact duplicates are refused by the unique key), and the exercises
-- of /train with the user's answer and the trainer's grade.
CREATE TABLE IF NOT EXISTS user_facts (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL,
    fact TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT user_facts_user_id_fact_key UNIQUE (user_id, fact)
);

CREATE TABLE IF NOT EXISTS exercises (
    id BIGSERIAL PRIMARY KEY,
    chat_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    topic TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT,
    grade DOUBLE PRECISION CHECK (grade IS NULL OR (grade >= 0 AND grade <= 1)),
    feedback TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    graded_at TIMESTAMPTZ
);

CREATE INDEX IF NOT EXISTS exercises_chat_id_id_idx ON exercises (chat_id, id);
CREATE INDEX IF NOT EXISTS exercises_user_id_id_idx ON exercises (user_id, id);
