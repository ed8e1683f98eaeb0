-- Trials (`/trial`, bot/services/trials.py): a share of one agent's users (sticky: a hash of user
-- and trial id) runs on a candidate model; the ledger marks each call with its trial and arm.
-- One running trial per agent (the partial unique index), shared by every replica.
CREATE TABLE IF NOT EXISTS trials (
    id BIGSERIAL PRIMARY KEY,
    agent TEXT NOT NULL,
    candidate TEXT NOT NULL,
    share DOUBLE PRECISION NOT NULL CHECK (share > 0 AND share < 100),
    min_calls INTEGER NOT NULL CHECK (min_calls > 0),
    started_by TEXT,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    status TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'stopped', 'promoted', 'guardrail')),
    ended_at TIMESTAMPTZ,
    ended_by TEXT,
    reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS trials_running_agent_idx ON trials (agent)
    WHERE status = 'running';

ALTER TABLE ledger_calls ADD COLUMN IF NOT EXISTS trial_id BIGINT;
ALTER TABLE ledger_calls ADD COLUMN IF NOT EXISTS trial_arm TEXT
    CHECK (trial_arm IS NULL OR trial_arm IN ('incumbent', 'candidate'));
CREATE INDEX IF NOT EXISTS ledger_calls_trial_idx ON ledger_calls (trial_id)
    WHERE trial_id IS NOT NULL;

-- A trial's figures per arm (grp = 'incumbent' / 'candidate'), the columns of ledger_stats.
CREATE OR REPLACE FUNCTION ledger_trial_stats(p_trial BIGINT)
RETURNS TABLE (
    agent TEXT,
    grp TEXT,
    calls BIGINT,
    turns BIGINT,
    errors BIGINT,
    fallbacks BIGINT,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    unpriced BIGINT,
    p50 DOUBLE PRECISION,
    p95 DOUBLE PRECISION,
    ttft_p50 DOUBLE PRECISION,
    up BIGINT,
    rated BIGINT
)
LANGUAGE sql STABLE SET jit = off AS $$
    WITH base AS (
        SELECT c.agent, c.trial_arm AS grp, c.turn_id, c.outcome, c.attempt, c.latency_ms,
            c.ttft_ms, c.prompt_tokens, c.completion_tokens, c.cost_usd, c.cost_source
        FROM ledger_calls c
        WHERE c.trial_id = p_trial AND c.trial_arm IS NOT NULL
    ),
    agg AS (
        SELECT b.agent, b.grp, count(*) AS calls, count(DISTINCT b.turn_id) AS turns,
            count(*) FILTER (WHERE b.outcome <> 'ok') AS errors,
            count(*) FILTER (WHERE b.attempt > 0) AS fallbacks,
            coalesce(sum(b.prompt_tokens), 0)::BIGINT AS prompt_tokens,
            coalesce(sum(b.completion_tokens), 0)::BIGINT AS completion_tokens,
            coalesce(sum(b.cost_usd), 0)::DOUBLE PRECISION AS cost_usd,
            count(*) FILTER (WHERE b.cost_source = 'unpriced' AND b.outcome = 'ok') AS unpriced,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY b.latency_ms)
                FILTER (WHERE b.outcome = 'ok') AS p50,
            percentile_disc(0.95) WITHIN GROUP (ORDER BY b.latency_ms)
                FILTER (WHERE b.outcome = 'ok') AS p95,
            percentile_disc(0.5) WITHIN GROUP (ORDER BY b.ttft_ms)
                FILTER (WHERE b.outcome = 'ok') AS ttft_p50
        FROM base b
        GROUP BY b.agent, b.grp
    ),
    served AS (
        SELECT DISTINCT b.agent, b.grp, b.turn_id FROM base b
        WHERE b.outcome = 'ok' AND b.turn_id IS NOT NULL
    ),
    rated AS (
        SELECT s.agent, s.grp, count(*) FILTER (WHERE r.up) AS up, count(*) AS n
        FROM served s JOIN ledger_ratings r ON r.turn_id = s.turn_id
        GROUP BY s.agent, s.grp
    )
    SELECT a.agent, a.grp, a.calls, a.turns, a.errors, a.fallbacks, a.prompt_tokens,
        a.completion_tokens, a.cost_usd, a.unpriced, a.p50, a.p95, a.ttft_p50,
        coalesce(r.up, 0), coalesce(r.n, 0)
    FROM agg a
    LEFT JOIN rated r ON r.agent = a.agent AND r.grp = a.grp
    ORDER BY a.agent, a.grp
$$;
