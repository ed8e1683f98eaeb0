-- Post-completion tasks (`/task`, bot/tasks): an admin's background step after each reply of a
-- pipeline (NULL: every pipeline) for a sampled share of turns, and what each run answered
-- (a score between 0 and 1 with its reason, or a note) stored against the turn. `/forget`
-- deletes a chat's results, `/deleteme` a user's.
CREATE TABLE IF NOT EXISTS tasks (
    name TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    pipeline TEXT,
    sample DOUBLE PRECISION NOT NULL DEFAULT 100 CHECK (sample > 0 AND sample <= 100),
    kind TEXT NOT NULL DEFAULT 'note' CHECK (kind IN ('note', 'score')),
    instruction TEXT NOT NULL,
    created_by TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS task_results (
    id BIGSERIAL PRIMARY KEY,
    task TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('note', 'score')),
    at TIMESTAMPTZ NOT NULL DEFAULT now(),
    turn_id BIGINT,
    chat_id BIGINT,
    user_id BIGINT,
    pipeline TEXT NOT NULL,
    model TEXT NOT NULL,
    score DOUBLE PRECISION CHECK (score IS NULL OR (score >= 0 AND score <= 1)),
    text TEXT NOT NULL,
    trace_id TEXT
);
CREATE INDEX IF NOT EXISTS task_results_task_idx ON task_results (task, id);
CREATE INDEX IF NOT EXISTS task_results_turn_idx ON task_results (turn_id);
CREATE INDEX IF NOT EXISTS task_results_chat_idx ON task_results (chat_id);
CREATE INDEX IF NOT EXISTS task_results_user_idx ON task_results (user_id);
