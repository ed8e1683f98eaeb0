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

-- The score tasks' scores credited to every agent x model (x trial arm with p_trial) that
-- answered in the scored turn, like the 👍 (/stats, /trial, change reports). A task's own calls
-- are not credited.
CREATE OR REPLACE FUNCTION task_score_stats(
    p_since TIMESTAMPTZ,
    p_until TIMESTAMPTZ,
    p_agent TEXT DEFAULT NULL,
    p_v0 BIGINT DEFAULT NULL,
    p_v1 BIGINT DEFAULT NULL,
    p_trial BIGINT DEFAULT NULL
)
RETURNS TABLE (task TEXT, agent TEXT, grp TEXT, n BIGINT, mean DOUBLE PRECISION,
    mean_square DOUBLE PRECISION)
LANGUAGE sql STABLE AS $$
    WITH served AS (
        SELECT DISTINCT c.turn_id, c.agent,
            CASE WHEN p_trial IS NULL THEN c.model ELSE c.trial_arm END AS grp
        FROM ledger_calls c
        WHERE c.outcome = 'ok' AND c.turn_id IS NOT NULL AND c.at >= p_since AND c.at < p_until
            AND (p_agent IS NULL OR c.agent = p_agent)
            AND (p_v0 IS NULL OR c.config_version >= p_v0)
            AND (p_v1 IS NULL OR c.config_version < p_v1)
            AND (p_trial IS NULL OR c.trial_id = p_trial)
            AND c.agent NOT IN (SELECT t.name FROM tasks t)
    )
    SELECT r.task, s.agent, s.grp, count(*), avg(r.score), avg(r.score * r.score)
    FROM task_results r JOIN served s ON s.turn_id = r.turn_id
    WHERE r.score IS NOT NULL AND s.grp IS NOT NULL
    GROUP BY r.task, s.agent, s.grp
    ORDER BY s.agent, s.grp, r.task
$$;
